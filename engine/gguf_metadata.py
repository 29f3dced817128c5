"""Read one string from a GGUF file's metadata without llama.cpp: the window asks whether a
model's chat template has a thinking switch each time a model is chosen, and a vocabulary-only
llama.cpp load takes ~0.3 s on the GUI thread where this takes a few milliseconds.

The layout is GGUF v2/v3's (ggml `docs/gguf.md`): a header (magic, version, tensor count,
key-value count), then key-value pairs, each a length-prefixed UTF-8 key, a value type and the
value; arrays (the vocabulary) are skipped element by element without decoding them.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from engine.errors import ModelFileError

_STRING, _ARRAY = 8, 9
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # bytes per scalar
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Cursor:
    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelFileError(f"GGUF metadata runs past the end of the file: {self.path}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.u64())

    def skip(self, kind: int) -> None:
        if kind == _STRING:
            length = self.u64()  # read first: `self.pos += self.u64()` would lose its 8 bytes
            self.pos += length
        elif kind == _ARRAY:
            item, count = self.u32(), self.u64()
            if item in _FIXED:
                self.pos += _FIXED[item] * count
            else:
                for _ in range(count):
                    self.skip(item)
        elif kind in _FIXED:
            self.pos += _FIXED[kind]
        else:
            raise ModelFileError(f"unknown GGUF metadata type {kind}: {self.path}")


def read_metadata_string(path: str | Path, key: str) -> str | None:
    """The string value of `key` in the GGUF's metadata, or None when it has no such key.
    Raises ModelFileError for a file that is not a readable GGUF (v2 or v3)."""
    p = Path(path)
    wanted = key.encode("utf-8")
    try:
        with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cur = _Cursor(data, p)
            if cur.take(4) != b"GGUF" or cur.u32() not in (2, 3):
                raise ModelFileError(f"not a GGUF v2/v3 model file: {p}")
            cur.u64()  # tensors
            for _ in range(cur.u64()):
                name, kind = cur.string(), cur.u32()
                if name == wanted:
                    if kind != _STRING:
                        return None
                    return cur.string().decode("utf-8", "replace")
                cur.skip(kind)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot read the metadata of {p}: {exc}") from None
    return None


def chat_template_source(path: str | Path) -> str | None:
    """The model's own Jinja chat template (`tokenizer.chat_template`), if it has one."""
    return read_metadata_string(path, "tokenizer.chat_template")
