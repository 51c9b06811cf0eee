"""An ASE calculator for one per-structure property: a fine-tuned property model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_moma.calculators.moma import model_parameters
from ase_moma.property_model import PropertyModel
from ase_moma.structures import as_atoms

if TYPE_CHECKING:
    from ase_moma.modalities.fused_model import FusedPropertyModel


class PropertyCalculator(Calculator):
    """ASE calculator whose one result is ``model.target`` (e.g. ``"band_gap"``), in ``model.unit``.

    ``calc.get_property(model.target, atoms)`` evaluates one structure;
    :meth:`predict` evaluates many in batches (property screening). A model
    that reads other views than the graph (a FusedPropertyModel) also says how
    much each view weighed and which were missing: ``calc.notes`` after
    ``get_property``, or :meth:`predict_with_notes`.
    """

    def __init__(self, model: PropertyModel | FusedPropertyModel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not model.target:
            raise ValueError("the property model does not record which target it predicts")
        self.model = model.eval()
        self.implemented_properties = [model.target]
        self.parameters.update(model_parameters(model.backbone), target=model.target, unit=model.unit)
        self.notes: dict[str, Any] = {}

    @property
    def name(self) -> str:  # shown by ASE in trajectories and errors
        return f"ase-moma[{self.model.backbone.name}:{self.model.target}]"

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        values, notes = self.predict_with_notes([self.atoms])
        self.results = {self.model.target: values[0]}
        self.notes = notes[0]

    def predict(self, structures: Iterable[Any], batch_size: int = 32) -> list[float]:
        """The property of every structure (Atoms or pymatgen objects), in input order."""
        return self.model.predict([as_atoms(s) for s in structures], batch_size).tolist()

    def predict_with_notes(self, structures: Iterable[Any], batch_size: int = 32) -> tuple[list[float], list[dict]]:
        """:meth:`predict` and, per structure, what to note in its ``atoms.info`` beside the value: for a
        fused model ``fusion_gate_<view>`` for each view and ``fusion_missing`` (the views it lacked);
        nothing for a graph-only model."""
        frames = [as_atoms(s) for s in structures]
        explain = getattr(self.model, "explain", None)
        if explain is None:
            return self.model.predict(frames, batch_size).tolist(), [{} for _ in frames]
        prediction = explain(frames, batch_size)
        return prediction.values.tolist(), [prediction.notes(row) for row in range(len(frames))]
