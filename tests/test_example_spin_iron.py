"""examples/spin_iron_md.py runs as the README lists it: it trains a spin head on generated iron, ranks bcc
Fe's two orders and prints their gap beside the PBE reference it ships with, then runs MD in both orders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_spin_iron_example_prints_the_order_gap_beside_its_dft_reference(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES / "spin_iron_md.py"), "--frames", "8", "--epochs", "1",
                          "--steps", "2", "-o", str(tmp_path / "model")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads((EXAMPLES / "fe_bcc_orders_pbe.json").read_text())
    gap = reference["minus_ferromagnetic_meV_per_atom"]["antiferromagnetic"]
    line = next(line for line in run.stdout.splitlines() if line.startswith("orders :"))
    assert re.search(r"E\(AFM\) − E\(FM\) = [+-]\d+\.\d meV/atom", line)
    assert f"DFT: {gap:+.1f}" in line
    assert 400 < gap < 500  # PBE's B2–FM gap of bcc Fe at 2.83 Å (bench/fe_orders_dft.py)
    assert sum(line.startswith("MD ") for line in run.stdout.splitlines()) >= 4  # both orders, start and end
