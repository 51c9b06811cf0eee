"""Where an interrupted run resumes from: one rule for every verb that trains.

A run writing an output ``NAME`` into a folder ``PARENT`` (``finetune -o PARENT/NAME``; a hub's module,
PARENT being the hub; a composition's fine-tuned ``model/``, PARENT being the composition) keeps a
checkpoint after every epoch in ``PARENT/.work/NAME/``. The same call resumes from it when its run hash
— the sha256 of everything that defines the run (settings, data hashes, base weights) — matches, and
starts afresh otherwise. The folder is removed once the output is written (``.work`` too when empty).

A run with later stages that train on what the first one made (the fusion members, on a trained graph
model) gives each its own folder inside the run's, ``PARENT/.work/NAME/STAGE/``, whose run hash adds the
stage's own settings to the run's: a stage starts only after the run's last checkpoint is written, so
nothing rewrites the run's folder around it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

WORK = ".work"


@dataclass(frozen=True)
class WorkFolder:
    """path: the run's checkpoint folder; run_hash: the digest a checkpoint there must carry to be resumed."""

    path: Path
    run_hash: str

    @classmethod
    def for_output(cls, parent: str | Path, name: str, defining: Mapping[str, Any]) -> "WorkFolder":
        """The work folder of output ``name`` in ``parent``; ``defining``: what defines the run (JSON-able)."""
        digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()
        return cls(Path(parent) / WORK / name, digest)

    def stage(self, name: str, defining: Mapping[str, Any]) -> "WorkFolder":
        """The work folder of a later stage ``name`` of this run; ``defining``: the stage's own settings."""
        digest = hashlib.sha256(json.dumps({"run": self.run_hash, "stage": defining}, sort_keys=True).encode())
        return WorkFolder(self.path / name, digest.hexdigest())

    def remove(self) -> None:
        """Delete the checkpoint (the output is written), and ``.work`` when nothing else is in it."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass
