"""GemNet-OC's basis functions of distances and angles, and their learnt projections.

Distances d are scaled to d / cutoff ∈ [0, 1]: 128 Gaussians with centres spread evenly
over [0, 1], times a degree-5 polynomial envelope that goes to zero with its first two
derivatives at the cut-off. Angles enter through the m = 0 real spherical harmonics
Y_l0(cos φ) = √((2l+1)/4π) P_l(cos φ), l < num_spherical; a dihedral pair through the
outer product of two such sets ("legendre_outer", JMP's choice).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """1 + a x^p + b x^(p+1) + c x^(p+2) for x < 1, else 0 (smooth cut-off)."""

    def __init__(self, exponent: int) -> None:
        super().__init__()
        self.p = float(exponent)
        self.a = -(self.p + 1) * (self.p + 2) / 2
        self.b = self.p * (self.p + 2)
        self.c = -self.p * (self.p + 1) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = 1 + self.a * x ** self.p + self.b * x ** (self.p + 1) + self.c * x ** (self.p + 2)
        return torch.where(x < 1, value, torch.zeros_like(x))


class GaussianBasis(nn.Module):
    """exp(−(x − μ_k)² / 2σ²) for ``count`` centres μ_k evenly in [0, 1], σ their spacing."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.register_buffer("offset", torch.linspace(0.0, 1.0, count))
        self.coeff = -0.5 / (1.0 / (count - 1)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coeff * (x[:, None] - self.offset[None, :]) ** 2)


class RadialBasis(nn.Module):
    """(E,) distances in Å → (E, num_radial) enveloped Gaussians of d / cutoff."""

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int) -> None:
        super().__init__()
        self.inv_cutoff = 1 / cutoff
        self.envelope = PolynomialEnvelope(envelope_exponent)
        self.rbf = GaussianBasis(num_radial)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = d * self.inv_cutoff
        return self.envelope(x)[:, None] * self.rbf(x)


def legendre_harmonics(cosine: torch.Tensor, count: int) -> torch.Tensor:
    """(T,) cosines → (T, count) values of Y_l0, l = 0 … count − 1 (Bonnet's recurrence for P_l)."""
    columns = [torch.ones_like(cosine), cosine][:count]
    for degree in range(2, count):
        columns.append(((2 * degree - 1) * cosine * columns[-1] - (degree - 1) * columns[-2]) / degree)
    norms = [math.sqrt((2 * degree + 1) / (4 * math.pi)) for degree in range(count)]
    return torch.stack([norm * column for norm, column in zip(norms, columns)], dim=1)


class CircularBasis(nn.Module):
    """A radial basis of the edge distances and Y_l0 of the triplet angles (each returned raw)."""

    def __init__(self, num_spherical: int, radial_basis: RadialBasis) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis

    def forward(self, d: torch.Tensor, cosine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.radial_basis(d), legendre_harmonics(cosine, self.num_spherical)


class SphericalBasis(nn.Module):
    """A radial basis and, per quadruplet, Y_l0(cos φ) ⊗ Y_l'0(cos θ) flattened to l·S + l'."""

    def __init__(self, num_spherical: int, radial_basis: RadialBasis) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis

    def forward(self, d: torch.Tensor, cosine: torch.Tensor,
                dihedral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = legendre_harmonics(cosine, self.num_spherical)
        second = legendre_harmonics(torch.cos(dihedral), self.num_spherical)
        return self.radial_basis(d), (first[:, :, None] * second[:, None, :]).flatten(1)


class BasisEmbedding(nn.Module):
    """Learnt projection of a radial basis, paired with an angular basis for the bilinear layers.

    With ``num_spherical``: weight (num_radial, num_spherical, interm); the radial part
    becomes (E, interm, num_spherical). Without: weight (interm, num_radial) → (E, interm).
    """

    def __init__(self, num_radial: int, emb_size_interm: int, num_spherical: int | None = None) -> None:
        super().__init__()
        shape = (emb_size_interm, num_radial) if num_spherical is None else (
            num_radial, num_spherical, emb_size_interm)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.orthogonal_(self.weight)
        self.num_spherical = num_spherical

    def project(self, rad: torch.Tensor) -> torch.Tensor:
        """(E, num_radial) → (E, interm, num_spherical), or (E, interm) without an angular part."""
        if self.num_spherical is None:
            return rad @ self.weight.T
        return (rad @ self.weight.reshape(self.weight.shape[0], -1)).reshape(len(rad), self.weight.shape[2],
                                                                          self.num_spherical)

    def per_member(self, rad: torch.Tensor, sph: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """(members, interm): the group's projected radial part applied to each member's angular part."""
        return (self.project(rad)[group] @ sph[:, :, None]).squeeze(-1)
