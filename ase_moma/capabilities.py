"""What a backbone can do, declared on its class and checked before any work starts.

Each :class:`~ase_moma.backbone.Backbone` subclass sets ``capabilities``; the
registry lists them, and every feature that needs one (a spin head needs
``energy_terms``, adapter modules need ``adapters``, sparse fine-tuning needs
``path_weights`` …) calls :func:`require` first, so an unsupported combination
is refused with the backbone and the missing capability named, before any data
is read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ase_moma.errors import AseMomaError


@dataclass(frozen=True)
class Capabilities:
    """Flags of one backbone family.

    forces, stress: by autograd from the energy. magmoms: the model itself
    predicts per-atom moments (CHGNet). adapters: adapter sites after its
    interaction blocks (adapter modules). energy_terms: an extra energy term
    (a spin head) can be added before differentiating. path_weights: tagged
    weights for sparse/LoRA fine-tuning. readout: names its read-out layers
    (the ``readout`` fine-tuning baseline). reference_energies: per-element
    reference energies that can be refitted. parity: equivariant under
    inversion as well as rotation (False: rotations only, e.g. SevenNet-0).
    """

    forces: bool = True
    stress: bool = True
    magmoms: bool = False
    adapters: bool = False
    energy_terms: bool = False
    path_weights: bool = False
    readout: bool = False
    reference_energies: bool = False
    parity: bool = True

    def names(self) -> list[str]:
        """The capabilities that are on, in declaration order (``parity`` included)."""
        return [f.name for f in fields(self) if getattr(self, f.name)]

    def summary(self) -> str:
        """A one-line listing, e.g. ``forces stress adapters path_weights``."""
        return " ".join(self.names()) or "none"


class MissingCapability(AseMomaError, ValueError):
    """The backbone lacks a capability the requested feature needs."""


def require(capabilities: Capabilities, backbone: str, purpose: str, *needed: str) -> None:
    """MissingCapability naming ``backbone``, ``purpose`` and every needed flag that is off."""
    unknown = [name for name in needed if name not in {f.name for f in fields(Capabilities)}]
    if unknown:
        raise ValueError(f"unknown capabilities {unknown}")
    missing = [name for name in needed if not getattr(capabilities, name)]
    if missing:
        raise MissingCapability(
            f"the {backbone} backbone cannot do {purpose}: it lacks {', '.join(missing)} "
            f"(it has: {capabilities.summary()})")
