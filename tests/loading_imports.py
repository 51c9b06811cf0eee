"""What loading a saved model imports: a fresh interpreter loads it as a user would, and reports which
training modules came with it (none should: a tuned potential, a hub module or a composition is read
without the code that trained it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TRAINING = ("ase_moma.finetune.trainer", "ase_moma.finetune.pipeline", "ase_moma.finetune.methods",
            "ase_moma.finetune.spin_addon", "ase_moma.spin.exchange_start", "ase_moma.training",
            "ase_moma.hub.training", "ase_moma.compose.finetune", "ase_moma.modalities.fusion_training",
            "schedulefree")


def training_imported_by_loading(folder: Path) -> list[str]:
    """The training modules a fresh interpreter has imported after ``load_calculator(folder)`` and one
    energy (or property) evaluation."""
    code = ("import json, sys\n"
            "from ase_moma import load_calculator\n"
            "load_calculator(sys.argv[1], device='cpu')\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return [m for m in modules if any(m == t or m.startswith(t + ".") for t in TRAINING)]
