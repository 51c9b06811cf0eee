"""Session fixtures: a small real SevenNet-0 hub trained on the upstream subsets shipped in data/."""

from __future__ import annotations

from pathlib import Path

import ase.io
import pytest
from built_once import built_once

from ase_moma import load_backbone
from ase_moma.hub import Hub, TrainConfig, train_module

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
MATMINER = DATA.parent / "matminer"  # one matminer task (jarvis_2d_gap_tbmbj) with its seed-0 split
TINY = TrainConfig(epochs=2, batch_size=8, val_fraction=0.25, hidden=32)


def _subset(source: str, tmp: Path) -> Path:
    """A copy of one shipped subset (data/upstream, see data/README.md for how it was cut)."""
    out = tmp / source
    ase.io.write(out, ase.io.read(DATA / source, ":"))
    return out


@pytest.fixture(scope="session")
def hub_data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hubdata")
    return {"perov": _subset("perov_5.extxyz", tmp), "carbon": _subset("carbon_24.extxyz", tmp)}


@pytest.fixture(scope="session")
def sevennet():
    return load_backbone("sevennet", device="cpu")


@pytest.fixture(scope="session")
def hub(tmp_path_factory, hub_data, sevennet) -> Hub:
    """A 5-module SevenNet-0 hub: four full modules (three with heads, one energy module) and an adapter one.
    Built once per test run and read by every pytest-xdist worker (tests copy it before changing it)."""
    return Hub(built_once(tmp_path_factory, "hub", lambda folder: _train_hub(folder, hub_data, sevennet)))


def _train_hub(folder: Path, hub_data: dict[str, Path], sevennet) -> None:
    hub = Hub.create(folder, sevennet)
    train_module(hub, "heat_full", hub_data["perov"], "heat_all", config=TINY, unit="eV/atom",
                 device="cpu", progress=False)
    train_module(hub, "gap_adapter", hub_data["perov"], "ind_gap",
                 config=TrainConfig(**{**TINY.__dict__, "kind": "adapter"}), unit="eV",
                 device="cpu", progress=False)
    train_module(hub, "carbon_energy", hub_data["carbon"], "energy_per_atom", config=TINY,
                 unit="eV/atom", device="cpu", progress=False)
    train_module(hub, "dir_gap_full", hub_data["perov"], "dir_gap", config=TINY, unit="eV",
                 device="cpu", progress=False)
    train_module(hub, "ind_gap_full", hub_data["perov"], "ind_gap", config=TINY, unit="eV",
                 device="cpu", progress=False)
