"""``ase-moma finetune``: adapt a potential to DFT data, or fine-tune a composed model's property head."""

from __future__ import annotations

import argparse
from pathlib import Path

from ase_moma.cli_options import output_flag, shared_flags
from ase_moma.errors import UsageError
from ase_moma.finetune.potential_data import STRESS_UNITS
from ase_moma.finetune.methods import method_class, method_names
from ase_moma.spin.head import SPIN_KINDS


def add_finetune_command(commands: argparse._SubParsersAction) -> None:
    """Register ``finetune`` on the top-level parser's sub-parsers (both of its forms)."""
    finetune = commands.add_parser(
        "finetune", help="adapt a potential to DFT energies/forces/stress (--backbone ...), or fine-tune a "
        "composed model (COMPOSED_DIR)",
        description="Two forms: `ase-moma finetune --backbone NAME|DIR --train T --valid V --method M -o OUT/` "
        "adapts a potential; `ase-moma finetune COMPOSED_DIR` fine-tunes a composition with a fresh head.",
        parents=[output_flag("folder to write (the tuned potential)", required=False),
                 shared_flags("device", "dtype", "overwrite")])
    finetune.add_argument("composed", nargs="?", help="folder written by `ase-moma compose`")
    finetune.add_argument("--backbone", help="registered backbone name, or a composed / fine-tuned folder")
    finetune.add_argument("--source", help="the backbone's checkpoint (default: the embedded model)")
    finetune.add_argument("--train", help="training set (extxyz with energy, forces, stress)")
    finetune.add_argument("--valid", help="validation set, for early stopping")
    finetune.add_argument("--test", help="test set, evaluated once at the end")
    finetune.add_argument("--method", choices=method_names(), default="sparse")
    finetune.add_argument("--name", help="task name recorded in the hub module (default: the --train stem)")
    finetune.add_argument("--epochs", type=int, help="default 100 (a composed model: 60)")
    finetune.add_argument("--batch-size", type=int, help="default 64 (a composed model: 32)")
    finetune.add_argument("--chunk-atoms", type=int, help="compute each batch in chunks of at most this many atoms, "
                          "accumulating their gradients (the same step in less memory); default 64 on a CPU, "
                          "the whole batch on a GPU")
    finetune.add_argument("--lr", type=float, help="default 1e-3 (a composed model: 8e-5)")
    finetune.add_argument("--head-lr", type=float, default=1e-3, help="a composed model's or the spin head's")
    finetune.add_argument("--stress-unit", choices=list(STRESS_UNITS), default="eV/A^3",
                          help="the unit of the files' stress labels (converted to eV/Å³ on reading)")
    finetune.add_argument("--max-stress", type=float, metavar="EV_PER_A3",
                          help="drop frames with a stress component above this (eV/Å³); they are reported")
    finetune.add_argument("--no-stress-check", action="store_true",
                          help="skip comparing the stress labels' scale with the backbone's predictions")
    finetune.add_argument("--patience", type=int, help="default 10")
    finetune.add_argument("--min-improvement", type=float, metavar="FRACTION",
                          help="an epoch counts as better only where it lowers the validation loss by this "
                          "fraction (default 0.01 with --spin-head, else 0)")
    finetune.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    finetune.add_argument("--spin-head", choices=SPIN_KINDS,
                          help="also train a spin head on the moments (arrays['magmoms_vector'] or per-atom magmoms)")
    finetune.add_argument("--no-exchange", action="store_true",
                          help="spin head without its exchange energy (moments only: every spin order of a "
                          "structure gets one energy); the ablation")
    finetune.add_argument("--no-longitudinal", action="store_true",
                          help="spin head without the on-site (Landau) energy of a moment's size: the exchange "
                          "alone prices an order, at the geometry's magnitudes; the ablation")
    finetune.add_argument("--energy-weight", type=float, help="loss weights: default 1, 10, 100 for energy, "
                          "forces, stress (1, 1, 1 and moments 1 with --spin-head)")
    finetune.add_argument("--forces-weight", type=float)
    finetune.add_argument("--stress-weight", type=float)
    finetune.add_argument("--magmoms-weight", type=float)
    finetune.add_argument("--no-refit-references", action="store_true",
                          help="keep the per-element reference energies instead of refitting them (by default "
                               "they are refitted where the backbone has them: not matgl's or Orb's)")
    finetune.add_argument("--modalities", metavar="VIEWS",
                          help="a composed model only: views read beside the graph, e.g. graph,text,composition "
                               "(a fusion head, kept when it beats the graph model on validation)")
    finetune.add_argument("--seed", type=int, default=0)
    method_flags = {}
    for name in method_names():
        group = finetune.add_argument_group(f"{name} options")
        method_class(name).add_arguments(group)
        method_flags[name] = {action.dest: (max(action.option_strings, key=len), action.default)
                              for action in group._group_actions}
    unused = {action.dest: (max(action.option_strings, key=len), action.default) for action in finetune._actions
              if action.option_strings and action.dest not in COMPOSED_USES + ("help",)}
    finetune.set_defaults(run=_finetune, composed_unused=unused, method_flags=method_flags)


COMPOSED_USES = ("epochs", "batch_size", "lr", "patience", "head_lr", "seed", "device", "modalities")
"""The flags ``finetune COMPOSED_DIR`` reads; it refuses the others rather than ignore them."""


def _finetune(args: argparse.Namespace) -> int:
    if args.composed is not None:
        if args.backbone is not None:
            raise UsageError("pass either COMPOSED_DIR or --backbone, not both")
        from ase_moma.compose.commands import finetune_composed_command

        ignored = sorted(flag for dest, (flag, default) in args.composed_unused.items() if getattr(args, dest) != default)
        if ignored:
            raise UsageError(f"finetune COMPOSED_DIR does not use {', '.join(ignored)}: a composition is "
                             "fine-tuned in place (into COMPOSED_DIR/model/) on the data it was composed for")
        return finetune_composed_command(args)
    if args.modalities is not None:
        raise UsageError("--modalities is for property models (finetune COMPOSED_DIR, hub train); "
                         "a potential reads its graph only")
    foreign = sorted(flag for name, flags in args.method_flags.items() if name != args.method
                     for dest, (flag, default) in flags.items() if getattr(args, dest) != default)
    if foreign:
        raise UsageError(f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not an option of "
                         f"--method {args.method}")
    missing = [flag for flag, value in (("--backbone", args.backbone), ("--train", args.train),
                                        ("--valid", args.valid), ("-o", args.output)) if value is None]
    if missing:
        raise UsageError(f"finetune needs {', '.join(missing)} (or a COMPOSED_DIR to fine-tune a composition)")
    return _finetune_potential(args)


def _finetune_potential(args: argparse.Namespace) -> int:
    import dataclasses

    from ase_moma.finetune.pipeline import finetune_potential
    from ase_moma.finetune.trainer import FinetuneConfig

    given = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                           ("lr", args.lr), ("patience", args.patience)) if value is not None}
    config = FinetuneConfig(method=args.method, options=method_class(args.method).options_from(args),
                            max_steps=args.max_steps, refit_references=False if args.no_refit_references else None,
                            seed=args.seed, spin_head=args.spin_head, head_lr=args.head_lr,
                            exchange=not args.no_exchange, longitudinal=not args.no_longitudinal,
                            min_improvement=args.min_improvement,
                            chunk_atoms=args.chunk_atoms, **given)
    weights = {key: value for key, value in (("energy", args.energy_weight), ("forces", args.forces_weight),
                                             ("stress", args.stress_weight), ("magmoms", args.magmoms_weight))
               if value is not None}
    config.loss = dataclasses.replace(config.loss, **weights)
    record = finetune_potential(args.backbone, args.train, args.valid, args.output, config, test=args.test,
                                source=args.source, name=args.name, device=args.device, dtype=args.dtype,
                                overwrite=args.overwrite, stress_unit=args.stress_unit, max_stress=args.max_stress,
                                stress_check=not args.no_stress_check)
    errors = "; ".join(f"{role}: " + ", ".join(f"{key} {value:.4g}" for key, value in values.items())
                       for role, values in record["metrics"].items())
    updated = record["path_weights_updated"]
    if record["spin_head"]:
        head = record["spin_head"]
        start = head.get("exchange_start")
        fitted = [name for name, key in (("exchange J", "alpha"), ("Landau terms", "landau_alpha"))
                  if start and start.get(key) is not None]
        fitted = ("spin energy off" if start is None else "spin energy kept at zero (no fit beat it on held-out "
                  "structures)" if not fitted else
                  f"{' and '.join(fitted)} started at their least-squares fit (held-out error "
                  f"{start['held_out_error']:.3g} against {start['zero_error']:.3g} for none)")
        print(f"spin head ({args.spin_head}): {head['parameters']} parameters, "
              f"{100 * head['fraction_of_backbone']:.2f} % of the backbone's; {fitted}")
    if record["result"].get("kept_start"):
        print(f"no epoch validated better than the untouched backbone: it is kept (the {args.method} steps "
              "are discarded)")
    print(f"{args.method} fine-tuning: {record['result']['steps']} steps, {100 * updated['fraction']:.2f} % of "
          f"{updated['size']} path weights updated. {errors} (energy meV/atom, forces meV/Å, stress GPa, "
          "moments μB). "
          f"Wrote {args.output}")
    return 0


def add_inspect_command(commands: argparse._SubParsersAction) -> None:
    """Register ``inspect`` on the top-level parser's sub-parsers."""
    inspect = commands.add_parser("inspect", help="what a tuned potential moved (per layer, irrep degree l, "
                                  "element, largest paths), or how two tuned potentials' moved entries overlap")
    inspect.add_argument("tuned", help="a folder written by `ase-moma finetune --backbone ... -o` (or a hub's "
                         "potential module)")
    inspect.add_argument("other", nargs="?", help="a second one of the same base: print the overlap of the two")
    inspect.add_argument("--chart", help="write the picture of what moved here (PNG)")
    inspect.add_argument("--top", type=int, default=10, help="how many of the largest paths to list")
    inspect.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from ase_moma.finetune.inspect import compare_moved, inspect_moved
    from ase_moma.finetune.report import sparsity_chart

    if args.other is not None:
        if args.chart is not None:
            raise UsageError("--chart draws one tuned potential; compare two without it")
        overlap = compare_moved(args.tuned, args.other)
        first, second = overlap["moved"]
        print(f"{args.tuned}: {first} entries moved; {args.other}: {second}")
        print(f"shared: {overlap['shared']} ({100 * overlap['jaccard']:.2f} % of the entries either moved); two "
              f"random choices of the same sizes would share {overlap['by_chance']:.0f}")
        for name, shared in sorted(overlap["per_tensor"].items(), key=lambda item: -item[1])[:args.top]:
            print(f"  {name:<60} {shared} shared")
        return 0
    report = inspect_moved(args.tuned, top=args.top)
    total = report["total"]
    print(f"{args.tuned}: {total['updated']} of {total['size']} path weights moved "
          f"({100 * total['fraction']:.2f} %)")
    moved_elements = {symbol: row for symbol, row in report["per_element"].items() if row["updated"]}
    for title, part in (("per layer", report["per_layer"]), ("per irrep degree l", report["per_l"]),
                        ("per element (species embedding; the others did not move)", moved_elements)):
        if part:
            print(f"{title}:")
            for key, row in part.items():
                print(f"  {key:<32} {100 * row['fraction']:6.2f} % of {row['size']}")
    if report["other_changed"]:
        print("outside the path weights: " + ", ".join(f"{name} ({count})"
                                                       for name, count in report["other_changed"].items()))
    print("largest changes (L2 norm):")
    for path in report["largest"]:
        where = "" if path["path"] is None else f" path {path['path']}"
        degree = "" if path["l"] is None else f", l={path['l']}"
        print(f"  {path['weight']}{where} ({path['kind']}{degree}): {path['moved']} of {path['size']} moved, "
              f"norm {path['norm']:.3g}")
    if args.chart:
        sparsity_chart(report, Path(args.tuned).name, args.chart)
        print(f"wrote {args.chart}")
    return 0
