"""File → Get a model…: download a GGUF from the Hugging Face Hub, then use it.

The download is `engine.model_hub.pull_model` (huggingface_hub's cache, resumption of a cut
connection, token and endpoint handling, plus the sha256 check) on a worker thread; the
dialog shows its progress and can cancel it. A finished download becomes the window's model
and joins its recent models.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.errors import Cancelled, ThoughtscopeError
from engine.model_hub import CURATED, PulledModel, check_repo_file, pull_model

PROGRESS_STEPS = 1000  # QProgressBar holds a 32-bit int: show permille, not bytes


class _DownloadSignals(QObject):
    """Emitted from the download thread; Qt queues them to the dialog's (GUI) thread."""

    sig_progress = Signal(object, object)  # bytes done, total bytes or None
    sig_finished = Signal(object)  # PulledModel
    sig_failed = Signal(str)
    sig_cancelled = Signal()


class ModelDownloadDialog(QDialog):
    """A curated list of small GGUFs, free entry of any repo and file, progress and cancel.

    `endpoint` and `cache_dir` default to huggingface_hub's (`HF_ENDPOINT`, `HF_HOME`)."""

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get a model from the Hugging Face Hub")
        self.resize(760, 460)
        self.endpoint = endpoint
        self.cache_dir = cache_dir
        self.pulled: PulledModel | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._signals = _DownloadSignals(self)
        self._signals.sig_progress.connect(self._on_progress)
        self._signals.sig_finished.connect(self._on_finished)
        self._signals.sig_failed.connect(self._on_failed)
        self._signals.sig_cancelled.connect(self._on_cancelled)

        self.table = QTableWidget(len(CURATED), 5)
        self.table.setHorizontalHeaderLabels(["kind", "repository", "file", "size", "licence"])
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for row, model in enumerate(CURATED):
            cells = (model.kind, model.repo, model.filename, f"~{model.size_mb} MB", model.licence)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(model.note)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.table.itemSelectionChanged.connect(self._on_row_chosen)
        note = QLabel(
            "Small instruct and reasoning models that run on a laptop CPU. This list was written "
            "without access to the Hub: names, sizes and licences are not verified online. Any "
            "other repository and GGUF file can be typed below."
        )
        note.setWordWrap(True)

        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("owner/name, e.g. Qwen/Qwen3-0.6B-GGUF")
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("a .gguf file in it, e.g. Qwen3-0.6B-Q8_0.gguf")
        form = QFormLayout()
        form.addRow("&Repository:", self.repo_edit)
        form.addRow("&File:", self.file_edit)

        self.progress = QProgressBar()
        self.progress.setRange(0, PROGRESS_STEPS)
        self.progress.setValue(0)
        self.status = QLabel("Private or gated models use your Hugging Face login (HF_TOKEN).")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.buttons = QDialogButtonBox()
        self.download_button = QPushButton("&Download")
        self.download_button.setDefault(True)
        self.buttons.addButton(self.download_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(self.cancel)

        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.table, 1)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

    # -- state ----------------------------------------------------------------------------
    @property
    def downloading(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _on_row_chosen(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            model = CURATED[rows[0].row()]
            self.repo_edit.setText(model.repo)
            self.file_edit.setText(model.filename)

    def start_download(self) -> None:
        """Check the entry, then pull it on a worker thread."""
        if self.downloading:
            return
        repo, filename = self.repo_edit.text().strip(), self.file_edit.text().strip()
        try:
            check_repo_file(repo, filename)
        except ThoughtscopeError as exc:
            self.status.setText(str(exc))
            return
        self._cancel.clear()
        self.progress.setValue(0)
        self.status.setText(f"Downloading {repo}/{filename}…")
        self._set_busy(True)
        self._thread = threading.Thread(
            target=self._download, args=(repo, filename), name="model-download", daemon=True
        )
        self._thread.start()

    def _download(self, repo: str, filename: str) -> None:
        signals = self._signals
        try:
            pulled = pull_model(
                repo,
                filename,
                endpoint=self.endpoint,
                cache_dir=self.cache_dir,
                progress=signals.sig_progress.emit,
                cancelled=self._cancel.is_set,
            )
        except Cancelled:
            signals.sig_cancelled.emit()
        except ThoughtscopeError as exc:
            signals.sig_failed.emit(str(exc))
        else:
            signals.sig_finished.emit(pulled)

    def cancel(self) -> None:
        """Stop a download in flight (its partial file is deleted); otherwise close."""
        if self.downloading:
            self._cancel.set()
            self.status.setText("Cancelling…")
        else:
            self.reject()

    def _set_busy(self, busy: bool) -> None:
        self.download_button.setEnabled(not busy)
        self.table.setEnabled(not busy)
        self.repo_edit.setEnabled(not busy)
        self.file_edit.setEnabled(not busy)

    # -- worker results ---------------------------------------------------------------------
    def _on_progress(self, done: int, total: int | None) -> None:
        if total:
            self.progress.setValue(min(PROGRESS_STEPS, round(PROGRESS_STEPS * done / total)))
            self.status.setText(f"Downloading… {done / 1e6:,.0f} of {total / 1e6:,.0f} MB")
        else:
            self.progress.setRange(0, 0)  # unknown size: a busy bar

    def _on_finished(self, pulled: PulledModel) -> None:
        self._join()
        self.pulled = pulled
        self.progress.setRange(0, PROGRESS_STEPS)
        self.progress.setValue(PROGRESS_STEPS)
        self.status.setText(f"Downloaded and checked (sha256 {pulled.sha256[:12]}…): {pulled.path}")
        self.accept()

    def _on_failed(self, message: str) -> None:
        self._join()
        self._set_busy(False)
        self.progress.setRange(0, PROGRESS_STEPS)
        self.status.setText(message)

    def _on_cancelled(self) -> None:
        self._join()
        self._set_busy(False)
        self.progress.setRange(0, PROGRESS_STEPS)
        self.progress.setValue(0)
        self.status.setText("Cancelled. Nothing was kept: the next download starts over.")

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def reject(self) -> None:
        """Closing the dialog cancels a download in flight and waits for it to stop."""
        if self.downloading:
            self._cancel.set()
            self._join()
        super().reject()


def open_model_download(window: Any, **kwargs: Any) -> ModelDownloadDialog:
    """Show the dialog over `window` (non-blocking); a finished download becomes the
    window's model (`window.set_model`: checked, loaded, added to the recent models)."""
    dialog = ModelDownloadDialog(window, **kwargs)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)

    def use_it() -> None:
        if dialog.pulled is not None:
            window.set_model(dialog.pulled.path)

    dialog.accepted.connect(use_it)
    dialog.open()
    return dialog
