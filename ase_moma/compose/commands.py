"""``ase-moma compose``, and the composed-model form of ``ase-moma finetune``."""

from __future__ import annotations

import argparse

from ase_moma.cli_options import output_flag, shared_flags
from ase_moma.compose.strategies import STRATEGIES
from ase_moma.errors import UsageError


def add_compose_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``compose`` on the top-level parser's sub-parsers."""
    compose = commands.add_parser("compose", help="compose a model for a dataset from a hub's modules (AMC)",
                                  parents=[output_flag("folder to write (recipe, merged model, chart)"),
                                           shared_flags("n_train", "device", "overwrite")])
    compose.add_argument("--hub", help="hub directory")
    compose.add_argument("--data", help="extxyz file with the target in atoms.info (with --potential: frames "
                         "with energies, and forces and stress where every frame has them)")
    compose.add_argument("--target", help="atoms.info key of the target")
    compose.add_argument("--potential", action="store_true",
                         help="compose a potential from the hub's potential modules (kind delta) for the "
                              "labelled frames of --data; OUT/ loads as a backbone (load_calculator, relax, "
                              "screen, finetune --backbone OUT)")
    compose.add_argument("--proxy", choices=["errors", "knn"], default="errors",
                         help="--potential: score candidates by their own errors on the frames (amc fits the "
                              "loss of their weighted predictions) or by MoMa's kNN proxy of per-atom energies")
    compose.add_argument("--merge", choices=["sign_consensus", "sum"], default="sign_consensus",
                         help="--potential: merge the weighted deltas by sign consensus (TIES-style: per entry, "
                              "the changes that agree with the elected sign, so modules of other chemistries "
                              "do not dilute each other), or add them (sum: right when the frames are a mixture "
                              "of what the modules learned)")
    compose.add_argument("--no-refit-references", action="store_true",
                         help="--potential: keep the per-element reference energies instead of refitting "
                              "them to the frames")
    compose.add_argument("--recipe", help="replay this recipe.json instead of composing afresh")
    compose.add_argument("--split", help="split file {task: {train, val, test}} (default: random split)")
    compose.add_argument("--task", help="key in --split (default: the data file's stem)")
    compose.add_argument("--seed", type=int, default=0, help="seed of the random split and selection")
    compose.add_argument("--val-fraction", type=float, default=0.1)
    compose.add_argument("--unit", default="", help="unit of the target, for reports")
    compose.add_argument("--strategy", default="amc", choices=STRATEGIES,
                         help="amc, or a baseline: model soup, AMC support averaged, random pick, "
                              "softmax of proxy MAE, best single module, no hub (--potential: amc, "
                              "all_average, best_single, no_hub)")
    compose.add_argument("--kind", choices=["full", "adapter"], help="which modules to compose "
                         "(default: full ones when the hub has any)")
    compose.add_argument("--modules", nargs="+", help="restrict to these modules")
    compose.add_argument("--k", type=int, default=5, help="neighbours in the kNN proxy")
    compose.add_argument("--knn-temperature", type=float, default=0.2)
    compose.add_argument("--similarity", default="cosine", choices=["cosine", "dot", "euclidean"])
    compose.add_argument("--solver", help="cvxpy solver (default: CLARABEL, else OSQP)")
    compose.add_argument("--softmax-temperature", type=float, default=1.0)
    defaults = {action.dest: (next(flag for flag in action.option_strings if flag.startswith("--")), action.default)
                for action in compose._actions if action.option_strings and action.dest != "help"}
    compose.set_defaults(run=_compose, flag_defaults=defaults)


POTENTIAL_USES = ("hub", "data", "output", "potential", "proxy", "merge", "no_refit_references", "strategy",
                  "modules", "k", "knn_temperature", "solver", "device", "overwrite")
"""The flags ``compose --potential`` reads; it refuses the others rather than ignore them."""
POTENTIAL_ONLY = ("proxy", "merge", "no_refit_references")
"""The flags only ``compose --potential`` reads."""


def _given(args: argparse.Namespace, dests) -> list[str]:
    """The flags among ``dests`` that the command line set to something other than their default."""
    return sorted(flag for dest, (flag, default) in args.flag_defaults.items()
                  if dest in dests and getattr(args, dest) != default)


def _compose(args: argparse.Namespace) -> int:
    from ase_moma.compose.composer import compose, replay

    if args.potential and not args.recipe:
        return _compose_potential(args)
    stray = _given(args, POTENTIAL_ONLY)
    if stray:
        raise UsageError(f"{', '.join(stray)} apply to compose --potential only")
    if args.recipe:
        recipe = replay(args.recipe, args.output, hub=args.hub, overwrite=args.overwrite)
    else:
        missing = [flag for flag, value in (("--hub", args.hub), ("--data", args.data),
                                            ("--target", args.target)) if value is None]
        if missing:
            raise ValueError(f"compose needs {', '.join(missing)} (or --recipe to replay a composition)")
        recipe = compose(args.hub, args.data, args.target, args.output, split=args.split, task=args.task,
                         seed=args.seed, n_train=args.n_train, val_fraction=args.val_fraction,
                         unit=args.unit, strategy=args.strategy, kind=args.kind, modules=args.modules,
                         k=args.k, temperature=args.knn_temperature, similarity=args.similarity,
                         solver=args.solver, softmax_temperature=args.softmax_temperature,
                         device=args.device, overwrite=args.overwrite)
    print(f"{recipe['strategy']} composition for {recipe['task']['task']}:{recipe['task']['target']} "
          f"(M = {recipe['task']['train_size']}) -> {args.output}")
    for module in recipe["modules"]:
        print(f"  {module['name']:<32} weight {module['weight']:.4f}  proxy MAE {module['proxy_mae']:.4g}  "
              f"Spearman {module['spearman']:+.3f}")
    timings = recipe["timings"]
    print("  time: " + ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in timings.items()))
    return 0


def _compose_potential(args: argparse.Namespace) -> int:
    from ase_moma.compose.potential import compose_potential

    missing = [flag for flag, value in (("--hub", args.hub), ("--data", args.data)) if value is None]
    if missing:
        raise UsageError(f"compose --potential needs {', '.join(missing)}")
    unused = _given(args, set(args.flag_defaults) - set(POTENTIAL_USES))
    if unused:
        raise UsageError(f"compose --potential scores potentials on every frame of --data; it does not use "
                         f"{', '.join(unused)}")
    recipe = compose_potential(args.hub, args.data, args.output, strategy=args.strategy, proxy=args.proxy,
                               merge=args.merge, modules=args.modules,
                               refit_references=not args.no_refit_references, k=args.k,
                               temperature=args.knn_temperature, solver=args.solver, device=args.device,
                               overwrite=args.overwrite)
    potential = recipe["potential"]
    print(f"{recipe['strategy']} potential for {recipe['task']['task']} ({recipe['task']['train_size']} frames, "
          f"{', '.join(recipe['task']['elements'])}; proxy {potential['proxy']}, merge {potential['merge']}) "
          f"-> {args.output}")

    def shown(errors: dict) -> str:
        return ", ".join(f"{label} {errors[key]:.4g}" for key, label in (
            ("energy_mae", "E"), ("forces_mae", "F"), ("stress_mae", "S")) if key in errors)

    print(f"  {'pretrained':<32} weight {potential['pretrained']['weight']:.4f}  "
          f"{shown(potential['pretrained']['errors'])}")
    for module in recipe["modules"]:
        note = "" if module["covers_frames"] else "  (fitted to other elements)"
        print(f"  {module['name']:<32} weight {module['weight']:.4f}  {shown(module['errors'])}{note}")
    print(f"  {'composed':<32} {'':13} {shown(potential['composed_errors'])}  "
          "(meV/atom with references refitted, meV/Å, GPa)")
    if potential["fallback"]:
        print(f"  {potential['fallback']}")
    print("  time: " + ", ".join(f"{key[:-2]} {value:.2f} s" for key, value in recipe["timings"].items()))
    return 0


def finetune_composed_command(args: argparse.Namespace) -> int:
    """``ase-moma finetune COMPOSED_DIR`` (the parser is in :mod:`ase_moma.finetune.commands`)."""
    import dataclasses

    from ase_moma.compose.finetune import DOWNSTREAM, finetune_composed
    from ase_moma.modalities.fusion_training import fusion_summary
    from ase_moma.modalities.registry import parse_modalities

    given = {key: value for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                           ("lr", args.lr), ("patience", args.patience)) if value is not None}
    config = dataclasses.replace(DOWNSTREAM, head_lr=args.head_lr, seed=args.seed,
                                 modalities=parse_modalities(args.modalities), **given)
    meta = finetune_composed(args.composed, config, device=args.device)
    metrics = meta["metrics"]
    shown = ", ".join(f"{part} MAE {metrics[f'{part}_mae']:.4g} (predicting the mean: "
                      f"{metrics[f'{part}_mae_predict_mean']:.4g})" for part in ("val", "test")
                      if f"{part}_mae" in metrics)
    gave_up = " (stopped: not below the plain backbone's probe)" if meta["training"].get("gave_up") else ""
    print(f"fine-tuned {args.composed} for {meta['training']['epochs_run']} epochs{gave_up}: {shown} {meta['unit']}; "
          f"kept the {meta['composition']['kept']} (best on validation)")
    if "fusion" in meta:
        print(fusion_summary(meta["fusion"], meta["unit"]))
    print("time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in meta["timings"].items()))
    return 0
