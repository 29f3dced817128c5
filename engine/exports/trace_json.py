"""The JSON trace: Thoughtscope's public format for one search tree.

{
  "format": "thoughtscope-trace", "version": 1,
  "model": {"path", "sha256", "size", "name", "kernel_path"},  # kernel_path: see kernel_probe
  "prompt": str, "prompt_token_ids": [int],   # exactly the ids decoded, template included
  "config": {...}, "answer": str | null, "answer_node": int | null,
  "nodes": [{"id", "parent", "depth", "state", "end_reason", "text",
             "tokens": [{"id", "text", "logprob", "entropy", "varentropy", "surprisal",
                         "top": [[token_id, logprob], ...]}]}]
}
Node 0 is the root (the prompt, no tokens); joined token texts equal the node text.
"""

from __future__ import annotations

from typing import Any

from engine.tree import TreeModel

TRACE_FORMAT = "thoughtscope-trace"
TRACE_VERSION = 1


def tree_to_trace(tree: TreeModel) -> dict[str, Any]:
    session = tree.session
    if session is None:
        raise ValueError("the tree has no session")
    model = session.model
    return {
        "format": TRACE_FORMAT,
        "version": TRACE_VERSION,
        "model": {k: model.get(k) for k in ("path", "sha256", "size", "name", "kernel_path")},
        "prompt": session.prompt,
        "prompt_token_ids": list(session.prompt_token_ids),
        "config": session.config,
        "answer": tree.answer,
        "answer_node": tree.answer_node,
        "nodes": [
            {
                "id": node.id,
                "parent": node.parent,
                "depth": node.depth,
                "state": node.state,
                "end_reason": node.end_reason,
                "text": node.text if node.id != tree.root_id else "",
                "tokens": [tok.to_dict() for tok in node.tokens],
            }
            for node in tree.iter_nodes()
        ],
    }
