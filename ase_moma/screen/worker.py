"""What evaluates one shard of candidates: the model loaded once from its spec, then relax and predict.

A worker never receives a model object, only a :class:`ModelSpec` (names and paths), so a Ray actor on
another machine loads the same model from the same files, and nothing is unpickled from a stranger.
Structures travel as extended XYZ text.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import ase.io
from ase import Atoms

ShardItem = tuple[int, str, str | None, str | None]
"""(index, id, extended XYZ of the structure or None, error or None): one candidate on the wire."""


@dataclass(frozen=True)
class ModelSpec:
    """How to build the screening model anywhere: the potential (a registered backbone or a saved-model
    folder, absolute), its checkpoint, device and dtype; property models (saved-model folders) predicted
    on the final structures; and the relaxation (``relax``, ``cell``, ``fmax`` eV/Å, ``steps``)."""

    model: str
    source: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    properties: tuple[str, ...] = field(default_factory=tuple)
    relax: bool = False
    cell: bool = False
    fmax: float = 0.05
    steps: int = 200

    def record(self) -> dict[str, Any]:
        """The spec as run.json stores it (JSON types: the properties as a list)."""
        return dict(asdict(self), properties=list(self.properties))


def to_text(atoms: Atoms) -> str:
    """One structure as extended XYZ text (with its calculator's results when it has them)."""
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def from_text(text: str) -> Atoms:
    return ase.io.read(io.StringIO(text), format="extxyz")


class ShardWorker:
    """Loads the spec's models once; :meth:`compute` turns a shard into result rows, one per candidate."""

    def __init__(self, spec: ModelSpec) -> None:
        from ase_moma import load_backbone, load_calculator

        self.spec = spec
        self.backbone = load_backbone(spec.model, spec.source, device=spec.device, dtype=spec.dtype)
        self.properties = [load_calculator(path, device=spec.device, dtype=spec.dtype) for path in spec.properties]

    def targets(self) -> list[str]:
        """The property columns this worker fills, in order."""
        return [calc.model.target for calc in self.properties]

    def pid(self) -> int:
        import os

        return os.getpid()

    def compute(self, shard: list[ShardItem]) -> list[dict[str, Any]]:
        """One row per candidate of ``shard``, in order; a candidate that fails gets its error instead."""
        rows: dict[int, dict[str, Any]] = {}
        good: list[tuple[int, str, Atoms]] = []
        for index, label, text, error in shard:
            if error is not None:
                rows[index] = self._error_row(index, label, None, error)
                continue
            atoms = from_text(text)
            try:
                self.backbone.graph(atoms)  # an element the model lacks, overlapping atoms: this row, not the run
            except (ValueError, TypeError) as failure:
                rows[index] = self._error_row(index, label, atoms, f"{type(failure).__name__}: {failure}")
                continue
            good.append((index, label, atoms))
        for (index, label, _), result in zip(good, self._evaluate([atoms for _, _, atoms in good])):
            rows[index] = (self._error_row(index, label, result["atoms"], result["error"])
                           if isinstance(result, dict) else self._row(index, label, result))
        return [rows[index] for index, *_ in shard]

    def _evaluate(self, structures: list[Atoms]) -> list[Any]:
        """Final structures with energies (relaxed when asked), all together; one at a time when the
        batch fails, so that only the structure at fault becomes an error."""
        try:
            return self._final(structures)
        except Exception:
            if len(structures) == 1:
                raise
        results: list[Any] = []
        for atoms in structures:
            try:
                results.append(self._final([atoms])[0])
            except Exception as failure:
                results.append({"error": f"{type(failure).__name__}: {failure}", "atoms": atoms})
        return results

    def _final(self, structures: list[Atoms]) -> list[Atoms]:
        from ase.calculators.singlepoint import SinglePointCalculator

        from ase_moma.calculators.batch import predict
        from ase_moma.simulate import relax_many

        if not structures:
            return []
        if self.spec.relax:
            final = relax_many(structures, self.backbone, fmax=self.spec.fmax, steps=self.spec.steps,
                               cell=self.spec.cell)
        else:
            final = [atoms.copy() for atoms in structures]
            for atoms, result in zip(final, predict(self.backbone, final, progress=False)):
                atoms.calc = SinglePointCalculator(atoms, **result)
        for calc in self.properties:
            for atoms, value in zip(final, calc.predict(final)):
                atoms.info[calc.model.target] = value
        return final

    def _row(self, index: int, label: str, atoms: Atoms) -> dict[str, Any]:
        energy = float(atoms.get_potential_energy())
        row = {"index": index, "id": label, "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms),
               "energy": energy, "energy_per_atom": energy / len(atoms),
               "relax_converged": atoms.info.get("relax_converged") if self.spec.relax else None,
               "relax_steps": atoms.info.get("relax_steps") if self.spec.relax else None,
               "structure": to_text(atoms), "error": None}
        for target in self.targets():
            row[target] = float(atoms.info[target])
        return row

    def _error_row(self, index: int, label: str, atoms: Atoms | None, error: str) -> dict[str, Any]:
        row = {"index": index, "id": label, "formula": atoms.get_chemical_formula() if atoms is not None else None,
               "n_atoms": len(atoms) if atoms is not None else None, "energy": math.nan,
               "energy_per_atom": math.nan, "relax_converged": None, "relax_steps": None,
               "structure": to_text(atoms) if atoms is not None else None, "error": error}
        for target in self.targets():
            row[target] = math.nan
        return row
