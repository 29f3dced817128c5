"""Models: open, download or drop a GGUF file, recent models, loading on the worker, and the
weight kernels and weight format (both shared with the CLI) the model runs on."""

from __future__ import annotations

import functools
import html
import logging
from pathlib import Path
from typing import Any

from PySide6.QtGui import (
    QActionGroup,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QMenu,
)

from app.model_download_dialog import open_model_download
from app.window.parts import WindowParts
from engine import weight_format
from engine.chat_template import has_thinking_switch
from engine.errors import ModelFileError, ThoughtscopeError
from engine.gguf_metadata import chat_template_source
from engine.kernel_probe import SETTING_MODE, requested_mode
from engine.model_files import check_gguf, default_model_path
from engine.session import seq_slots_for
from engine.settings import save_setting
from engine.strategies import get_strategy

log = logging.getLogger(__name__)


MAX_RECENT = 8


KERNEL_MODES = (
    (
        "auto",
        "&Automatic (probed on this CPU)",
        "Use llama.cpp's repacked/AMX kernels only where a probe proved them right",
    ),
    ("on", "&Repacked / AMX kernels", "Always use llama.cpp's extra buffer types"),
    ("off", "&Plain kernels", "Never use llama.cpp's extra buffer types"),
)


WEIGHT_MODES = (
    (
        "auto",
        "&Automatic (measured on this CPU)",
        "Measure the file as shipped against its Q8_0 and F16 upcasts once on this machine and "
        "run the fastest",
    ),
    ("original", "&Original file", "Run the GGUF file as it is"),
    ("q8_0", "&Q8_0 upcast", "Run a Q8_0 copy of a quantised file (written once to the cache folder)"),
    ("f16", "&F16 upcast", "Run an F16 copy of a quantised file (written once to the cache folder)"),
)


def _weights_line(info: dict[str, Any] | None, detail: bool = True) -> str:
    """The weight format a model runs in (with `detail`: where the choice came from)."""
    weights = (info or {}).get("weights")
    if not weights:
        return "not loaded"
    if not detail:
        return html.escape(weights["label"])
    return f"{html.escape(weights['label'])} ({html.escape(weights['source'])}: {html.escape(weights['note'])})"


def _kernel_line(info: dict[str, Any] | None, detail: bool = True) -> str:
    """The weight-kernel path a model runs on (with `detail`: where the choice came from)."""
    path = (info or {}).get("kernel_path")
    if not path:
        return "not loaded"
    if not detail:
        return html.escape(path["label"])
    return f"{html.escape(path['label'])} ({html.escape(path['source'])}: {html.escape(path['reason'])})"


def _quantisation(name: str) -> str:
    for part in reversed(Path(name).stem.replace("-", ".").split(".")):
        if part.upper().startswith(("Q", "F16", "F32", "BF16", "IQ")) and any(
            c.isdigit() for c in part
        ):
            return part.upper()
    return ""


def thinking_switch(path: Path) -> bool:
    """Whether the model's chat template has a thinking switch (read from the file's
    metadata once per file version; a file that cannot be read has none)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return _thinking_switch(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _thinking_switch(path: str, _mtime_ns: int, _size: int) -> bool:
    try:
        return has_thinking_switch(chat_template_source(path))
    except ModelFileError as exc:
        log.info("no thinking switch for %s: %s", path, exc)
        return False


class ModelActions(WindowParts):
    """Choosing, downloading and loading GGUF models, and the weight kernels and format they
    run on."""

    weight_actions: QActionGroup

    def _build_model_actions(self) -> None:
        self.act_open_model = self._action(
            "&Open GGUF model…", self.open_model_dialog, "Ctrl+O", "Open a GGUF model file"
        )
        self.act_get_model = self._action(
            "&Get a model…",
            lambda: open_model_download(self),
            None,
            "Download a GGUF model from the Hugging Face Hub",
        )
        self.kernel_actions = QActionGroup(self)
        for mode, label, tip in KERNEL_MODES:
            act = self._action(label, lambda _on, m=mode: self.set_kernel_mode(m), None, tip)
            act.setCheckable(True)
            act.setData(mode)
            self.kernel_actions.addAction(act)
        self.weight_actions = QActionGroup(self)
        for mode, label, tip in WEIGHT_MODES:
            act = self._action(label, lambda _on, m=mode: self.set_weights_mode(m), None, tip)
            act.setCheckable(True)
            act.setData(mode)
            self.weight_actions.addAction(act)
        self.controller.sig_weights_progress.connect(self._on_weights_progress)

    def _add_weight_menus(self, menu: QMenu) -> None:
        """The Run menu's submenus on how the weights run (kernels, format)."""
        kernels = menu.addMenu("Weight &kernels")
        for act in self.kernel_actions.actions():
            kernels.addAction(act)
        self._check_kernel_mode()
        formats = menu.addMenu("Weight &format")
        formats.setObjectName("weight_format_menu")
        for act in self.weight_actions.actions():
            formats.addAction(act)
        self._check_weights_mode()

    def recent_models(self) -> list[str]:
        value = self.settings.value("recent_models") or []
        items = [value] if isinstance(value, str) else list(value)
        return [str(v) for v in items if v][:MAX_RECENT]

    def _remember_model(self, path: Path) -> None:
        items = [str(path)] + [p for p in self.recent_models() if p != str(path)]
        self.settings.setValue("recent_models", items[:MAX_RECENT])
        self._update_models()

    def _update_models(self) -> None:
        recent = self.recent_models()
        self.run_panel.set_models(
            "SmolLM2-135M (default)", recent, str(self.model_path) if self.model_path else ""
        )
        self.recent_menu.clear()
        for recent_path in recent:
            act = self.recent_menu.addAction(recent_path)
            act.triggered.connect(lambda _=False, p=recent_path: self.set_model(p))
        self.recent_menu.setEnabled(bool(recent))
        path = self.current_model_path(quiet=True)
        if path is not None and path.is_file():
            size = path.stat().st_size / 1e6
            quant = _quantisation(path.name)
            self.run_panel.set_model_info(
                f"{path.name}<br>{size:.0f} MB{' · ' + quant if quant else ''} · not loaded yet"
            )
            self.status_model.setText(path.stem)
        self.run_panel.set_thinking_available(path is not None and thinking_switch(path))

    def current_model_path(self, quiet: bool = False) -> Path | None:
        if self.model_path is not None:
            return self.model_path
        try:
            return default_model_path()
        except ModelFileError as exc:
            if not quiet:
                self.show_error(str(exc))
            return None

    def set_model(self, path: str | Path) -> bool:
        """Choose a model file: checked at once (bad files get a dialog), loaded on the
        worker in the background."""
        p = Path(path).expanduser()
        try:
            check_gguf(p)
        except ModelFileError as exc:
            self.show_error(str(exc))
            return False
        self.model_path = p
        self._remember_model(p)
        if not self.controller.busy:
            self.load_model_for_form(p)
        return True

    def load_model_for_form(self, path: str | Path) -> None:
        """Load `path` on the worker as the run the form would start needs it (sequence slots,
        and the weight format measured fastest at its decode width), so that the first run
        does not load it again; an unfinished form loads it for a search."""
        req = self.run_panel.request()
        try:
            strategy = get_strategy(req["strategy"])(**req["strategy_options"])
            slots, rows = seq_slots_for(strategy.parallel_chains()), strategy.decode_rows()
        except (ThoughtscopeError, TypeError, ValueError):
            slots, rows = 0, None
        self.controller.load_model(path, slots, rows)

    def _on_model_chosen(self, path: str) -> None:
        if path:
            self.set_model(path)
        else:
            self.model_path = None
            self._update_models()

    def open_model_dialog(self) -> None:
        start = str(self.model_path.parent) if self.model_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(
            self, "Open GGUF model", start, "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.set_model(path)

    def _on_model_loading(self, path: str) -> None:
        self.progress.setVisible(True)
        self.statusBar().showMessage(f"Loading {Path(path).name}…")

    def _on_weights_progress(self, fraction: float, message: str) -> None:
        """Converting and measuring weight formats (the first load of a model on a machine)."""
        self.progress.set_fraction(fraction)
        self.progress.setVisible(True)
        self.statusBar().showMessage(f"Weight format: {message}…" if fraction < 1 else f"Weight format: {message}")

    def _on_model_loaded(self, info: dict[str, Any]) -> None:
        self.progress.set_busy()  # back to the busy indicator
        if not self.controller.busy:
            self.progress.setVisible(False)
        weights = info.get("weights") or {}
        if weights.get("source") == "calibrated":  # first use: show the choice and its gain
            self.statusBar().showMessage(
                f"Loaded {info['name']} · weights {weights['label']}: {weights['note']}", 15000
            )
        else:
            self.statusBar().showMessage(f"Loaded {info['name']}", 3000)
        quant = _quantisation(info["name"])
        self.run_panel.set_model_info(
            f"<b>{info['name']}</b><br>{info['description']}<br>{info['size'] / 1e6:.0f} MB"
            f"{' · ' + quant if quant else ''} · context {info['n_ctx']} (trained {info['n_ctx_train']})"
            f"<br>kernels: {_kernel_line(info, detail=False)}"
            f"<br>weights: {_weights_line(info, detail=False)}"
        )
        self.status_model.setText(Path(info["name"]).stem)

    def _on_vocabulary(self, pieces: list[str]) -> None:
        self.trace.set_vocabulary(pieces)

    def _check_kernel_mode(self) -> None:
        try:
            mode = requested_mode()
        except ThoughtscopeError:
            mode = "auto"
        for act in self.kernel_actions.actions():
            act.setChecked(act.data() == mode)

    def _check_weights_mode(self) -> None:
        try:
            mode = weight_format.requested_mode()
        except ThoughtscopeError:
            mode = "auto"
        for act in self.weight_actions.actions():
            act.setChecked(act.data() == mode)

    def set_weights_mode(self, mode: str) -> None:
        """Remember the weight-format choice (shared with the CLI) and reload the model."""
        save_setting(weight_format.SETTING_MODE, mode)
        self._check_weights_mode()
        path = self.current_model_path(quiet=True)
        if self.controller.model_info is not None and path is not None and not self.controller.busy:
            self.load_model_for_form(path)  # else the next run loads it the new way

    def set_kernel_mode(self, mode: str) -> None:
        """Remember the weight-kernel choice (shared with the CLI) and reload the model."""
        save_setting(SETTING_MODE, mode)
        self._check_kernel_mode()
        path = self.current_model_path(quiet=True)
        if self.controller.model_info is not None and path is not None and not self.controller.busy:
            self.load_model_for_form(path)  # else the next run loads it the new way
