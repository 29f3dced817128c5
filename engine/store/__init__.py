"""The session store: every search recorded in SQLite as it happens, for replay and export.

store = SessionStore(default_db_path())
recorder = store.start_recording()
bus.subscribe(recorder)         # ... run the search ...
recorder.close()
tree = Replay(store.load_events(recorder.session_id)).tree_at(-1)
"""

from engine.store.connection import StoreError, default_db_path
from engine.store.queries import SessionSummary
from engine.store.recorder import SessionRecorder
from engine.store.schema import SCHEMA_VERSION
from engine.store.store import SessionStore

__all__ = [
    "SCHEMA_VERSION",
    "SessionRecorder",
    "SessionStore",
    "SessionSummary",
    "StoreError",
    "default_db_path",
]
