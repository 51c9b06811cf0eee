"""Shared fixtures: one loaded calculator per backbone and dtype, test structures, real data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

import ase_moma  # noqa: F401  (allow-lists slice so e3nn imports)
from ase_moma import load_calculator

sys.path.insert(0, str(Path(__file__).parent))
from model_factories import (  # noqa: E402
    save_jmp_model,
    save_mace_model_file,
    save_matgl_potential,
    save_orb_checkpoint,
)
from ase_moma.plugins.mace import save_mace  # noqa: E402
from built_once import built_once  # noqa: E402
from hub_fixtures import hub, hub_data, sevennet  # noqa: E402,F401  (session fixtures)

DATA = Path(__file__).resolve().parents[1] / "data"  # the small real sets shipped in the repository
BACKBONES = ["sevennet", "chgnet", "mace", "orb", "matgl", "jmp"]


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on a 2-core machine, each test file on one
    worker so its module fixtures are built once), each worker computes on one thread, so the two share
    the cores instead of each starting two threads."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"  # for the command-line tests' subprocesses too
        torch.set_num_threads(1)


@pytest.fixture
def ray_turn(tmp_path_factory):
    """Tests that start Ray clusters take turns across pytest-xdist workers: one of them stops every Ray
    process on the machine (`ray stop --force`), and a cluster started beside another could be joined by
    it. An exclusive lock on a file all workers share (the parent of each worker's base temporary folder)."""
    import fcntl

    with open(tmp_path_factory.getbasetemp().parent / "ray_turn.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def default_dtype_left_alone():
    """No test (and nothing it calls) leaves torch's default dtype changed: users' processes keep theirs."""
    import torch

    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    torch.set_default_dtype(before)
    assert after == before, f"torch's default dtype was left at {after}"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, str | None]:
    """Where each backbone's weights come from: embedded (None), or built and saved once per test run."""
    folder = built_once(tmp_path_factory, "models", _save_models)
    return {"sevennet": None, "chgnet": None, **json.loads((folder / "sources.json").read_text())}


def _save_models(folder: Path) -> None:
    """Small random-weight models of the backbones whose weights do not ship in a wheel, and sources.json."""
    folder.mkdir(parents=True)
    mace_file = save_mace_model_file(folder / "small.model")
    calc = load_calculator("mace", str(mace_file), device="cpu", trust_pickle=True)
    save_mace(calc.backbone.model, folder / "mace_safe")
    paths = {"mace": folder / "mace_safe", "mace_pickle": mace_file, "orb": save_orb_checkpoint(folder),
             "matgl": save_matgl_potential(folder), "jmp": save_jmp_model(folder)}
    (folder / "sources.json").write_text(json.dumps({name: str(path) for name, path in paths.items()}))


_CALCS: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="session")
def calculator(sources):
    """``calculator(name, dtype)`` → a cached MomaCalculator on the CPU."""

    def get(name: str, dtype: str = "float64"):
        if name == "chgnet":
            dtype = "float32"  # chgnet hard-codes float32
        key = (name, dtype)
        if key not in _CALCS:
            _CALCS[key] = load_calculator(name, sources[name], device="cpu", dtype=dtype)
        return _CALCS[key]

    return get


@pytest.fixture
def silicon() -> Atoms:
    """A rattled 8-atom diamond Si cell, slightly strained so stress is non-trivial."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.set_cell(atoms.cell * [1.01, 0.99, 1.0], scale_atoms=True)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def sic() -> Atoms:
    """A rattled, sheared 2-atom SiC cell (cheap for finite differences)."""
    atoms = bulk("SiC", "zincblende", 4.36)
    cell = atoms.cell.array.copy()
    cell[0, 1] += 0.08
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.04, seed=5)
    return atoms


@pytest.fixture
def methane() -> Atoms:
    """A non-periodic CH4 molecule, slightly distorted."""
    atoms = molecule("CH4")
    atoms.rattle(0.03, seed=7)
    return atoms


def real_frames(name: str, count: int) -> list[Atoms]:
    """The first ``count`` frames of a data/mlip file (mlearn subsets shipped in the repository)."""
    import ase.io

    path = DATA / "mlip" / name
    return [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in ase.io.read(path, f":{count}")]


def random_rotation(seed: int) -> np.ndarray:
    """A proper rotation matrix (det +1)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()
