"""Mermaid flowchart export (renders in GitHub, GitLab and most Markdown viewers)."""

from __future__ import annotations

from pathlib import Path

from engine.exports.node_table import short_label
from engine.tree import PRUNED, TERMINAL, TreeModel


def _escape(text: str) -> str:
    out = text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")
    return out.replace(">", "#gt;").replace("`", "#96;")


def tree_to_mermaid(tree: TreeModel) -> str:
    lines = ["flowchart TD"]
    for node_id in tree.graph.nodes:
        node = tree.nodes[node_id]
        if node.id == tree.root_id:
            label = "prompt: " + short_label(node.text, 36)
        else:
            label = f"#{node.id} · {node.n_tokens} tok: {short_label(node.text, 36)}"
        if node.hand_made:
            label = f"{label} ({node.origin_note()})"
        label = _escape(label)
        if node.scores:
            scores = ", ".join(f"{k}={v:.3g}" for k, v in node.scores.items())
            label += "<br/>" + _escape(scores)
        lines.append(f'  n{node.id}["{label}"]')
    lines.extend(f"  n{a} --> n{b}" for a, b in tree.graph.edges)
    lines.append("  classDef pruned stroke:#c0392b,stroke-dasharray:4 3")
    lines.append("  classDef terminal stroke:#2c3e50")
    lines.append("  classDef chosen stroke:#27ae60,stroke-width:3px")
    lines.append("  classDef hand fill:#efe3fb")
    for cls, members in (
        ("pruned", [n.id for n in tree.iter_nodes() if n.state == PRUNED]),
        ("terminal", [n.id for n in tree.iter_nodes() if n.state == TERMINAL and not n.chosen]),
        ("chosen", [n.id for n in tree.iter_nodes() if n.chosen]),
        ("hand", [n.id for n in tree.iter_nodes() if n.hand_made]),
    ):
        if members:
            lines.append(f"  class {','.join(f'n{m}' for m in members)} {cls}")
    return "\n".join(lines) + "\n"


def write_mermaid(tree: TreeModel, path: Path) -> None:
    path.write_text(tree_to_mermaid(tree), encoding="utf-8")
