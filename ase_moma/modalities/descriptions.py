"""robocrystallographer descriptions of structures, cached on disk by a hash of the structure.

robocrys takes a quarter of a second to a second a structure (symmetry, near neighbours, polyhedra), so each
description is computed once: one small JSON file per structure in the cache folder, keyed by the species,
positions, cell and periodicity and by robocrys's version. A structure robocrys cannot describe
(symmetry or Voronoi failures are common) is cached with its reason, so it is not retried. The
mineral matcher stays off (it compares against a database, slowly), and molecules are never looked up
online (PubChem): a screening node has no network, and a description must not depend on one.

robocrys builds a new molecule namer for every structure it condenses, reading its molecule database
(about half a second, two thirds of a two-atom crystal's description) each time; a :class:`Describer` builds one and lends it to
robocrys for each of its calls (:func:`_lent_namer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator

from ase import Atoms

from ase_moma.atomic_io import atomic_file
from ase_moma.structures import add_geometry


NAMES = ", molecules named offline, connections in one order"
"""Part of every cache key: entries written while robocrys could look names up online, or before
:func:`canonical`, are not reused."""


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/ase-moma/descriptions`` (``~/.cache/...`` when the variable is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ase-moma" / "descriptions"


def structure_key(atoms: Atoms) -> str:
    """sha256 of the species, positions and cell (to 1e-6 Å) and periodicity, robocrys's version and how its
    text is made (:data:`NAMES`)."""
    digest = hashlib.sha256(f"robocrys {version('robocrys')}{NAMES}".encode())
    add_geometry(digest, atoms, decimals=6)
    return digest.hexdigest()


class Describer:
    """Text descriptions of structures: ``describe(atoms) -> (text or None, reason or None)``.

    folder: the cache (default :func:`default_cache`). ``counts`` tallies ``described`` (computed
    now), ``cached`` (read back) and ``seconds`` spent describing.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache()
        self.counts = {"described": 0, "cached": 0, "seconds": 0.0}
        self._tools = None

    def describe(self, atoms: Atoms) -> tuple[str | None, str | None]:
        key = structure_key(atoms)
        path = self.folder / key[:2] / f"{key}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            self.counts["cached"] += 1
            return record["text"], record["missing"]
        start = time.perf_counter()
        text, missing = self._describe(atoms)
        self.counts["seconds"] += time.perf_counter() - start
        self.counts["described"] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps({"text": text, "missing": missing}))
        return text, missing

    def _describe(self, atoms: Atoms) -> tuple[str | None, str | None]:
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            return None, "robocrys describes periodic crystals; this structure has no full cell"
        from pymatgen.io.ase import AseAtomsAdaptor

        if self._tools is None:
            from robocrys import StructureCondenser, StructureDescriber
            from robocrys.condense.molecule import MoleculeNamer

            self._tools = (StructureCondenser(mineral_matcher=False), StructureDescriber(),
                           MoleculeNamer(use_online_pubchem=False))
        condenser, describer, namer = self._tools
        try:
            # per-site notes from the libraries robocrys calls are not for the user:
            with warnings.catch_warnings(), _lent_namer(namer):
                warnings.filterwarnings("ignore", message="CrystalNN: cannot locate an appropriate radius")
                warnings.filterwarnings("ignore", message="No oxidation states specified on sites")
                warnings.filterwarnings("ignore", message="Set OLD_ERROR_HANDLING to false", module="spglib")
                warnings.filterwarnings("ignore", message="gcd is deprecated", category=FutureWarning)
                warnings.filterwarnings("ignore", message="Molecule naming requires openbabel")  # formula instead
                text = describer.describe(condenser.condense_structure(AseAtomsAdaptor.get_structure(atoms)))
            return canonical(text), None
        except Exception as error:  # robocrys fails on some structures (symmetry, Voronoi): recorded, not raised
            return None, f"robocrys failed: {type(error).__name__}: {error}"


_MIXTURE = re.compile(r"a mixture of (distorted )?([a-z]+(?:, [a-z]+)*,? and [a-z]+)-sharing")
_NUMPY_SCALAR = re.compile(r"np\.(?:int|float)\d*\(([^()]*)\)")


def canonical(text: str) -> str:
    """``text`` as robocrys means it, the same in every process.

    robocrys lists the kinds of a polyhedron's connections from a set of strings, so their order followed
    Python's per-process string hashing: one structure read "corner and edge-sharing" in one process and
    "edge and corner-sharing" in the next (11 of 50 JARVIS 2D and perovskite structures, three
    PYTHONHASHSEEDs), and its text features with it. Each "a mixture of ...-sharing" lists its kinds
    alphabetically here. Under NumPy 2 robocrys also writes a sheet's direction as
    ``(np.int64(0), np.int64(0), np.int64(1))``; numbers are written as numbers."""

    def ordered(match: re.Match) -> str:
        kinds = sorted(re.split(r",? and |, ", match.group(2)))
        listed = " and ".join(kinds) if len(kinds) == 2 else f"{', '.join(kinds[:-1])}, and {kinds[-1]}"
        return f"a mixture of {match.group(1) or ''}{listed}-sharing"

    return _NUMPY_SCALAR.sub(r"\1", _MIXTURE.sub(ordered, text))


_LENDING = threading.Lock()


@contextlib.contextmanager
def _lent_namer(namer: Any) -> Iterator[None]:
    """For the duration of the block, robocrys's condenser takes ``namer`` where it would build its own
    ``MoleculeNamer()``; robocrys's module is left as it was afterwards. One block at a time in a process
    (robocrys holds the interpreter's lock while it works anyway), so threads cannot undo each other's loan."""
    from robocrys.condense import condenser

    with _LENDING:
        built = condenser.MoleculeNamer
        condenser.MoleculeNamer = lambda: namer
        try:
            yield
        finally:
            condenser.MoleculeNamer = built
