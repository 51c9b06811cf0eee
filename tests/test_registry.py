"""The entry-point registry, a real third-party plugin, and ASE's own plugin listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from third_party_site import install_into

from ase_moma import list_backbones

TOY = Path(__file__).parent / "third_party" / "toy_morse"


def test_our_backbones_are_registered_and_usable():
    rows = {row.name: row for row in list_backbones()}
    ours = ["sevennet", "chgnet", "mace", "orb", "matgl", "jmp"]
    assert set(ours) <= rows.keys()
    assert all(rows[name].usable for name in ours)
    assert rows["sevennet"].embedded and rows["chgnet"].embedded
    assert not rows["mace"].embedded and rows["mace"].distribution == "ase-moma"
    assert not rows["jmp"].embedded and rows["jmp"].capabilities.summary() == (
        "forces stress adapters energy_terms path_weights readout reference_energies parity")


def _run(code: str, path: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    """The toy distribution, pip-installed into its own directory (the environment is untouched)."""
    return install_into(TOY, tmp_path_factory.mktemp("site"))


def test_third_party_distribution_shows_up_and_loads(toy_site):
    out = _run(
        "import json, numpy as np\n"
        "from ase.build import bulk\n"
        "from ase.calculators.fd import calculate_numerical_forces\n"
        "from ase_moma import list_backbones, load_calculator\n"
        "row = [r for r in list_backbones() if r.name == 'morse'][0]\n"
        "atoms = bulk('Cu', 'fcc', 3.6).repeat(2); atoms.rattle(0.05, seed=0)\n"
        "atoms.calc = load_calculator('morse', device='cpu', dtype='float64')\n"
        "fd = np.abs(calculate_numerical_forces(atoms, 1e-4) - atoms.get_forces()).max()\n"
        "print(json.dumps({'dist': row.distribution, 'usable': row.usable,\n"
        "                  'energy': atoms.get_potential_energy(), 'fd': float(fd)}))\n",
        toy_site,
    )
    report = json.loads(out.strip().splitlines()[-1])
    assert report["dist"] == "toy-morse-backbone" and report["usable"]
    assert -200 < report["energy"] < 0  # bound Cu crystal
    assert report["fd"] < 1e-6


def test_registry_lists_the_toy_only_when_installed(tmp_path):
    names = _run("from ase_moma import list_backbones; print([r.name for r in list_backbones()])", tmp_path)
    assert "morse" not in names


def test_ase_lists_our_calculator_without_ase_moma_importing_ase_private_modules():
    listed = _run(
        "import sys, ase_moma\n"
        "assert not [m for m in sys.modules if m.startswith('ase._4')], 'ase_moma imported ase._4'\n"
        "from ase._4.plugins import plugins\n"
        "plugin = [p for p in plugins.calculators if p.name == 'ase-moma'][0]\n"
        "print(plugin.implementation.__name__)\n",
        Path("."),
    )
    assert listed.strip().endswith("MomaCalculator")
