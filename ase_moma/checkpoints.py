"""Reading checkpoints that upstream packages write with ``torch.save``.

ase-moma never unpickles a file without restriction: upstream checkpoints (a
SevenNet ``.pth``, a CHGNet ``.pth.tar``, an Orb ``.ckpt``) are read through
PyTorch's weights-only unpickler, which builds tensors, plain containers and
plain numpy arrays and refuses any other object, so a hostile file cannot run
code. A file that needs more than that is refused with an explanation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_moma.errors import AseMomaError

_RECONSTRUCT = np._core.multiarray._reconstruct
_NUMPY_GLOBALS: list[Any] = [
    np.dtype,
    np.ndarray,
    _RECONSTRUCT,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
] + [type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"]


class UnsafeCheckpointError(AseMomaError, ValueError):
    """The checkpoint holds objects that only a full (code-running) unpickle can build."""


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``Path(path)`` if it is an existing file, else FileNotFoundError naming it."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{what} not found: {resolved}")
    return resolved


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Read a ``torch.save`` file with the weights-only unpickler, onto the CPU.

    Raises FileNotFoundError for a missing file and UnsafeCheckpointError when the
    file holds anything beyond tensors, containers and numeric numpy arrays.
    """
    resolved = require_file(path, what)
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS + [slice]):
            return torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Unsupported global" in str(error) or "Weights only load failed" in str(error):
            raise UnsafeCheckpointError(
                f"{resolved} holds pickled Python objects beyond tensors and arrays; "
                "ase-moma reads such files only through PyTorch's weights-only loader, "
                "because unpickling them can run arbitrary code"
            ) from None
        raise ValueError(f"{resolved} is not a readable PyTorch checkpoint: {error}") from None
