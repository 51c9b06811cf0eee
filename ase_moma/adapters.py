"""Houlsby-style bottleneck adapters after each interaction block (MoMa's adapter modules).

Each adapter maps node features x (N, F) laid out as e3nn irreps to
x + up(σ(down(x))), where down halves every irrep's multiplicity, up restores
it, and σ is SiLU on scalars and a sigmoid-of-norm gate on l > 0 blocks. Both
projections are e3nn ``o3.Linear`` maps and σ commutes with rotations, so an
adapter keeps an equivariant backbone equivariant. ``up`` starts at zero: a
fresh adapter is the identity, and training starts from the backbone itself.
"""

from __future__ import annotations

import torch

from ase_moma.backbone import AdapterSite, Backbone
from ase_moma.e3nn_tools import prepare_e3nn


def bottleneck_irreps(irreps: str) -> str:
    """The irreps with every multiplicity halved (at least 1): the bottleneck width."""
    prepare_e3nn()
    from e3nn import o3

    return str(o3.Irreps([(max(1, mul // 2), ir) for mul, ir in o3.Irreps(irreps)]))


class IrrepsGate(torch.nn.Module):
    """SiLU on scalar (0e) channels; each l > 0 irrep scaled by sigmoid(|x|)."""

    def __init__(self, irreps: str) -> None:
        super().__init__()
        prepare_e3nn()
        from e3nn import o3

        self.blocks = [(mul, ir.dim, ir.l == 0 and ir.p == 1, (s.start, s.stop))
                       for (mul, ir), s in zip(o3.Irreps(irreps), o3.Irreps(irreps).slices())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for mul, dim, is_scalar, (start, stop) in self.blocks:
            block = x[:, start:stop]
            if is_scalar:
                parts.append(torch.nn.functional.silu(block))
            else:
                vectors = block.reshape(-1, mul, dim)
                norm = torch.sqrt(vectors.pow(2).sum(-1, keepdim=True) + 1e-12)
                parts.append((vectors * torch.sigmoid(norm)).reshape(-1, mul * dim))
        return torch.cat(parts, dim=1)


class Adapter(torch.nn.Module):
    """One bottleneck adapter for node features with irreps ``irreps``."""

    def __init__(self, irreps: str) -> None:
        super().__init__()
        prepare_e3nn()
        from e3nn import o3

        hidden = bottleneck_irreps(irreps)
        self.irreps = irreps
        self.down = o3.Linear(irreps, hidden)
        self.gate = IrrepsGate(hidden)
        self.up = o3.Linear(hidden, irreps)
        with torch.no_grad():
            self.up.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.gate(self.down(x)))


class AdapterSet(torch.nn.Module):
    """One adapter per site of a backbone, attached by forward hooks.

    State-dict keys are ``<site>.down.weight`` and ``<site>.up.weight`` (dots in
    a site name become ``-``), so adapter modules of one backbone line up name by
    name for merging.
    """

    def __init__(self, sites: list[AdapterSite]) -> None:
        super().__init__()
        self.sites = list(sites)
        self.adapters = torch.nn.ModuleDict({_key(site.name): Adapter(site.irreps) for site in self.sites})
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @classmethod
    def for_backbone(cls, backbone: Backbone) -> "AdapterSet":
        """Fresh (identity) adapters for every site of ``backbone``, on its device and dtype."""
        return cls(backbone.adapter_sites()).to(device=backbone.device, dtype=backbone.dtype)

    def attach(self, backbone: Backbone) -> None:
        """Insert the adapters into ``backbone``'s forward passes (detaching any earlier hooks)."""
        sites = {site.name: site.irreps for site in backbone.adapter_sites()}
        for site in self.sites:
            if sites.get(site.name) != site.irreps:
                raise ValueError(
                    f"adapter site {site.name} ({site.irreps}) does not match the "
                    f"{backbone.name} backbone's sites {sites}"
                )
        self.detach()
        self._handles = [backbone.hook_node_features(site.name, self.adapters[_key(site.name)])
                         for site in self.sites]

    def detach(self) -> None:
        """Remove the adapters from the backbone's forward passes."""
        for handle in self._handles:
            handle.remove()
        self._handles = []



def _key(site: str) -> str:
    return site.replace(".", "-")
