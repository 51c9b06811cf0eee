"""The ``ase-moma`` command line: the backbone registry, batched prediction and relaxation, the module hub,
composition, fine-tuning."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ase_moma.cli_options import output_flag, shared_flags
from ase_moma.compose.commands import add_compose_commands
from ase_moma.errors import EXIT_REFUSED, EXIT_USAGE, EXPECTED, UsageError
from ase_moma.finetune.commands import add_finetune_command, add_inspect_command
from ase_moma.hub.commands import add_hub_commands
from ase_moma.screen.commands import add_screen_command
from ase_moma.version import CREATED_BY


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ase-moma`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"ase-moma: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except EXPECTED as error:  # refused input: one line; anything else is a bug and shows its traceback
        print(f"ase-moma: error: {error}", file=sys.stderr)
        return EXIT_REFUSED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ase-moma", description=__doc__)
    parser.add_argument("--version", action="version", version=CREATED_BY)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    backbones = commands.add_parser("backbones", help="list registered backbones")
    backbones.set_defaults(run=_backbones)

    predict = commands.add_parser("predict", help="energies, forces, stress (or a composed model's "
                                  "property) for every frame",
                                  parents=[output_flag("extended XYZ file to write"),
                                           shared_flags("device", "dtype", "trust_pickle", "overwrite")])
    predict.add_argument("input", help="structures to evaluate (any format ase.io reads)")
    model = predict.add_mutually_exclusive_group(required=True)
    model.add_argument("--backbone", help="registered backbone name")
    model.add_argument("--model", help="a fine-tuned `ase-moma compose` folder: writes its target "
                       "into each frame's info")
    predict.add_argument("--source", help="checkpoint path (default: the embedded model)")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.set_defaults(run=_predict)

    relax = commands.add_parser("relax", help="relax every structure of a file, all together (batched)",
                                parents=[output_flag("extended XYZ file to write"),
                                         shared_flags("device", "dtype", "overwrite")])
    relax.add_argument("input", help="structures to relax (any format ase.io reads)")
    source = relax.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbone", help="registered backbone name")
    source.add_argument("--model", help="a saved model's folder (tuned, composed, hub module)")
    relax.add_argument("--source", help="checkpoint path (default: the embedded model)")
    relax.add_argument("--fmax", type=float, default=0.05, help="force criterion, eV/Å (default 0.05)")
    relax.add_argument("--steps", type=int, default=500, help="most optimiser steps per structure")
    relax.add_argument("--cell", action="store_true", help="relax the cell too (Fréchet cell filter)")
    relax.add_argument("--optimizer", default="FIRE", choices=["FIRE", "BFGS", "LBFGS"])
    relax.add_argument("--trajectory-dir", help="write one ASE trajectory per structure here")
    relax.add_argument("--batch-size", type=int, help="structures per model call (default: all running)")
    relax.set_defaults(run=_relax)

    convert = commands.add_parser("jmp-convert", help="convert a JMP / fairchem GemNet-OC checkpoint into a "
                                  "safe model folder for the jmp backbone",
                                  parents=[output_flag("the folder to write (model.json + model.safetensors)",
                                                       required=False),
                                           shared_flags("trust_pickle", "overwrite")])
    convert.add_argument("checkpoint", help="a JMP Lightning .ckpt or a GemNet-OC state dict")
    convert.add_argument("positional_output", nargs="?", metavar="OUTPUT",
                         help="deprecated: the folder as a second positional argument; use -o like every other verb")
    convert.add_argument("--pair-rule", choices=["either", "reference"], default="either",
                         help="which capped pairs become edges: 'either' (default; independent of atom order) or "
                         "'reference' (the reference implementation's order-dependent rule, to reproduce it exactly)")
    convert.set_defaults(run=_jmp_convert)

    add_hub_commands(commands)
    add_compose_commands(commands)
    add_finetune_command(commands)
    add_inspect_command(commands)
    add_screen_command(commands)
    return parser


def _backbones(args: argparse.Namespace) -> int:
    from ase_moma import list_backbones

    rows = [(b.name, b.distribution, "yes" if b.usable else "no",
             "embedded" if b.embedded else "local checkpoint",
             b.capabilities.summary() if b.capabilities is not None else "?", b.reason or "")
            for b in list_backbones()]
    header = ("name", "package", "usable", "weights", "capabilities", "why not")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _jmp_convert(args: argparse.Namespace) -> int:
    from ase_moma.plugins.gemnet_oc.checkpoint import convert_checkpoint

    if args.positional_output is not None:
        if args.output is not None:
            raise UsageError("give the output folder once, with -o")
        print("note: `jmp-convert CKPT OUT` is deprecated; write `jmp-convert CKPT -o OUT`", file=sys.stderr)
        args.output = args.positional_output
    if args.output is None:
        raise UsageError("jmp-convert needs -o OUTPUT, the folder to write")
    folder = convert_checkpoint(args.checkpoint, args.output, trust_pickle=args.trust_pickle,
                                overwrite=args.overwrite, pair_rule=args.pair_rule)
    print(f"wrote {folder}; load it with load_calculator('jmp', '{folder}')")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from ase_moma import load_calculator
    from ase_moma.atomic_io import atomic_file
    from ase_moma.calculators import PropertyCalculator
    from ase_moma.structures import read_structures

    frames = read_structures(args.input, "input file")
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists (pass --overwrite to replace it)")
    options = {"trust_pickle": True} if args.trust_pickle else {}
    calc = load_calculator(args.model or args.backbone, args.source, device=args.device, dtype=args.dtype,
                           **options)
    if isinstance(calc, PropertyCalculator):
        target = calc.model.target
        replaced = sum(target in atoms.info for atoms in frames)
        values, notes = calc.predict_with_notes(frames, batch_size=args.batch_size)
        for atoms, value, note in zip(frames, values, notes):
            atoms.info[target] = value
            atoms.info.update(note)
        if replaced:
            print(f"note: {replaced} input frames had info[{target!r}]; the predictions replace it")
    else:
        results = calc.predict(frames, batch_size=args.batch_size, progress=True)
        for atoms, result in zip(frames, results):
            atoms.calc = SinglePointCalculator(atoms, **result)
        if all("magmoms" in result for result in results):
            _rank_orders(frames, [result["energy"] for result in results])
    with atomic_file(output) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    print(f"wrote {len(frames)} structures to {output}")
    return 0


def _rank_orders(frames: list, energies: list[float]) -> None:
    """Rank the spin configurations given for one geometry: info['order_rank'] (0 lowest) and
    info['energy_above_lowest_order'] (eV/atom) on each such frame, and a table on stdout."""
    from ase_moma.spin.orders import rank_orders

    ranks = rank_orders(frames, energies)
    if not ranks:
        return
    print("magnetic orders of one geometry, lowest first (energy above the lowest, meV/atom):")
    for index, rank in sorted(ranks.items(), key=lambda item: (item[1].group, item[1].rank)):
        frames[index].info.update(order_group=rank.group, order_rank=rank.rank,
                                  energy_above_lowest_order=rank.above)
        print(f"  geometry {rank.group}  frame {index}  rank {rank.rank}  {1000 * rank.above:9.2f}")


def _relax(args: argparse.Namespace) -> int:
    from pathlib import Path

    import ase.io

    from ase_moma import load_backbone
    from ase_moma.atomic_io import atomic_file
    from ase_moma.simulate import relax_many
    from ase_moma.structures import read_structures

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists (pass --overwrite to replace it)")
    frames = read_structures(args.input, "input file")
    backbone = load_backbone(args.model or args.backbone, args.source, device=args.device, dtype=args.dtype)
    relaxed = relax_many(frames, backbone, fmax=args.fmax, steps=args.steps, cell=args.cell,
                         optimizer=args.optimizer, trajectory_dir=args.trajectory_dir, batch_size=args.batch_size,
                         progress=True)
    with atomic_file(output) as tmp:
        ase.io.write(tmp, relaxed, format="extxyz")
    converged = sum(atoms.info["relax_converged"] for atoms in relaxed)
    print(f"relaxed {len(relaxed)} structures ({converged} converged to fmax {args.fmax} eV/Å); wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
