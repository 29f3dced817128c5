"""The JSON trace: Thoughtscope's public format for one search tree.

{
  "format": "thoughtscope-trace", "version": 1,
  "model": {"path", "sha256", "size", "name", "kernel_path", "weights"},  # kernel_path: see
      kernel_probe; weights: the working file llama.cpp ran (format, path, sha256), weight_format
  "prompt": str, "prompt_token_ids": [int],   # exactly the ids decoded, template included
  "prompt_text": str,                          # the prompt with the chat template applied
  "config": {...}, "answer": str | null, "answer_node": int | null,
  "nodes": [{"id", "parent", "depth", "state", "end_reason", "origin", "forced_tokens", "text",
             "tokens": [{"id", "text", "logprob", "entropy", "varentropy", "surprisal",
                         "top": [[token_id, logprob], ...]}]}]
}
Node 0 is the root (the prompt, no tokens); joined token texts equal the node text.
`origin` says where a node came from: "expand" (the search), "rollout" (a lookahead or MCTS
rollout), "prompt" (the root), or by hand in the window: "branch" (Branch from here),
"fork_token" (a fork at a token: its first `forced_tokens` tokens were fed, the last of them
the alternative picked, i.e. the fork point) and "edit" (a step written by hand, all its
`forced_tokens` fed). `prompt_text`, `origin` and `forced_tokens` were added within version 1;
readers must not require them.
"""

from __future__ import annotations

from typing import Any

from engine.tree import TreeModel

TRACE_FORMAT = "thoughtscope-trace"
TRACE_VERSION = 1
# keys added within version 1: a file written before them lacks them, and still imports
ADDED_NODE_KEYS = ("origin", "forced_tokens")


def tree_to_trace(tree: TreeModel) -> dict[str, Any]:
    session = tree.session
    if session is None:
        raise ValueError("the tree has no session")
    model = session.model
    return {
        "format": TRACE_FORMAT,
        "version": TRACE_VERSION,
        "model": {
            k: model.get(k) for k in ("path", "sha256", "size", "name", "kernel_path", "weights")
        },
        "prompt": session.prompt,
        "prompt_token_ids": list(session.prompt_token_ids),
        "prompt_text": session.prompt_text,
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
                "origin": node.origin,
                "forced_tokens": node.forced_tokens,
                "text": node.text if node.id != tree.root_id else "",
                "tokens": [tok.to_dict() for tok in node.tokens],
            }
            for node in tree.iter_nodes()
        ],
    }
