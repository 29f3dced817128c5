"""The run panel: model, prompt, and the search forms generated from the catalogue.

Every strategy, verifier and early-exit policy form is built from `catalogue()` entries
({name, help, params: [{name, type, default, range, help}]}): ranges are enforced by the
spin boxes, help texts become tooltips, so new catalogue entries appear with no code here.
One strategy and at most one verifier are chosen from a combo; early-exit policies combine,
so each gets a check box and its own form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

INT_LIMIT = 2_000_000_000


class ParamForm(QWidget):
    """Input widgets for one catalogue entry's params.

    Values out of a param's range are not clamped: the field keeps what was typed and a
    message under it says what is allowed (`errors()`; the window refuses to run). A param
    that `requires` a bool param of the entry is disabled while that one is off."""

    sig_changed = Signal()

    def __init__(self, params: list[dict[str, Any]]) -> None:
        super().__init__()
        self.params = params
        self.inputs: dict[str, QWidget] = {}
        self.labels: dict[str, QLabel] = {}
        self.messages: dict[str, QLabel] = {}
        self._extra: dict[str, str] = {}  # cross-field messages set by the panel
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        # a narrow panel puts the field under its label instead of scrolling sideways
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        for p in params:
            widget = self._input_for(p)
            widget.setToolTip(str(p.get("help", "")))
            label = QLabel(str(p.get("label") or p["name"]).replace("_", " "))
            label.setToolTip(str(p.get("help", "")))
            label.setBuddy(widget)
            message = QLabel()
            message.setObjectName("param_error")
            message.setWordWrap(True)
            message.setStyleSheet("color: #d03030; font-size: 8pt")
            message.setVisible(False)
            form.addRow(label, widget)
            form.addRow(message)
            self.inputs[p["name"]] = widget
            self.labels[p["name"]] = label
            self.messages[p["name"]] = message
            _on_change(widget, self._on_changed)
        self._on_changed()

    def _on_changed(self) -> None:
        by_name = {p["name"]: p for p in self.params}
        values = self.values()
        for name, p in by_name.items():
            needed = p.get("requires")
            if needed in self.inputs:
                on = bool(values.get(needed))
                self.inputs[name].setEnabled(on)
                self.labels[name].setEnabled(on)
                hint = f" (only with {str(needed).replace('_', ' ')} on)"
                self.inputs[name].setToolTip(str(p.get("help", "")) + ("" if on else hint))
        self._show_errors()
        self.sig_changed.emit()

    def set_extra_error(self, name: str, message: str | None) -> None:
        """A message about a combination of fields, shown under `name`."""
        if message:
            self._extra[name] = message
        else:
            self._extra.pop(name, None)
        self._show_errors()

    def errors(self) -> dict[str, str]:
        """Field name -> why its value is refused (out of range, or an impossible mix)."""
        out: dict[str, str] = {}
        values = self.values()
        for p in self.params:
            name = p["name"]
            if not self.inputs[name].isEnabled():
                continue
            lo, hi = [*(p.get("range") or []), None, None][:2]
            value = values.get(name)
            numeric = p.get("type") in ("int", "float") and isinstance(value, int | float)
            if numeric and ((lo is not None and value < lo) or (hi is not None and value > hi)):
                shown = str(p.get("label") or name).replace("_", " ")
                out[name] = f"{shown} must be in {_range_text(lo, hi)}; {value:g} is not"
        for name, message in self._extra.items():
            out.setdefault(name, message)
        return out

    def _show_errors(self) -> None:
        errors = self.errors()
        for name, label in self.messages.items():
            text = errors.get(name, "")
            label.setText(text)
            label.setVisible(bool(text))

    @staticmethod
    def _input_for(p: dict[str, Any]) -> QWidget:
        kind = p.get("type")
        rng = p.get("range") or [None, None]
        default = p.get("default")
        if kind == "choice" or (kind == "str" and rng and all(isinstance(r, str) for r in rng)):
            box = QComboBox()
            box.addItems([str(c) for c in rng])
            if default is not None:
                box.setCurrentText(str(default))
            return box
        if kind == "bool":
            check = QCheckBox()
            check.setChecked(bool(default))
            return check
        if kind == "int":
            spin = QSpinBox()  # wider than the param's range: out-of-range is refused, shown
            spin.setRange(-INT_LIMIT, INT_LIMIT)
            spin.setValue(int(default if default is not None else 0))
            return spin
        if kind == "float":
            dspin = QDoubleSpinBox()
            lo, hi = rng[0], rng[1]
            dspin.setDecimals(4)
            dspin.setRange(-1e9, 1e9)
            span = (float(hi) - float(lo)) if lo is not None and hi is not None else 1.0
            dspin.setSingleStep(max(1e-4, round(span / 100, 4)))
            dspin.setValue(float(default if default is not None else 0.0))
            return dspin
        line = QLineEdit()
        line.setText("" if default is None else _escape_newlines(str(default)))
        return line

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, w in self.inputs.items():
            if isinstance(w, QComboBox):
                out[name] = w.currentText()
            elif isinstance(w, QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                out[name] = w.value()
            elif isinstance(w, QLineEdit):
                out[name] = w.text().replace("\\n", "\n")
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            w = self.inputs.get(name)
            try:
                if isinstance(w, QComboBox):
                    w.setCurrentText(str(value))
                elif isinstance(w, QCheckBox):
                    w.setChecked(bool(value))
                elif isinstance(w, QSpinBox):
                    w.setValue(int(value))
                elif isinstance(w, QDoubleSpinBox):
                    w.setValue(float(value))
                elif isinstance(w, QLineEdit):
                    w.setText(_escape_newlines(str(value)))
            except (TypeError, ValueError):
                continue  # a stale saved value is ignored; the default stays


def _check_beams(form: ParamForm) -> None:
    """N candidates kept as N/M beams (or subtrees) need M <= N: refuse the mix, not run it
    as one beam."""
    values = form.values()
    if "n" not in values or "beam_width" not in values:
        return
    n, m = values["n"], values["beam_width"]
    form.set_extra_error(
        "beam_width",
        f"beam width {m} is larger than n {n}: N/M would keep no whole beam; lower it to "
        f"{n} or less, or raise n" if isinstance(n, int) and isinstance(m, int) and m > n
        else None,
    )


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g}…{hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def _on_change(widget: QWidget, slot: Any) -> None:
    """Connect the widget's value-changed signal, whatever kind of input it is."""
    if isinstance(widget, QComboBox):
        widget.currentTextChanged.connect(slot)
    elif isinstance(widget, QCheckBox):
        widget.toggled.connect(slot)
    elif isinstance(widget, QSpinBox | QDoubleSpinBox):
        widget.valueChanged.connect(slot)
    elif isinstance(widget, QLineEdit):
        widget.textChanged.connect(slot)


def _escape_newlines(text: str) -> str:
    """Text params are edited on one line: a newline shows as \\n (and reads back as one)."""
    return text.replace("\n", "\\n")


class EntryChooser(QGroupBox):
    """A combo of catalogue entries (optionally with "none") and the chosen entry's form."""

    def __init__(self, title: str, entries: list[dict[str, Any]], allow_none: bool) -> None:
        super().__init__(title)
        self.entries = entries
        self.combo = QComboBox()
        self.stack = QStackedWidget()
        self.forms: dict[str, ParamForm] = {}
        if allow_none:
            self.combo.addItem("none")
            self.stack.addWidget(QWidget())
        for entry in entries:
            self.combo.addItem(entry["name"])
            self.combo.setItemData(
                self.combo.count() - 1, entry.get("help", ""), Qt.ItemDataRole.ToolTipRole
            )
            form = ParamForm(entry.get("params", []))
            self.forms[entry["name"]] = form
            self.stack.addWidget(form)
        self.combo.currentIndexChanged.connect(self._on_changed)
        self.help = QLabel()
        self.help.setWordWrap(True)
        self.help.setStyleSheet("color: gray; font-size: 8pt")
        layout = QVBoxLayout(self)
        layout.addWidget(self.combo)
        layout.addWidget(self.help)
        layout.addWidget(self.stack)
        self._on_changed(self.combo.currentIndex())
        self.setEnabled(bool(entries))
        if not entries:
            self.setToolTip("the catalogue lists none yet")

    def _on_changed(self, index: int) -> None:
        self.stack.setCurrentIndex(max(0, index))
        name = self.combo.currentText()
        entry = next((e for e in self.entries if e["name"] == name), None)
        self.help.setText(entry.get("help", "") if entry else "")
        self.combo.setToolTip(self.help.text())

    def choice(self) -> tuple[str, dict[str, Any]] | None:
        name = self.combo.currentText()
        if name not in self.forms:
            return None
        return name, self.forms[name].values()

    def set_choice(self, name: str, values: dict[str, Any]) -> None:
        if name in self.forms:
            self.combo.setCurrentText(name)
            self.forms[name].set_values(values)


class EntryChecklist(QGroupBox):
    """Catalogue entries that combine (early-exit policies): a check box per entry, and the
    form of each checked entry under its box."""

    def __init__(self, title: str, entries: list[dict[str, Any]]) -> None:
        super().__init__(title)
        self.entries = entries
        self.checks: dict[str, QCheckBox] = {}
        self.forms: dict[str, ParamForm] = {}
        self._details: dict[str, QWidget] = {}
        layout = QVBoxLayout(self)
        for entry in entries:
            name = entry["name"]
            check = QCheckBox(name)
            check.setToolTip(entry.get("help", ""))
            details = QWidget()
            dlay = QVBoxLayout(details)
            dlay.setContentsMargins(18, 0, 0, 4)
            help_label = QLabel(entry.get("help", ""))
            help_label.setWordWrap(True)
            help_label.setStyleSheet("color: gray; font-size: 8pt")
            form = ParamForm(entry.get("params", []))
            dlay.addWidget(help_label)
            dlay.addWidget(form)
            details.setVisible(False)
            check.toggled.connect(details.setVisible)
            layout.addWidget(check)
            layout.addWidget(details)
            self.checks[name], self.forms[name], self._details[name] = check, form, details
        self.setEnabled(bool(entries))
        if not entries:
            self.setToolTip("the catalogue lists none yet")

    def chosen(self) -> list[tuple[str, dict[str, Any]]]:
        """The checked entries with their form values, in catalogue order."""
        return [
            (name, self.forms[name].values())
            for name, check in self.checks.items()
            if check.isChecked()
        ]

    def set_chosen(self, chosen: Iterable[Sequence[Any]]) -> None:
        """Check exactly the named entries (unknown names are skipped) and fill their forms."""
        wanted: dict[str, dict[str, Any]] = {}
        for item in chosen:
            name, values = item[0], item[1] if len(item) > 1 else {}
            if name in self.checks:
                wanted[name] = dict(values or {})
        for name, check in self.checks.items():
            check.setChecked(name in wanted)
            if name in wanted:
                self.forms[name].set_values(wanted[name])


# Sampling and step limits, with the ranges engine.sampling / engine.tree_engine enforce.
SEARCH_PARAMS: list[dict[str, Any]] = [
    {
        "name": "temperature",
        "label": "sampling temperature",  # apart from any strategy's own temperature
        "type": "float",
        "default": 0.7,
        "range": [0.0, 5.0],
        "help": "sampling temperature (0 = greedy)",
    },
    {
        "name": "top_p",
        "type": "float",
        "default": 0.95,
        "range": [0.01, 1.0],
        "help": "nucleus sampling mass",
    },
    {
        "name": "max_tokens",
        "type": "int",
        "default": 256,
        "range": [1, 8192],
        "help": "generated tokens per root-to-leaf path",
    },
    {
        "name": "step_tokens",
        "type": "int",
        "default": 96,
        "range": [1, 2048],
        "help": "token cap of one step",
    },
    {
        "name": "seed",
        "type": "int",
        "default": 0,
        "range": [0, 2**31 - 1],
        "help": "fixes the whole tree",
    },
]


THINKING_CHOICES = (("the template's default", None), ("on", True), ("off", False))


class RunPanel(QWidget):
    """Model row, prompt editor with examples, and the generated search forms (scrolling),
    with the run buttons fixed below them."""

    sig_open_model = Signal()
    sig_model_chosen = Signal(str)  # a path from the recent list ("" = default model)

    def __init__(
        self, catalogue: dict[str, list[dict[str, Any]]], examples: list[dict[str, str]]
    ) -> None:
        super().__init__()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        self.examples = examples

        model_box = QGroupBox("Model")
        mlay = QVBoxLayout(model_box)
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The default model or a recently used GGUF file")
        self.model_combo.activated.connect(self._on_model_activated)
        open_button = QToolButton(text="Open…")
        open_button.setToolTip("Open a GGUF model file (Ctrl+O); or drop a .gguf on the window")
        open_button.clicked.connect(self.sig_open_model)
        row.addWidget(self.model_combo, 1)
        row.addWidget(open_button)
        mlay.addLayout(row)
        self.model_info = QLabel("not loaded")
        self.model_info.setWordWrap(True)
        self.model_info.setStyleSheet("font-size: 8pt")
        mlay.addWidget(self.model_info)
        # the chat template's reasoning switch (Qwen3's enable_thinking): only for models
        # whose template has one (`set_thinking_available`)
        self.thinking = QComboBox()
        for label, value in THINKING_CHOICES:
            self.thinking.addItem(label, value)
        self.thinking.setToolTip(
            "The chat template's thinking switch (enable_thinking): let the model reason in "
            "<think>…</think> before it answers, or not; the template's default leaves it unset"
        )
        self.thinking_label = QLabel("Thinking")
        self.thinking_label.setBuddy(self.thinking)
        self.thinking_label.setToolTip(self.thinking.toolTip())
        self.thinking_row = QWidget()
        trow = QHBoxLayout(self.thinking_row)
        trow.setContentsMargins(0, 0, 0, 0)
        trow.addWidget(self.thinking_label)
        trow.addWidget(self.thinking, 1)
        self.thinking_row.setVisible(False)
        mlay.addWidget(self.thinking_row)
        layout.addWidget(model_box)

        prompt_box = QGroupBox("Problem")
        play = QVBoxLayout(prompt_box)
        self.example_combo = QComboBox()
        self.example_combo.addItem("Examples…")
        for ex in examples:
            self.example_combo.addItem(ex["title"])
        self.example_combo.activated.connect(self._on_example)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a problem, or pick an example")
        self.prompt.setMinimumHeight(90)
        self.gold = QLineEdit()
        self.gold.setPlaceholderText("optional: marks the answer ✓ or ✗")
        self.gold.setToolTip(
            "The reference answer (a number, or GSM8K '#### 42'): the result header marks "
            "the chosen answer right or wrong, and the reference verifier can use it"
        )
        self.gold_label = QLabel("Gold answer")
        self.gold_label.setBuddy(self.gold)
        self.gold_label.setToolTip(self.gold.toolTip())
        gold_row = QHBoxLayout()
        gold_row.addWidget(self.gold_label)
        gold_row.addWidget(self.gold, 1)
        play.addWidget(self.example_combo)
        play.addWidget(self.prompt)
        play.addLayout(gold_row)
        layout.addWidget(prompt_box)

        self.strategy = EntryChooser("Strategy", catalogue.get("strategies", []), allow_none=False)
        self.verifier = EntryChooser("Verifier", catalogue.get("verifiers", []), allow_none=True)
        self.exits = EntryChecklist("Early exit", catalogue.get("policies", []))
        for form in self.strategy.forms.values():
            form.sig_changed.connect(lambda f=form: _check_beams(f))
            _check_beams(form)
        search_box = QGroupBox("Sampling and budget")
        self.search_form = ParamForm(SEARCH_PARAMS)
        QVBoxLayout(search_box).addWidget(self.search_form)
        for w in (self.strategy, self.verifier, self.exits, search_box):
            layout.addWidget(w)

        layout.addStretch(1)
        self.buttons = QHBoxLayout()
        self.buttons.setContentsMargins(6, 4, 6, 6)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(scroll, 1)
        outer.addLayout(self.buttons)
        if examples:
            self.set_example(0)
        self._scroll, self._body = scroll, body
        self.setMinimumWidth(self.needed_width())

    def needed_width(self) -> int:
        """The narrowest width that shows the forms whole, with no sideways scrolling (the
        forms put a field under its label when the panel is narrow)."""
        scroll = self._scroll
        return (
            self._body.minimumSizeHint().width()
            + scroll.verticalScrollBar().sizeHint().width()
            + 2 * scroll.frameWidth()
        )

    # -- model row ------------------------------------------------------------------------
    def set_models(self, default_label: str, recent: list[str], current: str) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(default_label, "")
        for path in recent:
            self.model_combo.addItem(Path(path).name, path)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole
            )
        index = self.model_combo.findData(current)
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(False)

    def _on_model_activated(self, index: int) -> None:
        self.sig_model_chosen.emit(str(self.model_combo.itemData(index) or ""))

    def set_model_info(self, text: str) -> None:
        self.model_info.setText(text)

    def set_thinking_available(self, available: bool) -> None:
        """Show the thinking switch only for a model whose chat template has one."""
        self.thinking_row.setVisible(available)

    def thinking_choice(self) -> bool | None:
        """On, off, or None (the template's default, and always for a model without it)."""
        if not self.thinking_row.isVisibleTo(self):
            return None
        value = self.thinking.currentData()
        return None if value is None else bool(value)

    def add_action_button(self, button: QPushButton | QToolButton) -> None:
        self.buttons.addWidget(button)

    # -- prompt ---------------------------------------------------------------------------
    def _on_example(self, index: int) -> None:
        if index > 0:
            self.set_example(index - 1)

    def set_example(self, i: int) -> None:
        ex = self.examples[i]
        self.prompt.setPlainText(ex["question"])
        self.gold.setText(ex.get("gold", ""))

    def set_problems(self, problems: list[dict[str, str]]) -> None:
        """Replace the example list with a loaded problem set."""
        self.examples = problems
        self.example_combo.clear()
        self.example_combo.addItem(f"Problem set ({len(problems)})…")
        for ex in problems:
            self.example_combo.addItem(ex["title"])
        if problems:
            self.set_example(0)
            self.example_combo.setCurrentIndex(1)

    # -- the request ----------------------------------------------------------------------
    def request(self) -> dict[str, Any]:
        """Everything the user chose, as plain values (the shell builds the RunSpec)."""
        strategy = self.strategy.choice()
        return {
            "prompt": self.prompt.toPlainText().strip(),
            "gold": self.gold.text().strip() or None,
            "strategy": strategy[0] if strategy else "",
            "strategy_options": strategy[1] if strategy else {},
            "verifier": self.verifier.choice(),
            "exits": self.exits.chosen(),
            "search": self.search_form.values(),
            "thinking": self.thinking_choice(),
        }

    def form_errors(self) -> list[str]:
        """Why the forms as filled cannot run: values out of range in the chosen entries'
        forms and impossible combinations (each is also shown under its field)."""
        forms: list[ParamForm] = [self.search_form]
        for chooser in (self.strategy, self.verifier):
            name = chooser.combo.currentText()
            if name in chooser.forms:
                forms.append(chooser.forms[name])
        forms += [self.exits.forms[name] for name, _ in self.exits.chosen()]
        return [message for form in forms for message in form.errors().values()]

    def restore(self, saved: dict[str, Any]) -> None:
        """Apply a request saved by `request()` (last settings); unknown names are skipped."""
        if saved.get("strategy"):
            self.strategy.set_choice(saved["strategy"], saved.get("strategy_options") or {})
        verifier = saved.get("verifier")
        if verifier:
            self.verifier.set_choice(verifier[0], verifier[1])
        exits = saved.get("exits")
        if exits is None:  # saved before exit policies combined: one "policy" or none
            exits = [saved["policy"]] if saved.get("policy") else []
        self.exits.set_chosen(exits)
        self.search_form.set_values(saved.get("search") or {})
        index = self.thinking.findData(saved.get("thinking"))
        self.thinking.setCurrentIndex(max(0, index))
