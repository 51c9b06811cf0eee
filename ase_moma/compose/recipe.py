"""A composition's folder and its recipe: file names, the recipe's schema, and its paths kept relative.

OUT/ holds ``recipe.json`` (what was composed and how), ``merged.safetensors``
(the merged weights; absent for a property composition's ``no_hub``) and
``weights.png``. A recipe names files (the hub, the data, a split) relative to
its own folder, so that a project folder holding all of them can move as a whole.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ase_moma.formats import Format
from ase_moma.module_files import read_folder_record

RECIPE = "recipe.json"
MERGED = "merged.safetensors"
CHART = "weights.png"
RECIPE_FORMAT = Format("ase-moma.composition", "composition recipe")
"""The recipe's format (version 1: no migrations yet)."""


def read_recipe(out: str | Path) -> dict[str, Any]:
    """The recipe of a composition folder, its paths absolute; a clear error when ``out`` is not one."""
    return resolve_paths(read_folder_record(out, RECIPE, RECIPE_FORMAT, "a composed model"), Path(out))


PATHS = (("hub",), ("task", "data"), ("task", "split"), ("replayed_from",))
"""Where a recipe names files: stored relative to the recipe's folder, so that a project folder holding the
hub, the data and the composition can move as a whole."""


def relative_paths(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``recipe`` with every path of PATHS relative to ``folder`` (as written into its recipe.json)."""
    return _map_paths(recipe, lambda path: os.path.relpath(Path(path).resolve(), Path(folder).resolve()))


def resolve_paths(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``recipe`` (as read from ``folder``/recipe.json) with every path of PATHS absolute; an absolute path
    (a recipe written before paths were stored relative) stays as it is."""
    return _map_paths(recipe, lambda path: str((Path(folder) / path).resolve()))


def _map_paths(recipe: dict[str, Any], convert) -> dict[str, Any]:
    result = copy.deepcopy(recipe)
    for keys in PATHS:
        holder = result
        for key in keys[:-1]:
            holder = holder.get(key) or {}
        if holder.get(keys[-1]) is not None:
            holder[keys[-1]] = convert(holder[keys[-1]])
    return result
