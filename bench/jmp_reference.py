"""The reference side of bench/jmp_parity.py: fairchem-core 1.10's GemNet-OC with JMP-S's configuration.

Runs inside the separate environment that bench/jmp_parity.py builds (torch 2.4.1, fairchem-core
1.10, torch-scatter and torch-sparse from source); imports nothing from ase-moma. It builds the
model with random weights (scale factors set to random values in [0.5, 1.5] so they take part),
saves its state dict, and writes energy, forces and the best-of-3 time per call for every structure.

fairchem's graph code casts to float32 in two places (the periodic offsets in get_pbc_distances and
the image grid in radius_graph_pbc), and GemNet-OC casts its last features to float32 before the
energy layer (an AMP guard). For a float64 comparison the offsets are computed in the cell's dtype,
the first neighbour search runs on a float32 copy (it only chooses integer images within 12 Å, where
the envelope is zero), the neighbour caps sort in float64, and the energy layer's input is cast back
to float64. The model's own code is not changed.

    python bench/jmp_reference.py STRUCTURES.extxyz OUT_DIR [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
import torch

JMP_S = dict(
    num_spherical=7, num_radial=128, num_blocks=4, emb_size_atom=256, emb_size_edge=512, emb_size_trip_in=64,
    emb_size_trip_out=64, emb_size_quad_in=32, emb_size_quad_out=32, emb_size_aint_in=64, emb_size_aint_out=64,
    emb_size_rbf=16, emb_size_cbf=16, emb_size_sbf=32, num_before_skip=2, num_after_skip=2, num_concat=1,
    num_atom=3, num_output_afteratom=3, num_atom_emb_layers=2, num_global_out_layers=2, regress_forces=True,
    direct_forces=False, use_pbc=True, cutoff=12.0, cutoff_qint=12.0, cutoff_aeaint=12.0, cutoff_aint=12.0,
    max_neighbors=30, max_neighbors_qint=8, max_neighbors_aeaint=20, max_neighbors_aint=1000,
    enforce_max_neighbors_strictly=False, rbf={"name": "gaussian"}, envelope={"name": "polynomial", "exponent": 5},
    cbf={"name": "spherical_harmonics"}, sbf={"name": "legendre_outer"}, extensive=True, activation="silu",
    quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True, atom_interaction=True,
    num_elements=120, otf_graph=True, qint_tags=[0, 1, 2],
)


def _float64_graph_code() -> None:
    import fairchem.core.models.base as base
    import fairchem.core.models.gemnet_oc.gemnet_oc as gemnet_oc
    from fairchem.core.common import utils

    def pbc_distances(pos, edge_index, cell, cell_offsets, neighbors, return_offsets=False,
                      return_distance_vec=False):
        row, col = edge_index
        cell = torch.repeat_interleave(cell, neighbors.to(cell.device), dim=0)
        offsets = cell_offsets.to(cell.dtype).view(-1, 1, 3).bmm(cell).view(-1, 3)
        vectors = pos[row] - pos[col] + offsets
        distances = vectors.norm(dim=-1)
        keep = distances != 0
        out = {"edge_index": edge_index[:, keep], "distances": distances[keep]}
        if return_distance_vec:
            out["distance_vec"] = vectors[keep]
        if return_offsets:
            out["offsets"] = offsets[keep]
        return out

    def radius_graph(data, *args, **kwargs):
        single = data.clone()
        single.pos, single.cell = data.pos.float(), data.cell.float()
        return utils.radius_graph_pbc(single, *args, **kwargs)

    def neighbors_mask(*args, **kwargs):
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # its sort buffer takes the default dtype
        try:
            return utils.get_max_neighbors_mask(*args, **kwargs)
        finally:
            torch.set_default_dtype(default)

    base.get_pbc_distances = pbc_distances
    base.radius_graph_pbc = radius_graph
    gemnet_oc.get_max_neighbors_mask = neighbors_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structures")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _float64_graph_code()
    import fairchem.core
    from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC
    from torch_geometric.data import Batch, Data

    torch.manual_seed(args.seed)
    model = GemNetOC(**JMP_S)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("scale_factor"):
                param.fill_(float(torch.empty(()).uniform_(0.5, 1.5)))
        model.out_energy.linear.weight.mul_(0.02)  # energies of a few eV per atom, as a trained model's
    model = model.double().eval()
    model.out_energy.register_forward_pre_hook(lambda _module, inputs: (inputs[0].double(),))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.clone() for key, value in model.state_dict().items()}, out / "reference_state.pt")

    energies, forces, seconds = [], [], []
    for atoms in ase.io.read(args.structures, ":"):
        data = Data(pos=torch.tensor(atoms.positions, dtype=torch.float64),
                    cell=torch.tensor(atoms.cell.array, dtype=torch.float64)[None],
                    atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
                    natoms=torch.tensor([len(atoms)]), tags=torch.zeros(len(atoms), dtype=torch.long),
                    pbc=torch.tensor([[True, True, True]]), sid=torch.tensor([0]))
        times = []
        for _ in range(4):  # one warm-up, then best of three
            batch = Batch.from_data_list([data])
            start = time.perf_counter()
            result = model(batch)
            times.append(time.perf_counter() - start)
        print(f"reference: {atoms.get_chemical_formula()} ({len(atoms)} atoms) {min(times[1:]):.2f} s", flush=True)
        energies.append(float(result["energy"][0]))
        forces.append(result["forces"].detach().numpy())
        seconds.append(min(times[1:]))
    np.savez(out / "reference_results.npz", energy=np.array(energies), forces=np.concatenate(forces),
             seconds=np.array(seconds))
    (out / "reference_versions.json").write_text(json.dumps(
        {"torch": torch.__version__, "fairchem-core": fairchem.core.__version__}))


if __name__ == "__main__":
    main()
