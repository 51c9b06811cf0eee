"""The Ray engine: shards evaluated by actors, each loading the model once from its spec.

Each actor is a :class:`~ase_moma.screen.worker.ShardWorker` in its own process, on this machine or any
node of the cluster. An actor whose process dies is restarted by Ray (``max_restarts``) and the shard it
held is retried (``max_task_retries``); if Ray gives up, the driver hands the shard to another actor. The
driver alone writes results, and a shard already on disk is never written again, so every row ends up in
the table exactly once. At most two shards per actor are in flight, which bounds the driver's memory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

from ase_moma.errors import UsageError
from ase_moma.screen.worker import ModelSpec, ShardItem, ShardWorker

IN_FLIGHT_PER_WORKER = 2
"""Shards queued per actor: one running, one waiting, so an actor never idles between shards."""
DRIVER_RETRIES = 3
"""Times the driver resubmits a shard whose task Ray gave up on, before the screening stops."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'ase-moma[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str, cpus: float) -> Iterator[Any]:
    """Ray, connected: to a cluster started here with ``cpus`` CPUs (``address="local"``, stopped at the end)
    or to ``address`` (``auto``, ``ray://HOST:PORT``; only disconnected at the end). A session already
    open in this process is used as it is."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=max(1, int(cpus)), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class RayEngine:
    """address: ``"local"`` (a cluster started in this process, stopped at the end), ``"auto"`` (the
    cluster this machine belongs to, e.g. from ``ray start --head``) or ``"ray://HOST:PORT"``; workers:
    actors; cpus_per_worker, gpus_per_worker: each actor's Ray resources."""

    name = "ray"

    def __init__(self, address: str = "local", workers: int = 1, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, max_restarts: int = 3, max_task_retries: int = 3) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.address, self.workers = address, workers
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker
        self.max_restarts, self.max_task_retries = max_restarts, max_task_retries
        self.actors: list[Any] = []

    def run(self, spec: ModelSpec, shards: Iterable[tuple[int, list[ShardItem]]],
            commit: Callable[[int, list[dict[str, Any]]], None]) -> None:
        with ray_session(self.address, self.workers * self.cpus_per_worker) as ray:
            try:
                self._run(ray, spec, shards, commit)
            finally:
                self.actors = []

    def _run(self, ray, spec, shards, commit) -> None:
        actor_class = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                 max_restarts=self.max_restarts, max_task_retries=self.max_task_retries)(ShardWorker)
        self.actors = [actor_class.remote(spec) for _ in range(self.workers)]
        pending: dict[Any, tuple[int, list[ShardItem], int, int]] = {}  # ref -> (shard, items, actor, tries)
        queue = iter(shards)
        turn = 0

        def submit(shard: int, items: list[ShardItem], tries: int) -> None:
            nonlocal turn
            actor = turn % len(self.actors)
            turn += 1
            pending[self.actors[actor].compute.remote(items)] = (shard, items, actor, tries)

        for shard, items in queue:
            submit(shard, items, 0)
            if len(pending) >= IN_FLIGHT_PER_WORKER * self.workers:
                break
        exhausted = len(pending) < IN_FLIGHT_PER_WORKER * self.workers
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            shard, items, _, tries = pending.pop(ready[0])
            try:
                rows = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                if tries >= DRIVER_RETRIES:
                    raise RuntimeError(f"shard {shard} failed {tries + 1} times; the last: {error}") from error
                submit(shard, items, tries + 1)
                continue
            commit(shard, rows)
            if not exhausted:
                following = next(queue, None)
                if following is None:
                    exhausted = True
                else:
                    submit(*following, 0)
