"""A screening's folder: what was asked (run.json), one Parquet file per committed shard, the results.

    RUN/run.json              inputs (path, sha256, count), model spec, shard size, ase-moma version
    RUN/shards/00000.parquet  one per shard, written to a temporary name and renamed: whole or absent
    RUN/results.parquet       every row in input order (and results.csv, without the structures)

``resume`` accepts a folder only when run.json says the same inputs and settings; the shards on disk are
kept and only the missing ones computed. A driver killed while writing a shard leaves that shard's
temporary file (a hidden ``.NNNNN.parquet.*.tmp.parquet``): it is no shard, and opening the folder again
removes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ase_moma.atomic_io import atomic_file, remove_leftover_temporaries
from ase_moma.errors import AseMomaError
from ase_moma.version import CREATED_BY

RUN_JSON = "run.json"
SHARDS = "shards"
RESULTS = "results.parquet"
CSV = "results.csv"
COMMITTED = "[0-9]*.parquet"  # a committed shard's name; temporary files start with "."


class RunMismatch(AseMomaError, ValueError):
    """A run folder that holds another screening than the one asked to resume."""


class RunFolder:
    """The folder ``path`` of one screening; ``record`` is what run.json holds (inputs and settings)."""

    def __init__(self, path: str | Path, record: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        self.path = Path(path)
        self.record = dict(record, created_by=CREATED_BY)
        existing = self.path / RUN_JSON
        if existing.is_file():
            if resume:
                stored = json.loads(existing.read_text())
                changed = sorted(key for key in record if stored.get(key) != record[key])
                if changed:
                    raise RunMismatch(f"{self.path} holds a screening with other {', '.join(changed)}; resume it "
                                      "with the same inputs and settings, or write to a new folder")
            elif not overwrite:
                raise FileExistsError(f"{self.path} already holds a screening (pass --resume to finish it, or "
                                      "--overwrite to start afresh)")
            else:
                for shard in (self.path / SHARDS).glob(COMMITTED):
                    shard.unlink()
                for name in (RESULTS, CSV):
                    (self.path / name).unlink(missing_ok=True)
        elif self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"{self.path} exists and is not a screening folder")
        (self.path / SHARDS).mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(self.path / SHARDS)  # a driver killed mid-write leaves one
        with atomic_file(self.path / RUN_JSON) as tmp:
            Path(tmp).write_text(json.dumps(self.record, indent=1, sort_keys=True) + "\n")

    def shard_path(self, shard: int) -> Path:
        return self.path / SHARDS / f"{shard:05d}.parquet"

    def done(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    def commit(self, shard: int, rows: list[dict[str, Any]]) -> bool:
        """Write ``rows`` as shard ``shard`` unless it is already there (a retried task's second answer):
        written to a temporary file in the same folder, then renamed into place. True when written."""
        import pandas as pd

        target = self.shard_path(shard)
        if target.is_file():
            return False
        with atomic_file(target) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        return True

    def finish(self, shards: int, rank_by: str | None) -> Any:
        """results.parquet and results.csv from every shard, in input order (ranked by ``rank_by``, lowest
        first, errors last, when given); returns the table (a pandas DataFrame)."""
        import pandas as pd

        table = pd.concat([pd.read_parquet(self.shard_path(k)) for k in range(shards)], ignore_index=True)
        table = table.sort_values("index", kind="stable").reset_index(drop=True)
        if rank_by is not None:
            if rank_by not in table.columns:
                raise ValueError(f"cannot rank by {rank_by!r}: the results have {', '.join(table.columns)}")
            table["rank"] = table[rank_by].rank(method="first", na_option="keep").astype("Int64") - 1
        with atomic_file(self.path / RESULTS) as tmp:
            table.to_parquet(tmp, index=False)
        with atomic_file(self.path / CSV) as tmp:
            table.drop(columns=["structure"]).to_csv(tmp, index=False)
        return table
