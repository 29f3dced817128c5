"""Where each sequence lives in the per-sequence KV layout (`KVLayout(unified=False)`).

llama.cpp decodes a batch spread over KV streams in one pass only when the batch's sequences
sit in consecutive streams, in increasing order: its `split_equal(sequential=True)` takes a
row into the current micro-batch only if its sequence id is the previous one plus one, and
runs a separate pass (the whole model again) for every other run of streams. Sixteen rows in
every other stream decode ~2.8x slower than in sixteen consecutive ones (measured: 73 against
200 tok/s). In a tree search the live sequences scatter at once: children adopt their
parents' ids, branches end, siblings are pruned.

`StreamPlacement` keeps the engine's sequence ids stable and maps each one onto a stream.
Before a decode, `gather` plans the fewest stream copies that bring the batch's sequences
into a run of consecutive streams: the window holding most of them already is kept; each
one outside it moves into a window stream that holds none of them, and a sequence with
cells in that stream is first parked in an empty stream outside. A move is one whole-stream
copy in llama.cpp (`llama_memory_seq_cp` across streams, ~n_ctx_seq x KV bytes per cell).
"""

from __future__ import annotations

from collections.abc import Sequence


class StreamPlacement:
    """A one-to-one map between sequence ids and streams (both 0..n-1), starting at identity."""

    def __init__(self, n: int) -> None:
        self.stream_of = list(range(n))
        self.seq_in = list(range(n))

    def streams(self, seqs: Sequence[int]) -> list[int]:
        return [self.stream_of[s] for s in seqs]

    def gather(self, seqs: Sequence[int], busy: list[bool]) -> list[tuple[int, int]]:
        """Re-map so that the distinct `seqs` occupy consecutive streams; returns the moves
        `(from_stream, to_stream)`, in the order they must run (each leaves `from_stream`
        empty). `busy[stream]`: the stream holds cells (updated in place). With no empty
        stream left to park a sequence in, the moves found so far are returned: the
        decode is then split, but stays correct."""
        members = list(dict.fromkeys(seqs))
        k, n = len(members), len(self.stream_of)
        at = sorted(self.stream_of[s] for s in members)
        if not members or at[-1] - at[0] + 1 == k:
            return []
        is_member = [False] * n
        for s in at:
            is_member[s] = True
        # the window [p, p + k) holding most members; then fewest occupied other streams
        best: tuple[int, int, int] | None = None
        inside = sum(is_member[:k])
        occupied = sum(busy[w] and not is_member[w] for w in range(k))
        for p in range(n - k + 1):
            if p:
                inside += is_member[p + k - 1] - is_member[p - 1]
                occupied += (busy[p + k - 1] and not is_member[p + k - 1]) - (
                    busy[p - 1] and not is_member[p - 1]
                )
            key = (-inside, occupied, p)
            if best is None or key < best:
                best = key
        assert best is not None
        p = best[2]
        outside = [s for s in at if not p <= s < p + k]
        vacant = [w for w in range(p, p + k) if not is_member[w]]
        parking = [t for t in range(n) if not p <= t < p + k and not busy[t] and not is_member[t]]
        moves: list[tuple[int, int]] = []
        for a, w in zip(outside, vacant, strict=True):
            mover, other = self.seq_in[a], self.seq_in[w]
            if busy[w]:
                if not parking:
                    break
                t = parking.pop()
                moves.append((w, t))  # `other` keeps its cells, in an empty stream outside
                empty = self.seq_in[t]
                self._put(other, t)
                busy[t] = True
                moves.append((a, w))
                self._put(mover, w)
                self._put(empty, a)
            else:
                moves.append((a, w))
                self._put(mover, w)
                self._put(other, a)  # an empty sequence: nothing of it to copy
                busy[w] = True
            busy[a] = False
            parking.append(a)
        return moves

    def _put(self, seq: int, stream: int) -> None:
        self.stream_of[seq] = stream
        self.seq_in[stream] = seq
