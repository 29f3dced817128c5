"""The thinking switch in the run form: shown only for a model whose chat template has one
(Qwen3's enable_thinking), and what it is set to reaches the recorded prompt.

A GGUF copy of the default model carries Qwen3's template (tests/fixtures/gguf_copies.py);
the metadata reader behind the switch is checked against llama.cpp's own reading.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import llama_cpp as llama
import pytest
from fixtures.chat_templates import TEMPLATES
from fixtures.gguf_copies import write_copies
from PySide6.QtWidgets import QApplication

from engine.errors import ModelFileError
from engine.events import SessionStarted
from engine.gguf_metadata import chat_template_source, read_metadata_string
from engine.model_hub import init_backend
from tests.test_gui import make_window, wait_until


@pytest.fixture(scope="module")
def qwen3_copy(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    path = tmp_path_factory.mktemp("thinking") / "qwen3-template.gguf"
    write_copies(model_path, {path: {"tokenizer.chat_template": TEMPLATES["qwen3"]}})
    return path


def _llama_cpp_template(path: Path) -> str | None:
    """llama.cpp's reading of the same metadata (a vocabulary-only load)."""
    init_backend()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(path).encode(), params)
    assert model
    try:
        raw = llama.llama_model_chat_template(model, None)
        buf = ctypes.create_string_buffer(64)
        llama.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf))
        assert read_metadata_string(path, "general.architecture") == buf.value.decode()
        return raw.decode("utf-8") if raw else None
    finally:
        llama.llama_model_free(model)


def test_the_metadata_reader_agrees_with_llama_cpp(
    model_path: Path, qwen3_copy: Path, tmp_path: Path
) -> None:
    for path in (model_path, qwen3_copy):
        assert chat_template_source(path) == _llama_cpp_template(path)
    assert chat_template_source(qwen3_copy) == TEMPLATES["qwen3"]
    assert read_metadata_string(model_path, "no.such.key") is None
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 8 + b"\xff" * 8)  # absurd kv count
    with pytest.raises(ModelFileError):
        chat_template_source(bad)
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError):
        chat_template_source(bad)


def test_the_switch_shows_for_qwen3_only_and_reaches_the_prompt(
    qwen3_copy: Path, qapp: QApplication, tmp_path: Path
) -> None:
    window = make_window(tmp_path)
    panel = window.run_panel
    try:
        assert not panel.thinking_row.isVisible()  # the default model has no switch
        assert window.build_spec().thinking is None

        assert window.set_model(qwen3_copy)
        qapp.processEvents()
        assert panel.thinking_row.isVisible()
        assert panel.thinking_label.text() == "Thinking"
        panel.thinking.setCurrentIndex(panel.thinking.findData(False))
        assert window.build_spec().thinking is False

        panel.strategy.set_choice("best_of_n", {"n": 1})
        panel.search_form.set_values({"max_tokens": 4, "step_tokens": 4})
        assert window.start_run()
        wait_until(qapp, lambda: not window.controller.busy and window.tree.finished is not None, 120)
        started = next(e for e in window.events if isinstance(e, SessionStarted))
        # Qwen3's template with enable_thinking false closes an empty think block
        assert started.prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert window.last_error is None

        saved: dict[str, Any] = panel.request()
        assert saved["thinking"] is False
        window._on_model_chosen("")  # back to the default model
        qapp.processEvents()
        assert not panel.thinking_row.isVisible()
        assert panel.request()["thinking"] is None  # hidden: never sent
        panel.restore(saved)
        assert panel.thinking.currentData() is False
    finally:
        window.close()
