"""Leaving the user's process as it was found: environment, torch's default dtype and thread count.

Some upstream packages change process-wide state on import — mace sets
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which turns every later plain ``torch.load``
in the user's own code into an unrestricted unpickler. Loading a backbone runs
inside :func:`kept_process_state`, which puts such changes back.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def kept_process_state() -> Iterator[None]:
    """Run the block, then restore ``os.environ``, the default dtype and the number of threads."""
    environment = dict(os.environ)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        yield
    finally:
        for key in [key for key in os.environ if key not in environment]:
            del os.environ[key]
        for key, value in environment.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        if torch.get_default_dtype() != dtype:
            torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
