"""Binary per-token columns: one little-endian numpy array per column, one element per token.

Per-token detail is stored as arrays (one row per node), not as one row per token with JSON
lists: a token costs its bytes and little more. Every column is the raw bytes of a numpy
array, readable anywhere with `np.frombuffer(value, dtype)`. Three columns are stored narrow
when their values allow and wide otherwise; the byte length tells which (n tokens: n or 2n
bytes, 2n or 4n, 4n or 8n):

    column          dtype                elements
    token_ids       <i4                  one per token (the prompt's ids for the root)
    token_chars     u1, or <u2           one per token: its share of the node text, in
                                         characters (<u2 when one share is >= 256)
    event_index     <u2, or <i4          one per token: the index of the TokensAppended
                                         event that carried it, as an offset from the
                                         node's first (`nodes.tokens_index`); <i4: the
                                         index itself, when an offset is >= 65536
    t               <i4, or <f8          one per token: that event's time, in microseconds
                                         after the node's first token (`nodes.tokens_t`);
                                         <f8: seconds since the session started, when the
                                         tokens span more than 35 minutes
    logprob, entropy, varentropy, self_certainty, token_confidence
                    <f4                  one per token (NaN, or a NULL column: not measured)
    top_k           u1                   how many alternatives each token has: one byte per
                                         token, or a single byte when all have as many
    top_ids         <i4                  sum(top_k): each token's alternatives, most likely
                                         first
    top_logprobs    <f4                  their log-probabilities

float32, not float16: float32 keeps 7 significant digits (relative error <= 6e-8), and on a
real run (15,525 alternatives of 3,105 tokens) it changed none of the probabilities the
window shows (3 decimals) nor of the entropies (2 decimals); float16 (relative error up to
5e-3 there) changed 2.1% of the shown alternative probabilities, 3.1% of the chosen tokens'
and 1.9% of the entropies (engine/store/bench.py measures it again:
`store_f16_display_changes`). The logits these come from are float32 themselves. Exports
print the stored float32 values (widened exactly to float64). Event times are kept to the
microsecond, as the event bus rounds them, so they come back exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

ID = np.dtype("<i4")
CHARS = np.dtype("u1")
CHARS_WIDE = np.dtype("<u2")
INDEX = np.dtype("<u2")  # offsets from the node's first token event
INDEX_WIDE = np.dtype("<i4")  # event indexes
TIME = np.dtype("<i4")  # microseconds after the node's first token
TIME_WIDE = np.dtype("<f8")  # seconds since the session started
METRIC = np.dtype("<f4")
TOP_K = np.dtype("u1")
TOP_ID = np.dtype("<i4")
TOP_LOGPROB = np.dtype("<f4")

MAX_CHARS = int(np.iinfo(CHARS_WIDE).max)
MAX_TOP_K = int(np.iinfo(TOP_K).max)


def pack(values: Sequence[float | int] | npt.NDArray[np.generic], dtype: np.dtype) -> bytes:
    """The values as the raw little-endian bytes of a `dtype` array."""
    return np.asarray(values, dtype=dtype).tobytes()


def unpack(blob: bytes | memoryview | None, dtype: np.dtype) -> npt.NDArray[np.generic]:
    """The array stored in `blob` (empty for NULL); raises ValueError when its length is
    not a whole number of elements."""
    if blob is None:
        return np.empty(0, dtype=dtype)
    if len(blob) % dtype.itemsize:
        raise ValueError(f"a {dtype} column holds {len(blob)} bytes, not whole elements")
    return np.frombuffer(blob, dtype=dtype)


def _fits(values: npt.NDArray[np.generic], dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return not values.size or bool(values.min() >= info.min and values.max() <= info.max)


def _narrow_or_wide(
    blob: bytes | memoryview, n: int, narrow: np.dtype, wide: np.dtype
) -> tuple[npt.NDArray[np.generic], bool]:
    """The array of `n` elements in `blob` and whether it is the narrow layout."""
    if len(blob) == n * narrow.itemsize:
        return np.frombuffer(blob, dtype=narrow), True
    if len(blob) == n * wide.itemsize:
        return np.frombuffer(blob, dtype=wide), False
    raise ValueError(f"a column holds {len(blob)} bytes for {n} tokens")


def pack_chars(lengths: Sequence[int]) -> bytes:
    """Each token's share of the text, in characters: u1, or <u2 when one is >= 256."""
    values = np.asarray(lengths, dtype=np.int64)
    if not _fits(values, CHARS_WIDE):
        raise ValueError(f"a token's text is longer than {MAX_CHARS} characters")
    return values.astype(CHARS if _fits(values, CHARS) else CHARS_WIDE).tobytes()


def unpack_chars(blob: bytes | memoryview | None, n: int) -> list[int]:
    if blob is None:
        if n:
            raise ValueError(f"no token_chars for {n} tokens")
        return []
    return _narrow_or_wide(blob, n, CHARS, CHARS_WIDE)[0].tolist()  # type: ignore[no-any-return]


def pack_event_index(index: Sequence[int], origin: int) -> bytes:
    """Token event indexes as <u2 offsets from `origin`, or as <i4 indexes."""
    values = np.asarray(index, dtype=np.int64)
    offsets = values - origin
    if _fits(offsets, INDEX):
        return offsets.astype(INDEX).tobytes()
    return values.astype(INDEX_WIDE).tobytes()


def unpack_event_index(blob: bytes | memoryview, n: int, origin: int) -> list[int]:
    values, narrow = _narrow_or_wide(blob, n, INDEX, INDEX_WIDE)
    if narrow:
        return (values.astype(np.int64) + origin).tolist()  # type: ignore[no-any-return]
    return values.tolist()  # type: ignore[no-any-return]


def pack_times(t: Sequence[float], origin: float) -> bytes:
    """Event times as <i4 microseconds after `origin`, or as <f8 seconds when one of them
    is more than 2**31 microseconds (35 minutes) away from it."""
    seconds = np.asarray(t, dtype=np.float64)
    offsets = np.rint((seconds - origin) * 1e6)
    if _fits(offsets, TIME):
        return offsets.astype(TIME).tobytes()
    return seconds.astype(TIME_WIDE).tobytes()


def unpack_times(blob: bytes | memoryview, n: int, origin: float) -> list[float]:
    """`n` event times stored by `pack_times`. A time the event bus rounded to the
    microsecond, round(x, 6), is the double nearest to k / 10**6 for an integer k; so is
    k / 1e6 (IEEE division is correctly rounded): the times come back exactly."""
    values, narrow = _narrow_or_wide(blob, n, TIME, TIME_WIDE)
    if narrow:
        micros = values.astype(np.int64) + np.int64(round(origin * 1e6))
        return (micros / 1e6).tolist()  # type: ignore[no-any-return]
    return values.astype(np.float64).tolist()  # type: ignore[no-any-return]


def pack_top_k(counts: Sequence[int]) -> bytes:
    """Alternatives per token: a single byte when every token has as many."""
    if counts and max(counts) > MAX_TOP_K:
        raise ValueError(f"a token has more than {MAX_TOP_K} alternatives")
    if counts and min(counts) == max(counts):
        return bytes([counts[0]])
    return pack(counts, TOP_K)


def unpack_top_k(blob: bytes | memoryview, n: int) -> list[int]:
    if len(blob) == 1:
        return [blob[0]] * n
    if len(blob) != n:
        raise ValueError(f"top_k holds {len(blob)} bytes for {n} tokens")
    return list(blob)


def pack_optional(values: Sequence[float | None], dtype: np.dtype = METRIC) -> bytes | None:
    """Floats that may be None (not measured): None for a column where all are, else NaN
    stands for each missing one."""
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else v for v in values], dtype=dtype).tobytes()


def floats(blob: bytes | memoryview | None, dtype: np.dtype = METRIC) -> list[float]:
    """Python floats of a stored float array (widened exactly to float64)."""
    return unpack(blob, dtype).astype(np.float64).tolist()  # type: ignore[no-any-return]


def optional_floats(blob: bytes | memoryview | None, n: int) -> list[float | None]:
    """`n` Python floats or None (NULL column, or NaN element) of an optional metric."""
    if blob is None:
        return [None] * n
    array = unpack(blob, METRIC)
    if len(array) != n:
        raise ValueError(f"an optional metric has {len(array)} values for {n} tokens")
    values: list[float | None] = array.astype(np.float64).tolist()
    if np.isnan(array).any():
        return [None if v is None or math.isnan(v) else v for v in values]
    return values


def ints(blob: bytes | memoryview | None, dtype: np.dtype = ID) -> list[int]:
    return unpack(blob, dtype).tolist()  # type: ignore[no-any-return]
