"""CUDA correctness (marker ``gpu``; skipped without a CUDA device): our calculator against SevenNet's own,
both dtypes, energy conservation, batched against single runs, composed and tuned models in MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from md_checks import NVE_BOUND, nve_spread

from ase_moma import load_backbone, load_calculator
from ase_moma.simulate import relax_many

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _silicon() -> object:
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=0)
    return atoms


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_calculator_matches_sevennet_on_cuda(dtype):
    from sevenn.calculator import SevenNetCalculator

    ours, native = _silicon(), _silicon()
    ours.calc = load_calculator("sevennet", device="cuda", dtype=dtype)
    native.calc = SevenNetCalculator("7net-0", device="cuda")
    tolerance = 1e-4 if dtype == "float32" else 1e-3  # SevenNet's own calculator runs in float32
    assert ours.get_potential_energy() == pytest.approx(native.get_potential_energy(), abs=tolerance * len(ours))
    np.testing.assert_allclose(ours.get_forces(), native.get_forces(), atol=tolerance * 10)


def test_cuda_nve_conserves_energy():
    atoms = _silicon()
    atoms.calc = load_calculator("sevennet", device="cuda", dtype="float64")
    assert nve_spread(atoms, steps=50, temperature=300) < NVE_BOUND


def test_cuda_batched_relaxation_equals_single_runs():
    backbone = load_backbone("sevennet", device="cuda", dtype="float64")
    cells = [_silicon(), bulk("SiC", "zincblende", 4.3)]
    cells[1].rattle(0.05, seed=1)
    together = relax_many(cells, backbone, fmax=0.02, steps=30, cell=True)
    for atoms, start in zip(together, cells):
        alone = relax_many([start], backbone, fmax=0.02, steps=30, cell=True)[0]
        np.testing.assert_allclose(atoms.positions, alone.positions, atol=1e-7)


def test_cuda_tuned_and_composed_models_run_md(tmp_path, hub, hub_data):
    import ase.io

    from potential_fixtures import emt_copper
    from ase_moma.cli import main

    ase.io.write(tmp_path / "train.extxyz", emt_copper(8, 0))
    ase.io.write(tmp_path / "valid.extxyz", emt_copper(4, 1))
    assert main(["finetune", "--backbone", "sevennet", "--train", str(tmp_path / "train.extxyz"), "--valid",
                 str(tmp_path / "valid.extxyz"), "--max-steps", "2", "--batch-size", "4", "-o",
                 str(tmp_path / "tuned"), "--device", "cuda"]) == 0
    copper = emt_copper(1, 5)[0].repeat(2)
    copper.calc = load_calculator(str(tmp_path / "tuned"), device="cuda", dtype="float64")
    assert nve_spread(copper, steps=30, temperature=300) < NVE_BOUND

    from ase_moma.compose import compose

    compose(hub, hub_data["perov"], "heat_all", tmp_path / "composed", strategy="all_average", device="cuda",
            progress=False)
    silicon = _silicon()
    silicon.calc = load_calculator(str(tmp_path / "composed"), device="cuda", dtype="float64")
    assert nve_spread(silicon, steps=30, temperature=300) < NVE_BOUND
