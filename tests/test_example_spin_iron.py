"""examples/spin_iron_md.py runs as the README lists it: it trains a spin head on the PBE orders of iron it
ships with, ranks bcc Fe's two orders and prints their gap beside the PBE reference, then runs MD in both."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_spin_iron_example_prints_the_order_gap_beside_its_dft_reference(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES / "spin_iron_md.py"), "--epochs", "1", "--steps", "2",
                          "-o", str(tmp_path / "model")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads((EXAMPLES / "fe_bcc_orders_pbe.json").read_text())
    gap = reference["minus_ferromagnetic_meV_per_atom"]["antiferromagnetic"]
    line = next(line for line in run.stdout.splitlines() if line.startswith("orders :"))
    predicted = float(re.search(r"E\(AFM\) − E\(FM\) = ([+-]\d+\.\d) meV/atom", line).group(1))
    assert f"DFT: {gap:+.1f}" in line
    assert 400 < gap < 500  # PBE's B2–FM gap of bcc Fe at 2.83 Å (bench/fe_orders_dft.py)
    # learnt from the shipped PBE orders (bcc at 2.78 and 2.85 Å among them, not 2.83): within 10 % of DFT's
    assert predicted == pytest.approx(gap, rel=0.10)
    assert sum(line.startswith("MD ") for line in run.stdout.splitlines()) >= 4  # both orders, start and end
