"""The installed version of ase-moma, for records written to disk (module.json, recipes, finetune.json)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ase-moma")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

CREATED_BY = f"ase-moma {__version__}"
