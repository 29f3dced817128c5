"""What a node's scores and decisions are, in words: one formatter shared by the tree's
hover tooltip and the trace header, so both list every score (the run's verifier and every
re-score with another one) and the same state (a pruned node reads "pruned", never "done").
"""

from __future__ import annotations

from html import escape

from engine.tree import PRUNED, StepNode, TreeModel
from widgets.tree_drawing import primary_score_key


def _number(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "–"


def state_text(node: StepNode) -> str:
    """The node's state, with why it ended: "pruned by … (value …, threshold …)" for a cut
    node, "done · end: delimiter" for a finished step, and so on."""
    if node.state == PRUNED and node.prune:
        p = node.prune
        return (
            f"pruned by {p.get('policy')} (value {_number(p.get('value'))}, "
            f"threshold {_number(p.get('threshold'))})"
        )
    text = node.state
    if node.end_reason:
        text += f" · end: {node.end_reason}"
    return text


def score_items(tree: TreeModel, node_id: int) -> list[tuple[str, float, bool]]:
    """Every score of the node as (verifier, value, colours_the_tree), the verifier the tree
    colours follow first, then the others (re-scores) by name."""
    node = tree.nodes[node_id]
    primary = primary_score_key(tree)
    names = sorted(node.scores, key=lambda k: (k != primary, k))
    return [(k, node.scores[k], k == primary) for k in names]


def scores_html(tree: TreeModel, node_id: int) -> str:
    """"scores: prm 0.71 (colours), reference 1" or "no scores"."""
    items = score_items(tree, node_id)
    if not items:
        return "no scores"
    parts = [
        f"{escape(name)} <b>{value:.3g}</b>" + (" <i>(colours)</i>" if primary else "")
        for name, value, primary in items
    ]
    return "scores: " + ", ".join(parts)
