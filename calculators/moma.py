"""The ase-moma ASE calculator: any registered backbone behind ASE's Calculator API."""

from __future__ import annotations

from typing import Any, Iterable

from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ase_moma.backbone import Backbone
from ase_moma.calculators.batch import predict, split_output
from ase_moma.structures import has_volume

_BASE_PROPERTIES = ["energy", "free_energy", "forces", "stress"]


class MomaCalculator(Calculator):
    """ASE calculator for a loaded :class:`~ase_moma.backbone.Backbone`.

    Results: ``energy``/``free_energy`` (eV), ``forces`` (eV/Å), ``stress``
    (eV/Å³, ASE Voigt order, only for a three-dimensional cell), and
    ``magmoms``/``magmom`` (μB) when the backbone predicts moments.
    ``parameters`` (and so ``todict()`` and trajectories) record which model
    produced the numbers: backbone name, source, weights fingerprint, dtype, device.
    Use :meth:`predict` to evaluate many structures in batches.
    """

    def __init__(self, backbone: Backbone, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.implemented_properties = list(_BASE_PROPERTIES)
        if backbone.capabilities.magmoms:
            self.implemented_properties += ["magmoms", "magmom"]
        self.parameters.update(model_parameters(backbone))

    @property
    def name(self) -> str:  # shown by ASE in trajectories and errors
        return f"ase-moma[{self.backbone.name}]"

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not has_volume(self.atoms):
            raise PropertyNotImplementedError(
                "stress is defined only for a three-dimensional cell; this structure has none"
            )
        batch = self.backbone.collate([self.backbone.graph(self.atoms)])
        out = self.backbone.forward(batch, stress=has_volume(self.atoms))
        self.results = split_output(out, [self.atoms])[0]

    def predict(self, structures: Iterable[Any], batch_size: int = 16,
                progress: bool | None = None) -> list[dict[str, Any]]:
        """Batched evaluation; see :func:`ase_moma.calculators.batch.predict`."""
        return predict(self.backbone, structures, batch_size=batch_size, progress=progress)


def model_parameters(backbone: Backbone) -> dict[str, str | None]:
    """What a calculator records of its model: ``backbone``, ``source`` (as the user named it,
    None for the embedded default), ``fingerprint`` (sha256 of the weights), ``dtype``, ``device``."""
    return {"backbone": backbone.name, "source": backbone.requested_source, "fingerprint": backbone.fingerprint(),
            "dtype": str(backbone.dtype).removeprefix("torch."), "device": str(backbone.device)}
