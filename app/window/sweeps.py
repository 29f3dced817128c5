"""Sweeps: View > Sweeps… (Ctrl+Shift+S) shows the Sweeps window (app/sweeps_view.py) on the
window's session database and model; a run clicked there opens in this window's tree view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.window.parts import WindowParts

if TYPE_CHECKING:
    from app.sweeps_view import SweepsView


class SweepActions(WindowParts):
    """The Sweeps window, made on first use and kept (a running sweep goes on while hidden)."""

    sweeps_view: SweepsView | None = None

    def _build_sweep_actions(self) -> None:
        self.act_sweeps = self._action(
            "S&weeps…", self.show_sweeps, "Ctrl+Shift+S",
            "Run a problem set over strategies and budgets; plot accuracy against compute "
            "(Ctrl+Shift+S)",
        )

    def show_sweeps(self) -> SweepsView:
        """Show (and on first use make) the Sweeps window."""
        if self.sweeps_view is None:
            from app.sweeps_view import SweepsView

            view = SweepsView(
                self.store, model_path=lambda: self.current_model_path(quiet=True),
                parent=self,
            )
            view.sig_open_session.connect(self._open_sweep_session)
            view.sig_sweep_finished.connect(
                lambda _sweep_id: self.refresh_sessions())  # type: ignore[attr-defined]
            self.sweeps_view = view
        else:
            self.sweeps_view.refresh()
        self.sweeps_view.chart.set_theme(self.theme)
        self.sweeps_view.show()
        self.sweeps_view.raise_()
        self.sweeps_view.activateWindow()
        return self.sweeps_view

    def _open_sweep_session(self, session_id: int) -> None:
        """A run clicked in the Sweeps window: its session in this window's tree view."""
        if self.open_session(session_id):  # type: ignore[attr-defined]
            self.raise_()
            self.activateWindow()
            self.sessions.select_id(session_id)

    def shutdown_sweeps(self) -> None:
        """Cancel a running sweep and wait for it (the window is closing)."""
        if self.sweeps_view is not None:
            self.sweeps_view.shutdown()
