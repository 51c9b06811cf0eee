"""Screening many candidate structures: relax, predict, rank; resumable, on one machine or a Ray cluster.

``screen(candidates, model, out, ...)`` (and ``ase-moma screen``) reads the candidates in deterministic
shards, evaluates each shard (:class:`ShardWorker`), and commits each shard's rows with an atomic rename,
so a shard is on disk whole or not at all and ``resume=True`` recomputes only the missing ones. The
engines differ only in where shards are evaluated: :class:`LocalEngine` (this process, one shard in
flight) or :class:`RayEngine` (actors that load the model once from its spec).
"""

from ase_moma.screen.candidates import Candidate, count_candidates, read_candidates
from ase_moma.screen.local_engine import LocalEngine
from ase_moma.screen.run import screen
from ase_moma.screen.worker import ModelSpec, ShardWorker

__all__ = ["Candidate", "LocalEngine", "ModelSpec", "ShardWorker", "count_candidates", "read_candidates", "screen"]
