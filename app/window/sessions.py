"""Sessions: the store (a SQLite file or a database URL), the Sessions panel's open, rename,
delete and compare, and the recorded id of the live run."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import (
    QMessageBox,
)

from app.window.parts import WindowParts
from engine.errors import ThoughtscopeError
from engine.replay import Replay, clone_tree
from engine.store import SessionStore
from engine.tree import TreeModel
from widgets.result_header import outcome_of, status_message
from widgets.session_compare import CompareDialog

log = logging.getLogger(__name__)


class SessionActions(WindowParts):
    """The session database: list, open (replay), rename, delete and compare sessions."""

    def _open_store(self) -> None:
        """Check the session database (a file or a database URL) once; each later use opens
        it briefly (`_store()`)."""
        try:
            from engine.store import open_store

            with open_store(self.db_path) as store:
                self.db_path = store.path or self.db_path  # the file, or the URL as given
                self.db_where, self.db_label = store.where, store.location.short
            self.store = self.db_path
        except (ThoughtscopeError, OSError) as exc:
            self.store = None
            log.warning("session store unavailable: %s", exc)

    def _store(self) -> SessionStore:
        assert self.db_path is not None
        return SessionStore(self.db_path)

    def refresh_sessions(self) -> None:
        if self.store is None:
            self.sessions.setEnabled(False)
            self.status_db.setText("no database")
            return
        try:
            with self._store() as store:
                summaries = store.list_sessions()
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return
        self.sessions.set_sessions(summaries, self.db_where)
        self.status_db.setText(self.db_label)
        self.status_db.setToolTip(self.db_where)

    def open_session(self, session_id: int) -> bool:
        """Open a stored session: replay its events, show the final state, enable scrubbing."""
        if self.store is None:
            return False
        if self.controller.busy:
            self.show_error("the engine is busy: wait for the search to finish or stop it first")
            return False
        try:
            with self._store() as store:
                events = store.load_events(session_id)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return False
        self._reset_session(live=False)
        self.session_id = session_id
        self.events = events
        self.replay = Replay(events)  # kept: scrubbing jumps between its keyframes
        self.tree = clone_tree(self.replay.final())  # the head, independent of the scrubber
        self.shown_tree = self.tree
        self.canvas.set_tree(self.tree)
        self.timeline.set_length(len(events))
        if self.tree.answer_node is not None:
            self.canvas.select(self.tree.answer_node)
            self._user_selected = True
        self._mark_changed()
        self._on_redraw(force=True)
        self.setWindowTitle(f"Thoughtscope — session {session_id}")
        # the outcome of the session shown, not of the last run (a session never finished
        # was cut short: the app closed or crashed while it ran)
        self.statusBar().showMessage(
            f"Session {session_id} · {status_message(outcome_of(self.tree), 'interrupted')}"
        )
        self._update_actions()
        return True

    def _on_session_recorded(self, session_id: int) -> None:
        self.session_id = session_id
        self.refresh_sessions()
        self.sessions.select_id(session_id)
        self._update_actions()

    def _on_rename_session(self, session_id: int, name: str) -> None:
        try:
            with self._store() as store:
                store.rename(session_id, name)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
        self.refresh_sessions()

    def _on_delete_session(self, session_id: int) -> None:
        if session_id == self.controller.recording_session_id:
            self.show_error(
                f"session {session_id} is the live one (branches and forks still go into it): "
                "start another run first"
            )
            return
        answer = QMessageBox.question(
            self, "Delete session", f"Delete session {session_id} and everything recorded with it?"
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            with self._store() as store:
                store.delete(session_id)
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
        self.refresh_sessions()

    def _on_compare(self, left: int, right: int) -> None:
        try:
            with self._store() as store:
                sides = []
                for sid in (left, right):
                    events = store.load_events(sid)
                    name = store.get(sid).name
                    sides.append((f"{sid}: {name}", TreeModel.from_events(events), events))
        except ThoughtscopeError as exc:
            self.show_error(str(exc))
            return
        self.compare_dialog = CompareDialog(sides[0], sides[1], self.theme, self)
        self.compare_dialog.show()
