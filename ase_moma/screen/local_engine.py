"""The default engine: every shard evaluated in this process, one at a time.

One shard in flight bounds memory by the shard size, whatever the number of candidates.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ase_moma.screen.worker import ModelSpec, ShardItem, ShardWorker


class LocalEngine:
    """Evaluates shards with one :class:`ShardWorker` in this process."""

    name = "local"

    def run(self, spec: ModelSpec, shards: Iterable[tuple[int, list[ShardItem]]],
            commit: Callable[[int, list[dict[str, Any]]], None]) -> None:
        worker = ShardWorker(spec)
        for shard, items in shards:
            commit(shard, worker.compute(items))
