"""GraphML export through networkx: the tree's graph with every node metric as an attribute.

Per-token series (ids, logprobs, entropies) are JSON strings, since GraphML attributes are
scalars. Opens in Gephi, yEd, Cytoscape, or `networkx.read_graphml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

from engine.exports.node_table import node_record
from engine.tree import TreeModel


def tree_to_graph(tree: TreeModel) -> nx.DiGraph:
    """A copy of `tree.graph` whose nodes and graph carry the metrics (None values left out)."""
    graph = nx.DiGraph()
    session = tree.session
    meta: dict[str, Any] = {
        "answer": tree.answer,
        "answer_node": tree.answer_node,
        "prompt": session.prompt if session else None,
        "model": session.model.get("name") if session else None,
        "model_sha256": session.model.get("sha256") if session else None,
        "config": json.dumps(session.config, sort_keys=True) if session else None,
    }
    graph.graph.update({k: v for k, v in meta.items() if v is not None})
    for node_id in tree.graph.nodes:
        node = tree.nodes[node_id]
        attrs = {k: v for k, v in node_record(tree, node).items() if v is not None}
        attrs["label"] = f"{node.id}"
        attrs["token_ids"] = json.dumps([t.id for t in node.tokens])
        attrs["token_logprobs"] = json.dumps([t.logprob for t in node.tokens])
        attrs["token_entropies"] = json.dumps([t.entropy for t in node.tokens])
        attrs["token_varentropies"] = json.dumps([t.varentropy for t in node.tokens])
        graph.add_node(node_id, **attrs)
    graph.add_edges_from(tree.graph.edges)
    return graph


def write_graphml(tree: TreeModel, path: Path) -> None:
    nx.write_graphml(tree_to_graph(tree), str(path), encoding="utf-8", prettyprint=True)
