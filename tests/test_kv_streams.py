"""Across KV streams, a decode's sequences are gathered into consecutive streams first
(engine/kv_streams.py): llama.cpp runs one pass per run of consecutive streams otherwise."""

from __future__ import annotations

import numpy as np

from engine.kv_streams import StreamPlacement
from engine.llama_runtime import BatchEntry, LlamaRuntime, RuntimeConfig

PROMPT = "Tom has 5 apples and buys 7 more. How many apples does he have?"


def _apply(moves: list[tuple[int, int]], content: list[str | None]) -> list[str | None]:
    """What the streams hold after running the copies in order (each empties its source)."""
    out = list(content)
    for src, dst in moves:
        assert out[src] is not None, f"copying the empty stream {src}"
        out[dst], out[src] = out[src], None
    return out


def test_gather_keeps_consecutive_sequences_where_they_are() -> None:
    place = StreamPlacement(8)
    assert place.gather([2, 3, 4], [True] * 8) == []
    assert place.gather([4, 2, 3], [True] * 8) == []  # the order of the rows does not matter


def test_gather_moves_the_fewest_sequences_worked_example() -> None:
    # streams 0..7; sequences 1, 2, 3, 6 are in the batch; 4 holds a paused chain (cells),
    # 5 and 7 are empty, 0 holds the prompt.
    place = StreamPlacement(8)
    busy = [True, True, True, True, True, False, True, False]
    content: list[str | None] = ["prompt", "a", "b", "c", "paused", None, "d", None]
    moves = place.gather([1, 2, 3, 6], busy)
    # windows [0, 4) and [1, 5) both hold three of them (1, 2, 3) and one other busy stream
    # (0 and 4); [3, 7) holds two. The tie goes to the lower window: the prompt in stream 0
    # is parked in the empty stream 7 (the last empty one outside the window), then
    # sequence 6 moves into stream 0.
    assert moves == [(0, 7), (6, 0)]
    after = _apply(moves, content)
    assert after == ["d", "a", "b", "c", "paused", None, None, "prompt"]
    assert place.streams([1, 2, 3, 6]) == [1, 2, 3, 0]
    assert place.stream_of[0] == 7  # the prompt's sequence id now lives in stream 7
    assert busy == [True, True, True, True, True, False, False, True]
    # the map stays one-to-one
    assert sorted(place.stream_of) == list(range(8))
    assert all(place.seq_in[place.stream_of[s]] == s for s in range(8))


def test_gather_into_an_empty_stream_is_one_copy() -> None:
    place = StreamPlacement(6)
    busy = [True, True, False, True, False, False]
    moves = place.gather([0, 1, 3], busy)
    assert moves == [(3, 2)]
    assert place.streams([0, 1, 3]) == [0, 1, 2]
    assert place.stream_of[2] == 3  # the empty sequence took the freed stream


def test_gather_without_parking_room_stops_short() -> None:
    place = StreamPlacement(4)
    moves = place.gather([0, 3], [True] * 4)  # streams 1 and 2 hold cells, nowhere to park
    assert moves == []
    assert place.streams([0, 3]) == [0, 3]


def test_scattered_streams_decode_as_consecutive_ones(model_path: object) -> None:
    """Eight sequences in every other stream are gathered (whole-stream copies) and decoded
    in one pass: the logits equal those of the same eight decoded in consecutive streams of
    a fresh context (the same batch shape, so the same kernels), returned in the caller's
    row order, and each sequence keeps its own cells."""
    cfg = RuntimeConfig(n_ctx=16 * 256, n_seq_max=16, kv_unified=False)
    with LlamaRuntime(model_path, cfg) as rt:  # type: ignore[arg-type]
        ids = rt.tokenize(PROMPT, add_special=True)
        n = len(ids)

        def fill(seqs: list[int]) -> None:
            rt.clear_memory()
            rt.prefill(ids, seqs[0], 0)
            for s in seqs[1:]:
                rt.seq_copy(seqs[0], s)
            for k, s in enumerate(seqs):
                rt.decode([BatchEntry(ids[k], n, s, False)])  # a different own token each

        scattered = [14, 2, 8, 6, 4, 10, 12, 0]
        fill(scattered)
        before = rt.stream_moves
        got = [r.copy() for r in rt.decode([BatchEntry(ids[1], n + 1, s, True) for s in scattered])]
        assert rt.stream_moves > before
        assert [rt.seq_pos_max(s) for s in scattered] == [n + 1] * 8
        consecutive = list(range(8))
        fill(consecutive)
        want = rt.decode([BatchEntry(ids[1], n + 1, s, True) for s in consecutive])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        # the sequences moved with their cells: decoding on continues each one's own text
        again = [r.copy() for r in rt.decode([BatchEntry(ids[2], n + 2, s, True) for s in consecutive])]
        fill(scattered)
        rt.decode([BatchEntry(ids[1], n + 1, s, True) for s in scattered])
        moved = rt.decode([BatchEntry(ids[2], n + 2, s, True) for s in scattered])
        for g, w in zip(moved, again, strict=True):
            np.testing.assert_array_equal(g, w)
