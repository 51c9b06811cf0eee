"""Small real models built with each package's own constructors, for backbones whose
pretrained weights cannot be had offline (MACE-MP, Orb, matgl). They are saved the
way each package saves a user's checkpoint and loaded back through ase-moma's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ELEMENTS = [1, 6, 8, 14]  # H, C, O, Si


def build_mace(seed: int = 0) -> torch.nn.Module:
    """A two-interaction ScaleShiftMACE (32x0e+32x1o, l_max 2) over H, C, O, Si."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    return modules.ScaleShiftMACE(
        r_max=4.5, num_bessel=8, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps("32x0e+32x1o"),
        MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu,
        atomic_energies=np.array([-13.6, -1030.0, -2040.0, -4.0]), avg_num_neighbors=8.0,
        atomic_numbers=ELEMENTS, correlation=3, radial_type="bessel",
        atomic_inter_scale=1.2, atomic_inter_shift=0.1,
    )


def save_mace_model_file(path: Path, seed: int = 0) -> Path:
    """A mace-torch ``.model`` file, written as mace-torch's trainer writes one."""
    torch.save(build_mace(seed), path)
    return path


def save_orb_checkpoint(directory: Path, seed: int = 0) -> Path:
    """An orb-v3 conservative (inf, omat) model at its released size with random weights,
    saved as Orb releases its checkpoints: a bare state dict named after the architecture."""
    from orb_models.forcefield.atomic_system import SystemConfig
    from orb_models.forcefield.pretrained import orb_v3_conservative_architecture

    torch.manual_seed(seed)
    model = orb_v3_conservative_architecture(
        device="cpu", system_config=SystemConfig(radius=6.0, max_num_neighbors=120))
    path = directory / "orb-v3-conservative-inf-omat-test.ckpt"
    torch.save(model.state_dict(), path)
    return path


def save_matgl_potential(directory: Path, seed: int = 0) -> Path:
    """A small TensorNet potential (H, C, O, Si) saved with matgl's own ``save``."""
    from matgl.apps.pes import Potential
    from matgl.models import TensorNet

    torch.manual_seed(seed)
    model = TensorNet(element_types=("H", "C", "O", "Si"), units=32, nblocks=2, cutoff=5.0,
                      is_intensive=False)
    potential = Potential(model=model, calc_stresses=True)
    path = directory / "tensornet"
    potential.save(path)
    return path
