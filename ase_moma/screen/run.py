"""``screen``: candidates in, a ranked results table out, through a local or Ray engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from ase_moma.screen.candidates import count_candidates, input_digest, read_candidates
from ase_moma.screen.local_engine import LocalEngine
from ase_moma.screen.run_folder import RunFolder
from ase_moma.screen.worker import ModelSpec, ShardItem, to_text

SHARD_SIZE = 32
"""Candidates per shard: a model call's worth of small cells, committed often enough that an interruption
loses little, few enough files for ten thousand candidates (≈ 300)."""


def screen(candidates: str | Path, spec: ModelSpec, out: str | Path, *, engine: Any = None,
           shard_size: int = SHARD_SIZE, rank_by: str | None = None, resume: bool = False,
           overwrite: bool = False, progress: bool = True) -> Any:
    """Evaluate every candidate of ``candidates`` with ``spec``'s models; return the results table.

    engine: a :class:`LocalEngine` (default) or :class:`~ase_moma.screen.ray_engine.RayEngine`. out: the
    run folder (see :mod:`ase_moma.screen.run_folder`). resume: keep the shards ``out`` already holds and
    compute the rest. The table (pandas) has one row per candidate, in input order: ``index``, ``id``,
    ``formula``, ``n_atoms``, ``energy`` (eV), ``energy_per_atom``, relaxation outcome, each property,
    ``structure`` (extended XYZ of the final structure) and ``error`` (None when it succeeded).
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    engine = engine or LocalEngine()
    total = count_candidates(candidates)
    if total == 0:
        raise ValueError(f"{candidates} holds no candidate structures")
    shards = -(-total // shard_size)
    folder = RunFolder(out, {"input": str(Path(candidates).resolve()), "input_sha256": input_digest(candidates),
                             "candidates": total, "shard_size": shard_size, "spec": spec.record()},
                       resume=resume, overwrite=overwrite)
    todo = [k for k in range(shards) if not folder.done(k)]
    bar = tqdm(total=total, initial=total - sum(_size(k, shard_size, total) for k in todo), unit="structure",
               desc=f"screen ({engine.name})", disable=not progress)

    def commit(shard: int, rows: list[dict[str, Any]]) -> None:
        if folder.commit(shard, rows):
            bar.update(len(rows))

    with bar:
        engine.run(spec, _shards(candidates, shard_size, set(todo)), commit)
    missing = [k for k in range(shards) if not folder.done(k)]
    if missing:
        raise RuntimeError(f"shards {missing[:5]} of {out} were not computed")
    return folder.finish(shards, rank_by)


def _size(shard: int, shard_size: int, total: int) -> int:
    return min(shard_size, total - shard * shard_size)


def _shards(candidates: str | Path, shard_size: int, wanted: set[int]) -> Iterator[tuple[int, list[ShardItem]]]:
    """(shard, items) for the shards in ``wanted``, reading the input once, in order."""
    items: list[ShardItem] = []
    for candidate in read_candidates(candidates):
        shard = candidate.index // shard_size
        if shard in wanted:
            text = to_text(candidate.atoms) if candidate.atoms is not None else None
            items.append((candidate.index, candidate.id, text, candidate.error))
        if (candidate.index + 1) % shard_size == 0:
            if items:
                yield shard, items
            items = []
    if items:
        yield items[0][0] // shard_size, items
