"""The session store: every search recorded as it happens, for replay and export, in an
SQLite file (the embedded default) or a PostgreSQL database (many writers).

store = open_store("sessions.db")   # or "postgresql+psycopg://user@host/db"; None: default
recorder = store.start_recording(detail="tokens")   # or "steps"
bus.subscribe(recorder)         # ... run the search ...
recorder.close()
tree = Replay(store.load_events(recorder.session_id)).tree_at(-1)
"""

from engine.store.connection import StoreError, StoreLocation, default_db_path, parse_location
from engine.store.queries import SessionSummary
from engine.store.recorder import SessionRecorder
from engine.store.schema import DETAILS, SCHEMA_VERSION
from engine.store.store import SessionStore, open_store

__all__ = [
    "DETAILS",
    "SCHEMA_VERSION",
    "SessionRecorder",
    "SessionStore",
    "SessionSummary",
    "StoreError",
    "StoreLocation",
    "default_db_path",
    "open_store",
    "parse_location",
]
