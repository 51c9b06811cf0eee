"""Saved-model kinds: folders that ase-moma (or a third party) writes and loads back as models.

Each kind is a :class:`SavedModelKind` subclass registered in the entry-point
group ``ase_moma.saved_models`` (``name = module:Class``), exactly like
backbones are in ``ase_moma.backbones``. ase-moma registers three: ``composed``
(``ase-moma compose`` output), ``tuned`` (``ase-moma finetune --backbone``
output) and ``module`` (a hub module folder). A kind's classes are imported only
when a path that exists is being identified, so loading a plain backbone by
name imports none of them.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from ase_moma.backbone import Backbone

GROUP = "ase_moma.saved_models"


class SavedModelKind:
    """One kind of saved-model folder: how to recognise it and how to load it.

    marker: the file whose presence identifies the kind (a kind may instead
    override :meth:`detect`). loader: ``loader(path, device, dtype)`` → the
    saved model as a backbone. description: one line for listings.
    """

    name: ClassVar[str]
    marker: ClassVar[str]
    loader: ClassVar[Callable[..., Backbone]]
    description: ClassVar[str] = ""

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` (an existing directory) is a folder of this kind; reads no weights."""
        return (path / cls.marker).is_file()

    @classmethod
    def load_backbone(cls, path: Path, device: str | torch.device = "auto",
                      dtype: str | torch.dtype = "float32") -> Backbone:
        """The saved model as a backbone (energy, forces, stress, node features), checksums verified."""
        return cls.loader(path, device, dtype)

    @classmethod
    def property_model(cls, path: Path, device: str | torch.device = "auto",
                       dtype: str | torch.dtype = "float32") -> Any:
        """The saved model's property model (a PropertyModel) when it predicts a property, else None."""
        return None

    @classmethod
    def load_calculator(cls, path: Path, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "float32") -> Any:
        """An ASE calculator: the property's when the saved model predicts one, else energy/forces/stress."""
        from ase_moma.calculators import MomaCalculator, PropertyCalculator

        model = cls.property_model(path, device, dtype)
        if model is not None:
            return PropertyCalculator(model)
        return MomaCalculator(cls.load_backbone(path, device, dtype))


def saved_kinds() -> dict[str, EntryPoint]:
    """The registered kinds by name (entry points, not yet imported)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def kind_of(path: str | Path | None) -> type[SavedModelKind] | None:
    """The kind whose ``detect`` accepts ``path``, or None (also for a path that is not a directory)."""
    if path is None or not Path(path).is_dir():
        return None
    for name, ep in sorted(saved_kinds().items()):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, SavedModelKind)):
            raise TypeError(f"entry point {name} = {ep.value} in {GROUP} is not a SavedModelKind subclass")
        if cls.detect(Path(path)):
            return cls
    return None
