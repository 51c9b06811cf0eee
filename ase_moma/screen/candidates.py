"""Candidate structures, streamed in a fixed order from an extended XYZ file, a folder of CIF/POSCAR
files, or pymatgen JSON; each gets an id and its position in the input.

A candidate that cannot be read (a broken CIF) is still a candidate: it carries the reason instead of a
structure and becomes an error row, so one bad file never stops a screening.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ase import Atoms

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".json", ".extxyz", ".xyz")


@dataclass
class Candidate:
    """index: position in the input (0-based); id: ``info["id"]`` when the input names it, else the file
    name (a folder) or the index; atoms: the structure, or None with ``error`` saying why it is missing."""

    index: int
    id: str
    atoms: Atoms | None
    error: str | None = None


def read_candidates(source: str | Path) -> Iterator[Candidate]:
    """Every candidate of ``source`` in order: one at a time, never the whole input in memory."""
    path = Path(source)
    if path.is_dir():
        yield from _folder(path)
    elif not path.is_file():
        raise FileNotFoundError(f"candidates {path}: no such file or folder")
    elif path.suffix == ".json":
        yield from _pymatgen_json(path, 0, None)
    else:
        import ase.io

        for index, atoms in enumerate(ase.io.iread(str(path), index=":")):
            yield Candidate(index, str(atoms.info.get("id", index)), atoms)


def count_candidates(source: str | Path) -> int:
    """How many candidates :func:`read_candidates` yields (for progress and the run's record)."""
    return sum(1 for _ in read_candidates(source))


def input_digest(source: str | Path) -> str:
    """sha256 of the input's bytes (a folder: of its candidate files' names and bytes, in order)."""
    path = Path(source)
    digest = hashlib.sha256()
    files = _structure_files(path) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode() if path.is_dir() else b"")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _structure_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and
                  (p.suffix.lower() in STRUCTURE_SUFFIXES or p.name.upper().startswith(("POSCAR", "CONTCAR"))))


def _folder(folder: Path) -> Iterator[Candidate]:
    index = 0
    for file in _structure_files(folder):
        if file.suffix.lower() == ".json":
            for candidate in _pymatgen_json(file, index, file.stem):
                yield candidate
                index += 1
            continue
        try:
            from ase_moma.structures import read_structures

            frames = read_structures(file, "candidate file")
            atoms, error = (frames[0], None) if len(frames) == 1 else (None, f"{file.name} holds {len(frames)} "
                                                                               "structures; give one per file")
        except Exception as failure:  # a broken file is one error row, not the end of the screening
            atoms, error = None, f"{file.name}: {type(failure).__name__}: {failure}"
        yield Candidate(index, file.name, atoms, error)
        index += 1


def _pymatgen_json(path: Path, start: int, name: str | None) -> Iterator[Candidate]:
    """Structures serialised by pymatgen (``Structure.as_dict()``), one or a list of them in one file."""
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        yield Candidate(start, name or path.name, None, f"{path.name} is not JSON: {error}")
        return
    records = content if isinstance(content, list) else [content]
    for offset, record in enumerate(records):
        label = str(record.get("id", f"{name}:{offset}" if name and len(records) > 1 else name or start + offset)) \
            if isinstance(record, dict) else str(start + offset)
        try:
            atoms, error = AseAtomsAdaptor.get_atoms(Structure.from_dict(record)), None
        except Exception as failure:  # one unreadable record is one error row
            atoms, error = None, f"{path.name} record {offset}: {type(failure).__name__}: {failure}"
        yield Candidate(start + offset, label, atoms, error)
