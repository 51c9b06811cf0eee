"""Expensive session fixtures built once per test run, whichever pytest-xdist worker asks first."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``name``'s folder, built by ``build(folder)`` the first time any worker of this run asks for it.

    Under pytest-xdist the folder lies beside the workers' own temporary folders (their common parent
    belongs to this run alone); the others wait on a lock while it is built, then read it. Without
    xdist it lies in the run's own temporary folder. A build that fails leaves nothing for the next
    worker to read as finished: the folder only counts once ``build`` has returned.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder
