"""An ASE calculator for one per-structure property: a fine-tuned property model."""

from __future__ import annotations

from typing import Any, Iterable

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_moma.calculators.moma import model_parameters
from ase_moma.property_model import PropertyModel
from ase_moma.structures import as_atoms


class PropertyCalculator(Calculator):
    """ASE calculator whose one result is ``model.target`` (e.g. ``"band_gap"``), in ``model.unit``.

    ``calc.get_property(model.target, atoms)`` evaluates one structure;
    :meth:`predict` evaluates many in batches (property screening).
    """

    def __init__(self, model: PropertyModel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not model.target:
            raise ValueError("the property model does not record which target it predicts")
        self.model = model.eval()
        self.implemented_properties = [model.target]
        self.parameters.update(model_parameters(model.backbone), target=model.target, unit=model.unit)

    @property
    def name(self) -> str:  # shown by ASE in trajectories and errors
        return f"ase-moma[{self.model.backbone.name}:{self.model.target}]"

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = {self.model.target: float(self.model.predict([self.atoms])[0])}

    def predict(self, structures: Iterable[Any], batch_size: int = 32) -> list[float]:
        """The property of every structure (Atoms or pymatgen objects), in input order."""
        return self.model.predict([as_atoms(s) for s in structures], batch_size).tolist()
