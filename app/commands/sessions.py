"""`thoughtscope sessions | show | delete | rename | export | import | rescore`: the store.

Every command takes `--db PATH|URL`, an SQLite file or a PostgreSQL URL (default: the
`db_path` setting, else sessions.db in the user's data directory).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import ThoughtscopeError

EXPORT_CHOICES = ("json", "graphml", "dot", "csv", "mermaid")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        metavar="PATH|URL",
        help="session database: an SQLite file or postgresql+psycopg://USER@HOST/DB "
        "(default: setting db_path, else sessions.db in the data folder)",
    )


def open_store(args: argparse.Namespace) -> Any:
    """The store `--db` names (a path or a URL), else the default file."""
    from engine.store import open_store as open_at

    return open_at(args.db)


def _session_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a session id is a number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a session id is >= 1, got {value}")
    return value


def _short(text: str | None, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cmd_sessions(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = store.list_sessions()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], ensure_ascii=False))
        return 0
    if not rows:
        print(f"no sessions in {store.where}")
        return 0
    header = f"{'id':>4}  {'status':<11} {'strategy':<12} {'nodes':>5} {'tokens':>6}  {'answer':<10} {'created':<19}  name"
    print(header)
    for r in rows:
        answer = _short(r.answer, 10) if r.answer is not None else "-"
        if r.correct is not None:
            answer = _short(f"{answer} {'✓' if r.correct else '✗'}", 10)
        print(
            f"{r.id:>4}  {r.status:<11} {_short(r.strategy, 12):<12} {r.nodes:>5} "
            f"{r.tokens:>6}  {answer:<10} {r.created[:19].replace('T', ' '):<19}  {_short(r.name, 40)}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from engine.tree import TreeModel

    with open_store(args) as store:
        info = store.session_info(args.id)
        events = store.load_events(args.id)
        rescores = store.rescores(args.id)
    tree = TreeModel.from_events(events)
    if args.json:
        info["rescores"] = rescores
        print(json.dumps(info, ensure_ascii=False, default=str))
        return 0
    print(f"session {info['id']}: {info['name']}")
    for key in (
        "status",
        "stopped_reason",
        "created",
        "strategy",
        "seed",
        "model_name",
        "model_sha256",
        "llama_cpp_version",
        "app_version",
        "gold",
        "answer",
    ):
        print(f"  {key:<18} {info.get(key)}")
    print(
        f"  {'nodes':<18} {info['n_nodes']}  tokens {info['n_tokens']}  events {info['n_events']}"
        f"  wall {info['wall_s'] if info['wall_s'] is not None else '-'} s"
    )
    print(f"  {'prompt':<18} {_short(info['prompt'], 100)}")
    reused = sum(n.reused_tokens for n in tree.iter_nodes())
    prefilled = sum(n.prefilled for n in tree.iter_nodes())
    decoded = sum(n.decoded for n in tree.iter_nodes())
    print(
        f"  {'compute ledger':<18} decoded {decoded}, prefilled {prefilled}, verifier calls "
        f"{tree.ledger()['verifier']}, reused via KV copy {reused}"
    )
    if tree.answer_node is not None and tree.answer_node in tree:
        print("\n" + tree.path_text(tree.answer_node).strip())
    for r in rescores:
        print(
            f"  rescore {r['id']}: {r['verifier']}/{r['aggregate']}/{r['exit']} -> "
            f"{r['answer']} in {r['tokens']} tokens"
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        store.delete(args.id)
    print(f"deleted session {args.id}")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        store.rename(args.id, args.name)
    print(f"renamed session {args.id}")
    return 0


def _check_output(path: Path) -> Path:
    path = path.expanduser()
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ThoughtscopeError(f"cannot write {path}: folder {parent} does not exist")
    if path.is_dir():
        raise ThoughtscopeError(f"cannot write {path}: it is a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ThoughtscopeError(f"cannot write {path}: permission denied")
    return path


DIAGRAM_FORMATS = ("svg", "png", "pdf")


def cmd_export(args: argparse.Namespace) -> int:
    from engine.exports import write_text_atomic

    out = _check_output(args.output)
    if args.format in DIAGRAM_FORMATS:
        from app.diagram_export import export_diagram

        with open_store(args) as store:
            tree = store.load_tree(args.id)
        export_diagram(
            tree,
            out,
            args.format,
            scale=args.scale,
            legend=not args.no_legend,
            highlight_node=tree.answer_node,
        )
        print(f"wrote {out} ({args.format})")
        return 0
    with open_store(args) as store:
        text = store.export_text(args.id, args.format)
    try:
        write_text_atomic(out, text)
    except OSError as error:
        raise ThoughtscopeError(f"cannot write {out}: {error.strerror or error}") from None
    print(f"wrote {out} ({args.format})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.file.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ThoughtscopeError(
            f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    with open_store(args) as store:
        session_id = store.import_json(text, source=str(path))
    print(f"imported {path} as session {session_id}")
    return 0


def _split(values: list[str] | None, default: str) -> list[str]:
    """Comma lists of `NAME[:key=value,...]`: a `key=value` piece belongs to the name before."""
    out: list[str] = []
    for value in values or [default]:
        for piece in (v.strip() for v in value.split(",") if v.strip()):
            if out and "=" in piece and ":" not in piece and ":" in out[-1]:
                out[-1] += "," + piece
            else:
                out.append(piece)
    return out


def cmd_rescore(args: argparse.Namespace) -> int:
    from engine.rescore import parse_exit, rescore_grid

    verifiers = _split(args.verifier, "mean_logprob")
    aggregates = _split(args.aggregate, "best")
    exits = _split(args.exit, "none")
    for e in exits:
        parse_exit(e)  # a typo fails before the database is touched
    with open_store(args) as store:
        info = store.session_info(args.id)
        events = store.load_events(args.id)
        results = rescore_grid(
            events, verifiers=verifiers, aggregates=aggregates, exits=exits, gold=info["gold"],
            include_truncated=args.include_truncated,
        )
        if not args.no_save:
            for r in results:
                store.save_rescore(
                    args.id,
                    verifier=r.verifier,
                    aggregate=r.aggregate,
                    exit_policy=r.exit,
                    answer=r.answer,
                    answer_node=r.answer_node,
                    tokens=r.tokens,
                    correct=r.correct,
                    result=r.to_dict(),
                )
    if args.json:
        print(
            json.dumps(
                {
                    "session": args.id,
                    "recorded_answer": info["answer"],
                    "results": [r.to_dict() for r in results],
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(
        f"session {args.id}: recorded answer {info['answer']!r}, {info['n_tokens']} tokens"
        + (f", gold {info['gold']!r}" if info["gold"] is not None else "")
    )
    print(
        f"{'verifier':<14} {'aggregate':<9} {'exit':<15} {'answer':<12} {'tokens':>6} {'saved':>6}  used"
    )
    for r in results:
        mark = "" if r.correct is None else (" ✓" if r.correct else " ✗")
        print(
            f"{r.verifier:<14} {r.aggregate:<9} {r.exit:<15} {_short(str(r.answer) + mark, 12):<12} "
            f"{r.tokens:>6} {r.tokens_recorded - r.tokens:>6}  {r.candidates_used}/{r.candidates}"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("sessions", help="list stored sessions")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    add_db_arg(p)
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("show", help="show one stored session")
    p.add_argument("id", type=_session_id)
    p.add_argument("--json", action="store_true")
    add_db_arg(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("delete", help="delete a stored session")
    p.add_argument("id", type=_session_id)
    add_db_arg(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("rename", help="rename a stored session")
    p.add_argument("id", type=_session_id)
    p.add_argument("name")
    add_db_arg(p)
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("export", help="export a stored session to a file")
    p.add_argument("id", type=_session_id)
    p.add_argument(
        "--format",
        choices=(*EXPORT_CHOICES, *DIAGRAM_FORMATS),
        default="json",
        help="data (json, graphml, dot, csv, mermaid) or the tree diagram as drawn (svg, png, pdf)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    p.add_argument("--scale", type=float, default=2.0, help="PNG pixels per scene unit")
    p.add_argument("--no-legend", action="store_true", help="diagram without the legend")
    add_db_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import a session from a JSON export")
    p.add_argument("file", type=Path)
    add_db_arg(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "rescore", help="re-run answer selection and early exits over a stored session"
    )
    p.add_argument("id", type=_session_id)
    p.add_argument(
        "--verifier",
        action="append",
        help="mean_logprob, min_logprob, neg_entropy or a stored verifier (comma list)",
    )
    p.add_argument(
        "--aggregate", action="append",
        help="best, majority, weighted or another aggregation, NAME[:key=value,...] (comma list)",
    )
    p.add_argument(
        "--include-truncated", action="store_true",
        help="let chains cut by the token cap, a full context or a missing slot vote",
    )
    p.add_argument(
        "--exit",
        action="append",
        help="none, first, consistency:K, threshold:X, budget:T, "
        "deepconf[:warmup=W,eta=E,window=N,consensus=C] (comma list)",
    )
    p.add_argument("--no-save", action="store_true", help="report only; store no derived result")
    p.add_argument("--json", action="store_true")
    add_db_arg(p)
    p.set_defaults(func=cmd_rescore)


@contextmanager
def recording(db: str | None, bus: Any, detail: str = "tokens") -> Iterator[Any]:
    """For `run --db PATH|URL`: record the search's events into the store while it runs, at
    `detail` "tokens" or "steps". The store is opened (and checked) before the model loads;
    the recorder settles the session's status when the run ends, however it ends."""
    if db is None:
        yield None
        return
    from engine.store import open_store as open_at

    store = open_at(db)
    try:
        recorder = store.start_recording(detail=detail)
        bus.subscribe(recorder)
        try:
            yield recorder
        finally:
            recorder.close()
    finally:
        store.close()
