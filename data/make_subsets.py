"""How the small data sets in this folder were cut from the shared sources (see README.md here).

Run from the repository root on a machine that has ../shared/data; it rewrites this folder's files
byte for byte the same. Users never need to run it: the files it writes are in the repository.

    python data/make_subsets.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase.io

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
TASK = "jarvis_2d_gap_tbmbj"


def main() -> None:
    if not SHARED.is_dir():
        raise SystemExit(f"the shared sources are not at {SHARED}")
    # matminer (MoE repository, MIT): one whole task, its published seed-0 split and its tasks.json entry
    (HERE / "matminer" / "splits").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED / "matminer" / f"{TASK}.extxyz", HERE / "matminer" / f"{TASK}.extxyz")
    tasks = json.loads((SHARED / "matminer" / "tasks.json").read_text())
    (HERE / "matminer" / "tasks.json").write_text(json.dumps({TASK: tasks[TASK]}, indent=1) + "\n")
    split = json.loads((SHARED / "matminer" / "splits" / "seed0.json").read_text())
    (HERE / "matminer" / "splits" / "seed0.json").write_text(json.dumps({TASK: split[TASK]}) + "\n")
    # cdvae (MIT): every 17th perovskite of the first 1,632, half with an indirect gap; every 131st carbon
    (HERE / "upstream").mkdir(exist_ok=True)
    perov = ase.io.read(SHARED / "upstream" / "perov_5.extxyz", ":1632:17")
    gapped = [a for a in perov if a.info["ind_gap"] > 0][:12] + [a for a in perov if a.info["ind_gap"] <= 0][:12]
    ase.io.write(HERE / "upstream" / "perov_5.extxyz", gapped)
    ase.io.write(HERE / "upstream" / "carbon_24.extxyz", ase.io.read(SHARED / "upstream" / "carbon_24.extxyz",
                                                                     ":6288:131")[:12])
    # mlearn (BSD-3-Clause): the Si training frames of at most 24 atoms; the first four and the two smallest
    # Si test frames; the first two Mo test frames
    (HERE / "mlip").mkdir(exist_ok=True)
    mlip = SHARED / "mlip"
    ase.io.write(HERE / "mlip" / "mlearn_Si_training.extxyz",
                 [a for a in ase.io.read(mlip / "mlearn_Si_training.extxyz", ":") if len(a) <= 24])
    si_test = ase.io.read(mlip / "mlearn_Si_test.extxyz", ":")
    smallest = sorted(range(len(si_test)), key=lambda i: len(si_test[i]))[:2]
    ase.io.write(HERE / "mlip" / "mlearn_Si_test.extxyz",
                 [si_test[i] for i in [0, 1, 2, 3, *(i for i in smallest if i > 3)]])
    ase.io.write(HERE / "mlip" / "mlearn_Mo_test.extxyz", ase.io.read(mlip / "mlearn_Mo_test.extxyz", ":2"))


if __name__ == "__main__":
    main()
