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


def jmp_test_config():
    """JMP-S's architecture (all four interactions) at test widths, a 5 Å cut-off and smaller neighbour caps
    (16 / 4 quadruplet / 8 atom-edge): JMP's 12 Å and 30 / 8 / 20 give ~10⁵ quadruplets per 5-atom cell."""
    from ase_moma.plugins.gemnet_oc import GemNetOCConfig

    return GemNetOCConfig.jmp_s(
        num_radial=16, num_blocks=2, emb_size_atom=32, emb_size_edge=48, emb_size_trip_in=8,
        emb_size_trip_out=8, emb_size_quad_in=8, emb_size_quad_out=8, emb_size_aint_in=8, emb_size_aint_out=8,
        emb_size_rbf=8, emb_size_cbf=8, emb_size_sbf=8, cutoff=5.0, cutoff_qint=5.0, cutoff_aeaint=5.0,
        cutoff_aint=5.0, max_neighbors=16, max_neighbors_qint=4, max_neighbors_aeaint=8)


def save_jmp_model(directory: Path, seed: int = 0) -> Path:
    """A random-weight GemNet-OC of :func:`jmp_test_config`, saved in the safe format.

    Its scale factors are set (0.5–1.5, so that code path runs) and its read-out scaled so
    energies are a few eV per atom, as a trained model's, not hundreds.
    """
    from ase_moma.plugins.gemnet_oc import GemNetOC
    from ase_moma.plugins.gemnet_oc.checkpoint import save_gemnet_oc

    torch.manual_seed(seed)
    model = GemNetOC(jmp_test_config())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("scale_factor"):
                param.fill_(float(torch.empty(()).uniform_(0.5, 1.5)))
        model.out_energy.linear.weight.mul_(0.02)
    return save_gemnet_oc(model, directory / "jmp_small")
