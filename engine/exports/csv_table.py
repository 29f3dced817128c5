"""CSV export: one row per node with its metrics (`pandas.read_csv` ready)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from engine.exports.node_table import NODE_COLUMNS, node_record, verifiers
from engine.tree import TreeModel


def tree_to_csv(tree: TreeModel) -> str:
    columns = [*NODE_COLUMNS, *(f"score:{name}" for name in verifiers(tree))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for node_id in tree.graph.nodes:
        record = node_record(tree, tree.nodes[node_id])
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return buffer.getvalue()


def write_csv(tree: TreeModel, path: Path) -> None:
    path.write_text(tree_to_csv(tree), encoding="utf-8", newline="")
