"""A toy third-party distribution pip-installed into a directory of its own, so that a subprocess with
that directory on PYTHONPATH sees its entry points and this environment is left untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def install_into(source: Path, target: Path) -> Path:
    """pip-install the distribution at ``source`` (no dependencies, no build isolation) into ``target``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target
