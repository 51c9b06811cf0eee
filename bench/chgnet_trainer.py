"""CHGNet 0.3.0 fine-tuned by its own ``Trainer``, as chgnet's fine-tuning example does it: the pretrained model,
its embeddings, basis expansions, every atom-convolution layer but the last, the bond-convolution and angle
layers frozen; Adam, cosine schedule, MSE loss, learning rate 1e-2; the best model on validation energy kept.
Only the data, the epochs, the batch size and the seeds are ours. Run by ``bench/finetune_peers.py`` in its own
process; writes the test errors (scored by finetune_peers' ``test_errors``) and the wall time of training.

    python bench/chgnet_trainer.py TRAIN VALID TEST --epochs 10 --batch-size 4 --seed 0 --out result.json

Labels are converted to what chgnet's ``StructureData`` reads: energy per atom (eV), forces (eV/Å), stress in
VASP's unit and sign (kbar, compressive positive: −10 × ASE's stress in GPa).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_peers import test_errors  # noqa: E402


def structure_data(path: Path, stress: bool):
    """chgnet's StructureData of the labelled frames in ``path``."""
    from chgnet.data.dataset import StructureData
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = ase.io.read(path, ":")
    stresses = None
    if stress:
        stresses = [-10 * atoms.get_stress(voigt=False) / units.GPa for atoms in frames]
    return StructureData(structures=[AseAtomsAdaptor.get_structure(atoms) for atoms in frames],
                         energies=[atoms.get_potential_energy() / len(atoms) for atoms in frames],
                         forces=[atoms.get_forces() for atoms in frames], stresses=stresses, shuffle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("valid", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch
    from chgnet.data.dataset import get_loader
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from chgnet.trainer import Trainer

    torch.manual_seed(args.seed)
    stress = all("stress" in atoms.calc.results for atoms in ase.io.read(args.train, ":"))
    model = CHGNet.load()
    for layer in (model.atom_embedding, model.bond_embedding, model.angle_embedding, model.bond_basis_expansion,
                  model.angle_basis_expansion, model.atom_conv_layers[:-1], model.bond_conv_layers,
                  model.angle_layers):
        for parameter in layer.parameters():
            parameter.requires_grad = False
    trainer = Trainer(model=model, targets="efs" if stress else "ef", optimizer="Adam", scheduler="CosLR",
                      criterion="MSE", epochs=args.epochs, learning_rate=1e-2, use_device="cpu",
                      torch_seed=args.seed, data_seed=args.seed, print_freq=1000)
    train = get_loader(structure_data(args.train, stress), batch_size=args.batch_size)
    valid = get_loader(structure_data(args.valid, stress), batch_size=args.batch_size)
    start = time.perf_counter()
    trainer.train(train, valid, save_dir=str(args.out.parent / "chgnet_checkpoints"))
    seconds = time.perf_counter() - start
    errors = test_errors(CHGNetCalculator(model=trainer.best_model, use_device="cpu"), ase.io.read(args.test, ":"))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    args.out.write_text(json.dumps({"test": errors, "epoch_seconds": [seconds / args.epochs] * args.epochs,
                                    "trained_fraction": trained / sum(p.numel() for p in model.parameters()),
                                    "stress_trained": stress, "max_abs_label_stress_kbar": float(np.max(
                                        [np.abs(a.get_stress()).max() / units.GPa * 10
                                         for a in ase.io.read(args.train, ":")])) if stress else None}))


if __name__ == "__main__":
    main()
