"""Data exports of a search tree (JSON trace, and the formats the store adds).

`EXPORT_FORMATS` maps a format name to a function giving the file's text; `write_export`
writes it atomically (a failed write leaves no partial file behind).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.events import Event
from engine.tree import TreeModel

ExportText = Callable[[TreeModel, list[Event], dict[str, Any]], str]


def _json(tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    from engine.exports.session_json import dumps, session_to_json

    return dumps(session_to_json(tree, events, session))


def _graphml(tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    import networkx as nx

    from engine.exports.graphml import tree_to_graph

    return "\n".join(nx.generate_graphml(tree_to_graph(tree), prettyprint=True)) + "\n"


def _dot(tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    from engine.exports.dot import tree_to_dot

    return tree_to_dot(tree)


def _csv(tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    from engine.exports.csv_table import tree_to_csv

    return tree_to_csv(tree)


def _mermaid(tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    from engine.exports.mermaid import tree_to_mermaid

    return tree_to_mermaid(tree)


EXPORT_FORMATS: dict[str, ExportText] = {
    "json": _json,
    "graphml": _graphml,
    "dot": _dot,
    "csv": _csv,
    "mermaid": _mermaid,
}


def export_text(fmt: str, tree: TreeModel, events: list[Event], session: dict[str, Any]) -> str:
    try:
        render = EXPORT_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}") from None
    return render(tree, events, session)


def _process_umask() -> int:
    """The process umask: from /proc on Linux (no change of process state, so no race with
    other threads creating files), else read by setting and restoring it at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, then rename over `path`.

    `mkstemp` creates the file 0600 whatever the umask; the finished file gets the mode an
    ordinary `open()` would give it (0666 less the umask), as the image exports have."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_process_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
