"""Graphviz DOT export: boxes labelled with the step's opening words, state and scores."""

from __future__ import annotations

from pathlib import Path

from engine.exports.node_table import short_label
from engine.tree import PRUNED, TERMINAL, TreeModel

_COLORS = {PRUNED: "#c0392b", TERMINAL: "#2c3e50"}
HAND_FILL = "#efe3fb"  # nodes made by hand in the window (branch, fork, edit)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def tree_to_dot(tree: TreeModel) -> str:
    lines = [
        "digraph thoughtscope {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
    ]
    for node_id in tree.graph.nodes:
        node = tree.nodes[node_id]
        if node.id == tree.root_id:
            title = "prompt"
            body = short_label(node.text, 40)
        else:
            title = f"#{node.id} {node.state} · {node.n_tokens} tok"
            body = short_label(node.text, 40)
        scores = ", ".join(f"{k}={v:.3g}" for k, v in node.scores.items())
        made = node.origin_note() or ""
        label = "\n".join(part for part in (title, made, body, scores) if part)
        attrs = [f"label={_quote(label)}"]
        color = _COLORS.get(node.state)
        if color:
            attrs.append(f'color="{color}"')
        style = ["rounded"]
        if node.state == PRUNED:
            style.append("dashed")
        if node.hand_made:  # branched, forked or edited in the window
            style.append("filled")
            attrs.append(f'fillcolor="{HAND_FILL}"')
        if len(style) > 1:
            attrs.append(f'style="{",".join(style)}"')
        if node.chosen:
            attrs.append("penwidth=2.5")
        if node.prune:
            attrs.append(f"tooltip={_quote(str(node.prune.get('reason', '')))}")
        lines.append(f"  n{node.id} [{', '.join(attrs)}];")
    lines.extend(f"  n{a} -> n{b};" for a, b in tree.graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(tree: TreeModel, path: Path) -> None:
    path.write_text(tree_to_dot(tree), encoding="utf-8")
