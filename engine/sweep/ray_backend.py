"""A sweep's runs on a Ray cluster: one actor per worker, each owning a llama.cpp context
loaded once (the stateful-actor pattern of Ray's batch-inference examples).

What goes where:
- the coordinator (this process, a Ray driver on any node of the cluster) sends each actor
  its `WorkerSetup` once, then one `RunTask` at a time (problem text, config, seed: a few
  hundred bytes); the actor sends back a `RunResult` (the session's events, tens of kB to a
  few MB) through Ray's object store, and the coordinator records it in the database. Actors
  never touch the database, so SQLite works with a cluster and no node needs credentials.
- the model file is NOT sent: it must exist at the same path on every node (a shared file
  system, or copied there beforehand). Each actor checks the file's sha256 against the
  coordinator's, so a different file under the same name fails the sweep at once with a
  one-line error instead of mixing two models in one curve.

Failures are Ray's: an actor whose process dies is restarted by Ray (`max_restarts=-1`:
it reloads the model) and the run it had in flight is retried once by Ray
(`max_task_retries=1`); a run whose worker dies twice comes back as RayActorError and is
marked failed, and the sweep goes on. Scheduling across nodes is Ray's too (`SPREAD`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from engine.errors import ThoughtscopeError
from engine.sweep.results import RunResult, worker_name
from engine.sweep.runner import Worker, WorkerSetup
from engine.sweep.spec import RunTask

ACTOR_NAMESPACE = "thoughtscope"
CONNECT_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 600.0  # loading a large model on a busy node can take minutes


class RayError(ThoughtscopeError):
    """Ray is missing, the cluster is unreachable, or its workers cannot start."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayError(
            "Ray is not installed: pip install 'thoughtscope[cluster]' (or pip install ray)"
        ) from None
    return ray


def check_reachable(address: str) -> None:
    """A one-line error unless `address` ("auto" or host:port of the cluster's GCS) answers;
    checked before anything is written (ray.init would retry for a long time)."""
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayError(f"a Ray address is host:port or auto, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise RayError(f"cannot reach the Ray cluster at {address}: {reason}") from None


def connect(address: str) -> None:
    """Join the cluster at `address` as a driver (quietly: worker logs stay on the nodes)."""
    ray = _ray()
    check_reachable(address)
    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address, namespace=ACTOR_NAMESPACE, logging_level=logging.ERROR,
            log_to_driver=False, configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RayError(f"cannot join the Ray cluster at {address}: {first}") from None


class SweepActor:
    """The body of a Ray actor: a Worker (one context, loaded once) behind two methods."""

    def __init__(
        self, setup: WorkerSetup, worker_factory: Callable[[WorkerSetup], Any] = Worker
    ) -> None:
        self.worker = worker_factory(setup)

    def info(self) -> dict[str, Any]:
        return {"worker": worker_name(), **self._extra()}

    def _extra(self) -> dict[str, Any]:
        info = getattr(self.worker, "info", None)
        return dict(info()) if callable(info) else {}

    def run(self, task: RunTask) -> RunResult:
        return self.worker.run(task)  # type: ignore[no-any-return]


def _actor_error_text(error: BaseException) -> str:
    """The useful line of a Ray actor error (the cause raised in the actor, if any)."""
    text = str(error)
    for raw in reversed(text.splitlines()):
        line = raw.strip()
        if line and ("Error:" in line or "error:" in line):
            return line
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class RayExecutor:
    """Runs tasks on `workers` Ray actors of `setup.n_threads` CPUs each."""

    def __init__(
        self,
        address: str,
        setup: WorkerSetup,
        workers: int | None = None,
        *,
        name: str = "sweep",
        worker_factory: Callable[[WorkerSetup], Any] = Worker,
    ) -> None:
        ray = _ray()
        self._owns_ray = not ray.is_initialized()  # a caller's own ray.init() stays up
        connect(address)
        self.address = address
        self.setup = setup
        threads = max(1, setup.n_threads)
        if workers is None:
            # as many workers of `threads` CPUs as the live nodes hold
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            workers = sum(int(n.get("Resources", {}).get("CPU", 0)) // threads for n in nodes)
            workers = max(1, workers)
        if workers < 1:
            raise RayError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        actor_class = ray.remote(
            num_cpus=threads, max_restarts=-1, max_task_retries=1
        )(SweepActor)
        self._actors = [
            actor_class.options(
                name=f"thoughtscope-{name}-{i}", scheduling_strategy="SPREAD",
                get_if_exists=False,
            ).remote(setup, worker_factory)
            for i in range(workers)
        ]
        try:
            infos = ray.get([a.info.remote() for a in self._actors], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise RayError(
                f"{workers} Ray workers of {threads} CPUs did not start within "
                f"{READY_TIMEOUT_S:.0f} s (does the cluster have the CPUs?)"
            ) from None
        except ray.exceptions.RayError as error:
            self.close()
            raise RayError(f"a Ray worker could not start: {_actor_error_text(error)}") from None
        self.infos: list[dict[str, Any]] = list(infos)
        self._worker_of = [str(i["worker"]) for i in infos]

    def describe(self) -> str:
        hosts = sorted({w.rsplit(":", 1)[0] for w in self._worker_of})
        return (f"{self.workers} Ray workers on {len(hosts)} node(s) ({', '.join(hosts)}), "
                f"{self.setup.n_threads} threads each")

    def run(self, tasks: Iterable[RunTask]) -> Iterator[RunResult]:
        ray = _ray()
        pending = list(tasks)
        pending.reverse()
        idle = list(range(len(self._actors)))
        in_flight: dict[Any, tuple[int, RunTask, str]] = {}
        dead: set[int] = set()
        moved: set[tuple[int, int, int]] = set()

        def submit() -> None:  # one run at a time on each idle actor
            while pending and idle:
                i = idle.pop()
                task = pending.pop()
                in_flight[self._actors[i].run.remote(task)] = (i, task, self._worker_of[i])

        while pending or in_flight:
            submit()
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            finished: list[RunResult] = []
            for ref in ready:
                i, task, worker_then = in_flight.pop(ref)
                idle.append(i)
                try:
                    result: RunResult = ray.get(ref)
                except ray.exceptions.ActorDiedError as error:
                    # gone for good (Ray could not restart it): its run goes to another
                    # actor once; with no actor left the sweep cannot go on
                    idle.remove(i)
                    dead.add(i)
                    if len(dead) == len(self._actors):
                        raise RayError(
                            f"every Ray worker died: {_actor_error_text(error)}"
                        ) from None
                    if task.cell not in moved:
                        moved.add(task.cell)
                        pending.append(task)
                        continue
                    finished.append(RunResult(
                        task.problem, task.config, task.seed, worker=worker_then, attempts=2,
                        error=f"its Ray workers died: {_actor_error_text(error)}",
                    ))
                    continue
                except ray.exceptions.RayActorError as error:
                    finished.append(RunResult(
                        task.problem, task.config, task.seed, worker=worker_then, attempts=2,
                        error=f"its Ray worker died twice (Ray retried the run once): "
                        f"{_actor_error_text(error)}",
                    ))
                    continue
                # Ray retried the run on the restarted actor when another process answers
                result.attempts = 1 if result.worker == worker_then else 2
                self._worker_of[i] = result.worker
                finished.append(result)
            submit()  # every actor busy again before the results are recorded
            yield from finished

    def close(self) -> None:
        ray = _ray()
        for actor in getattr(self, "_actors", []):
            with contextlib.suppress(Exception):  # already gone is fine
                ray.kill(actor, no_restart=True)
        self._actors = []
        if getattr(self, "_owns_ray", False) and ray.is_initialized():
            ray.shutdown()
