"""One small interface for every view of a structure a property model can read.

A modality encodes structures into one feature vector each and says which structures it could not
encode: ``encode(structures) -> Encoded(features (B, F), present (B,), missing {index: reason})``.
A structure an encoder cannot handle gets a missing row (zeros, ``present`` False, the reason
recorded), never a crash, so that a fusion head can fall back on the other views. ``identity()``
names the encoder and hashes what it computes with, so a saved model can refuse an installed
encoder that differs from the one it was trained with.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ase import Atoms


@dataclass
class Encoded:
    """features: (B, F) float64, zero rows where missing; present: (B,) bool; missing: {row: why}."""

    features: np.ndarray
    present: np.ndarray
    missing: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.present.shape != (self.features.shape[0],):
            raise ValueError(f"features must be (B, F) with a (B,) mask, got {self.features.shape} and "
                             f"{self.present.shape}")


class Modality(abc.ABC):
    """A frozen encoder of one view of a structure (text, composition, ...)."""

    name: str

    @property
    @abc.abstractmethod
    def width(self) -> int:
        """F, the length of one structure's feature vector."""

    @abc.abstractmethod
    def encode(self, structures: Sequence[Atoms]) -> Encoded:
        """(B, F) features of ``structures`` and which of them could be encoded."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What produced the features: encoder name, versions, and a sha256 of its weights or tables."""
