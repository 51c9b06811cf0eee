"""Views of a structure a property model can read beside its graph: text, composition and structure.

Each is a frozen, offline encoder behind :class:`Modality` (``encode(structures)`` → features and
a mask of which structures have this view); see ``docs/api.md``.
"""

from ase_moma.modalities.base import Encoded, Modality
from ase_moma.modalities.composition import CompositionModality
from ase_moma.modalities.descriptions import Describer, structure_key
from ase_moma.modalities.structure import StructureModality
from ase_moma.modalities.text import TextModality

__all__ = ["CompositionModality", "Describer", "Encoded", "Modality", "StructureModality", "TextModality",
           "structure_key"]
