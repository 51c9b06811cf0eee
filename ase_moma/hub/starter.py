"""The starter hub that ships with the package: SevenNet-0 modules built from public data.

Property modules: adapters, one per public task, built by ``bench/build_hub.py
--starter``. Potential modules: ``mlearn_<element>_potential``, SevenNet-0
fine-tuned with sparse-L on each mlearn set (BSD-3-Clause; 120 frames of the
training file's 90 % split, both drawn with seed 0, 10 validation frames, 25
test frames of the element's test file; batch 8, 100 steps), built by
``bench/build_hub.py --starter-potentials``. Every module.json records its seed
and the sha256 of the data it was trained and validated on. The hub is copied
out with :func:`write_starter_hub` / ``ase-moma hub starter PATH`` and verified
like any hub before it appears: every file's sha256 and the backbone fingerprint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ase_moma.atomic_io import atomic_directory
from ase_moma.hub.store import HUB_JSON, Hub
from ase_moma.module_files import HubIntegrityError

STARTER_HUB = Path(__file__).with_name("starter")


def write_starter_hub(path: str | os.PathLike, overwrite: bool = False) -> Hub:
    """Copy the starter hub to ``path``, verified; the folder appears whole or not at all."""
    if not (STARTER_HUB / HUB_JSON).is_file():
        raise FileNotFoundError(f"this installation has no starter hub at {STARTER_HUB} "
                                "(build it with `python bench/build_hub.py --starter` from a source checkout)")
    target = Path(path)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        shutil.copytree(STARTER_HUB, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        problems = {name: problem for name, problem in Hub(tmp).verify().items() if problem is not None}
        if problems:
            raise HubIntegrityError(f"the starter hub at {STARTER_HUB} does not verify: "
                                    + "; ".join(f"{name}: {problem}" for name, problem in problems.items()))
    return Hub(target)
