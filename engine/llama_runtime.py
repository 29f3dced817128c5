"""LlamaRuntime: the one owner of a llama.cpp model, context and batch.

Low-level API only: one unified KV cache shared by up to `n_seq_max` sequences, forks by
`llama_memory_seq_cp` (cells are shared, nothing is re-decoded), one `llama_decode` for every
live branch, logits read per batch row with `llama_get_logits_ith`, and `llama_memory_seq_rm`
to release a sequence. A run may switch to one KV stream per sequence (`KVLayout`), where the
runtime keeps each decode's sequences in consecutive streams (engine/kv_streams.py). Every
limit that makes llama.cpp abort the process (batch larger than `n_batch`, sequence id out of
range, position past the context) is checked here first.

Not thread-safe: create, use and close it on one thread.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import llama_cpp as llama
import numpy as np
import numpy.typing as npt

from engine.chat_template import ChatPrompt, build_chat_prompt
from engine.errors import Cancelled, ModelFileError, ParameterError
from engine.kernel_probe import KernelPath, requested_mode, resolve_kernel_path
from engine.kv_streams import StreamPlacement
from engine.llama_backend import init_backend
from engine.model_files import ModelFileInfo, check_gguf, model_file_info
from engine.run_control import RunControl
from engine.weight_format import WeightsProgress, WorkingWeights, resolve_working_weights
from engine.weight_format import requested_mode as requested_weights


def _byte_flag_callback() -> Any:
    """llama.cpp's abort callback as C code: libc's `strlen` over a two-byte buffer
    [flag, NUL] returns 0 until the flag byte is set and 1 after, which is the callback's
    `bool (*)(void * data)` contract (the C ABIs return a bool in the low byte of the return
    register). llama.cpp calls the callback after every graph node, ~500 times a decode; a
    Python callback there took the GIL each time, contending with the window's thread."""
    libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
    address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
    assert address is not None
    return llama.ggml_abort_callback(address)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """How the context is sized. `n_ctx=0` means min(8192, the model's training context)."""

    n_ctx: int = 0
    n_seq_max: int = 64
    n_batch: int = 512
    n_threads: int = 0  # 0 = all cores
    kv_unified: bool = True  # see KVLayout; a run may switch layouts (LlamaRuntime.use_layout)
    extra_buffers: str | None = None  # auto | on | off; None = $THOUGHTSCOPE_EXTRA_BUFFERS, setting, auto
    weights: str | None = None  # original | auto | q8_0 | f16; None = $THOUGHTSCOPE_WEIGHTS, setting, auto
    # rows per decode of the runs it is opened for (RunSpec.decode_rows): `auto` weights run
    # the file measured fastest at that width (1: one chain; None: a search)
    decode_rows: int | None = None

    def validate(self) -> None:
        max_seq = int(llama.llama_max_parallel_sequences())
        if not 1 <= self.n_seq_max <= max_seq:
            raise ParameterError(f"n_seq_max must be in [1, {max_seq}], got {self.n_seq_max}")
        if self.n_ctx < 0:
            raise ParameterError(f"n_ctx must be >= 0, got {self.n_ctx}")
        if self.n_batch < 1:
            raise ParameterError(f"n_batch must be >= 1, got {self.n_batch}")
        if self.decode_rows is not None and self.decode_rows < 1:
            raise ParameterError(f"decode_rows must be >= 1, got {self.decode_rows}")
        requested_mode(self.extra_buffers)
        requested_weights(self.weights)


@dataclass(frozen=True, slots=True)
class KVLayout:
    """How the context's KV cells are laid out. Unified: one buffer of `n_ctx` cells shared by
    all `n_seq_max` sequences (a fork shares its prefix cells; every row attends over every
    cell in use). Streams (`unified=False`): each sequence has its own n_ctx / n_seq_max
    cells, a fork copies its prefix, and a row attends only over its own stream, so a step
    costs rows x own cells instead of rows x all cells (wide searches sharing only the prompt)."""

    n_ctx: int
    n_seq_max: int
    unified: bool = True


@dataclass(slots=True)
class BatchEntry:
    """One token to decode: `token` at `pos` in sequence `seq`; `logits` asks for its output."""

    token: int
    pos: int
    seq: int
    logits: bool


class KVSlotUnavailable(Exception):
    """llama_decode found no room in the KV cache for the batch."""


class LlamaRuntime:
    """Model + context + batch, with the vocabulary helpers the engine needs."""

    # every token a successful llama_decode processed on this context, for its whole life
    # (an independent count the engine's compute ledger is checked against)
    tokens_decoded: int = 0
    # whole-stream copies made, for the context's whole life, to give a decode's sequences
    # consecutive KV streams (the streams layout; engine/kv_streams.py)
    stream_moves: int = 0

    def __init__(
        self,
        model_path: str | Path,
        config: RuntimeConfig | None = None,
        *,
        weights_progress: WeightsProgress | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        self.config.validate()
        path = Path(model_path).expanduser()
        check_gguf(path)
        self.file: ModelFileInfo = model_file_info(path)
        init_backend()
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._requested_layout: KVLayout | None = None
        self._placement: StreamPlacement | None = None
        # the file the engine runs: the original or a measured upcast (engine/weight_format.py)
        self.weights: WorkingWeights = resolve_working_weights(
            path, self.config.weights, sha256=self.file.sha256,
            extra_buffers=self.config.extra_buffers, progress=weights_progress,
            rows=self.config.decode_rows,
        )
        work = Path(self.weights.path)
        self.kernel_path: KernelPath = resolve_kernel_path(work, self.config.extra_buffers)
        model_params = llama.llama_model_default_params()
        model_params.use_extra_bufts = self.kernel_path.extra_buffers
        self._model = llama.llama_model_load_from_file(str(work).encode(), model_params)
        if not self._model:
            raise ModelFileError(
                f"llama.cpp could not load the model (corrupt or unsupported GGUF): {path}"
            )
        self.vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama.llama_model_n_ctx_train(self._model))
        n_head = max(int(llama.llama_model_n_head(self._model)), 1)
        n_embd_kv = (
            int(llama.llama_model_n_embd(self._model)) * int(llama.llama_model_n_head_kv(self._model))
            // n_head
        )
        # K and V in F16 for every layer: what one KV cell of one sequence costs
        self.kv_bytes_per_cell = 2 * 2 * int(llama.llama_model_n_layer(self._model)) * n_embd_kv
        self.n_threads = self.config.n_threads or (os.cpu_count() or 1)
        self._abort_cb = _byte_flag_callback()
        self._never = ctypes.create_string_buffer(2)  # the abort flag while no run is bound
        self._abort_flag = self._never
        self.n_ctx = self.n_ctx_seq = self.n_seq_max = self.n_batch = 0
        self.kv_unified = True
        self.base_layout = KVLayout(
            self.config.n_ctx or min(8192, self.n_ctx_train or 8192), self.config.n_seq_max,
            self.config.kv_unified,
        )
        try:
            self.use_layout(self.base_layout)
        except BaseException:
            self.close()
            raise
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._eog = np.array(
            [bool(llama.llama_vocab_is_eog(self.vocab, t)) for t in range(self.n_vocab)], dtype=bool
        )
        self.eog_token_ids: list[int] = [int(t) for t in np.flatnonzero(self._eog)]
        desc = ctypes.create_string_buffer(256)
        llama.llama_model_desc(self._model, desc, len(desc))
        self.description = desc.value.decode("utf-8", "replace")
        self.chat_template: str | None = None
        raw_template = llama.llama_model_chat_template(self._model, None)
        if raw_template:
            self.chat_template = raw_template.decode("utf-8", "replace")

    # -- the context and its KV layout -----------------------------------------------------
    def use_layout(self, layout: KVLayout) -> None:
        """Give the model a context with `layout` (kept when it already has it). Only the
        context is rebuilt (its KV cells are dropped); the model stays loaded."""
        current = KVLayout(self.n_ctx, self.n_seq_max, self.kv_unified)
        if self._ctx and layout in (current, self._requested_layout):
            return
        max_seq = int(llama.llama_max_parallel_sequences())
        if not 1 <= layout.n_seq_max <= max_seq:
            raise ParameterError(f"n_seq_max must be in [1, {max_seq}], got {layout.n_seq_max}")
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama.llama_free(self._ctx)
            self._ctx = None
        n_batch = max(self.config.n_batch, layout.n_seq_max)
        ctx_params = llama.llama_context_default_params()
        ctx_params.n_ctx = layout.n_ctx
        ctx_params.n_batch = n_batch
        ctx_params.n_ubatch = n_batch
        ctx_params.n_seq_max = layout.n_seq_max
        ctx_params.kv_unified = layout.unified
        ctx_params.n_threads = self.n_threads
        ctx_params.n_threads_batch = self.n_threads
        ctx_params.no_perf = True
        ctx_params.abort_callback = self._abort_cb
        ctx_params.abort_callback_data = ctypes.addressof(self._abort_flag)
        self._ctx = llama.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            raise ModelFileError(
                f"llama.cpp could not create a context of {layout.n_ctx} tokens "
                f"({layout.n_seq_max} sequences, {'unified' if layout.unified else 'streams'}) "
                f"for {Path(self.file.path).name}"
            )
        self._requested_layout = layout
        self.n_ctx = int(llama.llama_n_ctx(self._ctx))
        self.n_ctx_seq = int(llama.llama_n_ctx_seq(self._ctx))
        self.n_batch = min(n_batch, int(llama.llama_n_batch(self._ctx)))
        self.n_seq_max = int(llama.llama_n_seq_max(self._ctx))
        self.kv_unified = layout.unified
        self._placement = None if layout.unified else StreamPlacement(self.n_seq_max)
        self._mem = llama.llama_get_memory(self._ctx)
        self._batch = llama.llama_batch_init(self.n_batch, 0, 1)

    # -- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        """What every run records about the model."""
        return {
            "path": self.file.path,
            "sha256": self.file.sha256,
            "size": self.file.size,
            "name": self.file.name,
            "description": self.description,
            "n_vocab": self.n_vocab,
            "n_ctx": self.n_ctx,
            "n_ctx_train": self.n_ctx_train,
            "n_seq_max": self.n_seq_max,
            "kv_unified": self.kv_unified,
            "n_ctx_seq": self.n_ctx_seq,
            "n_threads": self.n_threads,
            "llama_cpp_python": llama.__version__,
            "kernel_path": self.kernel_path.to_dict(),
            "weights": self.weights.to_dict(),
        }

    # -- abort --------------------------------------------------------------------------
    def abort_when(self, control: RunControl | None) -> None:
        """Make every llama_decode stop early, raising `Cancelled`, once `control` is
        cancelled (None: never). llama.cpp's abort callback reads the control's flag byte
        between graph nodes, so a cancel from any thread stops the decode in flight within
        milliseconds, and the check costs no Python call (see _byte_flag_callback)."""
        self._abort_flag = control.abort_flag if control is not None else self._never
        if self._ctx:
            llama.llama_set_abort_callback(
                self._ctx, self._abort_cb, ctypes.addressof(self._abort_flag)
            )

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        buf = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(
            self.vocab, data, len(data), buf, capacity, add_special, parse_special
        )
        if n < 0:
            capacity = -n
            buf = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        return [int(t) for t in buf[:n]]

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of a token's piece (may be part of a UTF-8 character)."""
        piece = self._pieces.get(token)
        if piece is None:
            n = llama.llama_token_to_piece(
                self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False
            )
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = llama.llama_token_to_piece(self.vocab, token, big, len(big), 0, False)
                piece = big.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token])

    @property
    def eog_mask(self) -> npt.NDArray[np.bool_]:
        return self._eog

    def special_token_text(self, token: int) -> str | None:
        """The text of a special token (BOS, EOS) as a template writes it; None if absent."""
        if token < 0 or token >= self.n_vocab:
            return None
        buf = ctypes.create_string_buffer(256)
        n = llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n].decode("utf-8", "replace") if n > 0 else None

    def chat_prompt(
        self, messages: Sequence[dict[str, str]], *, thinking: bool | None = None
    ) -> ChatPrompt:
        """The conversation rendered by the model's own Jinja template (sandboxed, as
        transformers and vLLM render it), else llama.cpp's built-in approximation, else the
        messages joined by blank lines (engine/chat_template.py). `thinking` sets the
        template's `enable_thinking` switch."""
        special: dict[str, str] = {}
        for name, token in (
            ("bos_token", int(llama.llama_vocab_bos(self.vocab))),
            ("eos_token", int(llama.llama_vocab_eos(self.vocab))),
        ):
            text = self.special_token_text(token)
            if text is not None:
                special[name] = text
        return build_chat_prompt(
            self.chat_template,
            messages,
            special_tokens=special,
            builtin=lambda: self._builtin_template(messages),
            thinking=thinking,
        )

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], *, thinking: bool | None = None
    ) -> str:
        """The prompt text for `messages` (see `chat_prompt`)."""
        return self.chat_prompt(messages, thinking=thinking).text

    def prompt_token_ids(self, prompt: ChatPrompt) -> list[int]:
        """A rendered prompt's tokens: special tokens in the text are parsed; the tokenizer
        adds its own BOS only where the template did not write one (as transformers does)."""
        return self.tokenize(prompt.text, add_special=prompt.add_special, parse_special=True)

    def _builtin_template(self, messages: Sequence[dict[str, str]]) -> str | None:
        """llama.cpp's built-in rendering of the model's template; None when it has none."""
        if not self.chat_template:
            return None
        tmpl = self.chat_template.encode("utf-8")
        keep = [(m["role"].encode("utf-8"), m["content"].encode("utf-8")) for m in messages]
        chat = (llama.llama_chat_message * len(keep))()
        for i, (role, content) in enumerate(keep):
            chat[i].role = role
            chat[i].content = content
        size = 2 * sum(len(r) + len(c) for r, c in keep) + 1024
        buf = ctypes.create_string_buffer(size)
        n = llama.llama_chat_apply_template(tmpl, chat, len(keep), True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n + 1)
            n = llama.llama_chat_apply_template(tmpl, chat, len(keep), True, buf, n + 1)
        if n < 0:
            return None
        return buf.raw[:n].decode("utf-8", "replace")

    # -- KV memory ----------------------------------------------------------------------
    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq_max:
            raise ValueError(f"sequence id {seq} outside [0, {self.n_seq_max})")

    def _stream(self, seq: int) -> int:
        """The llama.cpp sequence id holding `seq`: itself in the unified layout; across KV
        streams wherever `StreamPlacement` keeps it (engine/kv_streams.py)."""
        self._check_seq(seq)
        return seq if self._placement is None else self._placement.stream_of[seq]

    def seq_copy(self, src: int, dst: int) -> None:
        """Share all of `src`'s cells with `dst`: nothing is re-decoded; in the unified layout
        nothing is copied either, across KV streams the stream's cells are copied."""
        llama.llama_memory_seq_cp(self._mem, self._stream(src), self._stream(dst), -1, -1)

    def seq_copy_range(self, src: int, dst: int, p0: int, p1: int) -> None:
        """Share `src`'s cells in positions [p0, p1) with `dst` (an empty sequence). Across
        KV streams llama.cpp copies only whole streams (a partial range aborts the process),
        so there the whole stream is copied and the positions outside [p0, p1) removed."""
        s, d = self._stream(src), self._stream(dst)
        if p1 <= p0:
            return
        if self.kv_unified:
            llama.llama_memory_seq_cp(self._mem, s, d, p0, p1)
            return
        llama.llama_memory_seq_cp(self._mem, s, d, -1, -1)
        llama.llama_memory_seq_rm(self._mem, d, p1, -1)
        if p0 > 0:
            llama.llama_memory_seq_rm(self._mem, d, 0, p0)

    def seq_remove(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        """Drop `seq` from cells in [p0, p1); a cell no sequence holds is free again."""
        llama.llama_memory_seq_rm(self._mem, self._stream(seq), p0, p1)

    def seq_pos_max(self, seq: int) -> int:
        return int(llama.llama_memory_seq_pos_max(self._mem, self._stream(seq)))

    def clear_memory(self) -> None:
        llama.llama_memory_clear(self._mem, True)
        if self._placement is not None:
            self._placement = StreamPlacement(self.n_seq_max)

    def _decode_order(self, entries: Sequence[BatchEntry]) -> tuple[list[int], list[int] | None]:
        """Across KV streams: the stream of each entry, and the order to decode them in
        (None: as given). The entries' sequences are first gathered into consecutive streams
        (whole-stream copies, `StreamPlacement.gather`), then sorted by stream, so that
        llama.cpp decodes them in one pass instead of one pass per run of streams."""
        place = self._placement
        assert place is not None
        seqs = [e.seq for e in entries]
        streams = place.streams(seqs)
        if all(0 <= b - a <= 1 for a, b in pairwise(streams)):
            return streams, None
        busy = [
            int(llama.llama_memory_seq_pos_max(self._mem, s)) >= 0 for s in range(self.n_seq_max)
        ]
        for src, dst in place.gather(seqs, busy):
            llama.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
            llama.llama_memory_seq_rm(self._mem, src, -1, -1)
            self.stream_moves += 1
        streams = place.streams(seqs)
        order = sorted(range(len(entries)), key=streams.__getitem__)
        return streams, order

    # -- decoding -----------------------------------------------------------------------
    def decode(self, entries: Sequence[BatchEntry]) -> list[npt.NDArray[np.float32]]:
        """Decode up to n_batch entries in one llama_decode; returns logits rows (views,
        valid until the next decode) for the entries that asked for them, in order."""
        n = len(entries)
        if n == 0:
            return []
        if n > self.n_batch:
            raise ValueError(f"batch of {n} tokens exceeds n_batch={self.n_batch}")
        for e in entries:
            if not 0 <= e.pos < self.n_ctx_seq:
                raise ValueError(f"position {e.pos} outside the context of {self.n_ctx_seq}")
            self._check_seq(e.seq)
        if self._placement is None:
            streams, order = [e.seq for e in entries], None
        else:
            streams, order = self._decode_order(entries)
        batch = self._batch
        batch.n_tokens = n
        for i, j in enumerate(order if order is not None else range(n)):
            e = entries[j]
            batch.token[i] = e.token
            batch.pos[i] = e.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = streams[j]
            batch.logits[i] = e.logits
        rc = int(llama.llama_decode(self._ctx, batch))
        if rc == 2:  # the abort callback fired: the run was cancelled
            raise Cancelled()
        if rc == 1:
            raise KVSlotUnavailable()
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        self.tokens_decoded += n
        n_vocab = self.n_vocab
        row_of = list(range(n))  # batch row of each entry
        if order is not None:
            for i, j in enumerate(order):
                row_of[j] = i
        rows: list[npt.NDArray[np.float32]] = []
        for j, e in enumerate(entries):
            if e.logits:
                ptr = llama.llama_get_logits_ith(self._ctx, row_of[j])
                rows.append(np.ctypeslib.as_array(ptr, shape=(n_vocab,)))
        return rows

    def decode_logits_matrix(self, entries: Sequence[BatchEntry]) -> npt.NDArray[np.float32]:
        """Like `decode`, but the requested rows as one (rows, n_vocab) array.

        llama.cpp stores output rows contiguously in batch order; when the row pointers
        confirm that, the matrix is a zero-copy view, else the rows are stacked."""
        rows = self.decode(entries)
        if not rows:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        first = rows[0].ctypes.data
        step = self.n_vocab * 4
        if all(r.ctypes.data == first + k * step for k, r in enumerate(rows)):
            ptr = ctypes.cast(first, ctypes.POINTER(ctypes.c_float))
            matrix: npt.NDArray[np.float32] = np.ctypeslib.as_array(ptr, shape=(len(rows), self.n_vocab))
            return matrix
        return np.stack(rows)

    def prefill(self, tokens: Sequence[int], seq: int, start_pos: int) -> npt.NDArray[np.float32]:
        """Decode `tokens` into `seq` from `start_pos` in n_batch chunks; returns a copy of
        the last token's logits."""
        if not tokens:
            raise ValueError("prefill needs at least one token")
        if start_pos + len(tokens) > self.n_ctx_seq:
            raise ValueError("prefill past the end of the context")
        last: npt.NDArray[np.float32] | None = None
        for off in range(0, len(tokens), self.n_batch):
            chunk = tokens[off : off + self.n_batch]
            end = off + len(chunk) == len(tokens)
            entries = [
                BatchEntry(tok, start_pos + off + j, seq, end and j == len(chunk) - 1)
                for j, tok in enumerate(chunk)
            ]
            rows = self.decode(entries)
            if rows:
                last = rows[-1].copy()
        assert last is not None
        return last
