"""``ase-moma hub init|starter|train|add|list|show|verify|remove``."""

from __future__ import annotations

import argparse
import json

from ase_moma.cli_options import shared_flags


def add_hub_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``hub`` and its sub-commands on the top-level parser's sub-parsers."""
    hub = commands.add_parser("hub", help="create, fill, inspect and verify a module hub")
    verbs = hub.add_subparsers(required=True, metavar="VERB")

    init = verbs.add_parser("init", help="create an empty hub for one backbone")
    init.add_argument("hub", help="hub directory")
    init.add_argument("--backbone", default="sevennet", help="registered backbone name")
    init.add_argument("--source", help="checkpoint path (default: the embedded model)")
    init.set_defaults(run=_init)

    starter = verbs.add_parser("starter", help="write a verified copy of the starter hub that ships with ase-moma",
                               parents=[shared_flags("overwrite")])
    starter.add_argument("hub", help="directory to create")
    starter.set_defaults(run=_starter)

    train = verbs.add_parser("train", help="fine-tune a module on one task and add it",
                             parents=[shared_flags("n_train", "device", "overwrite")])
    train.add_argument("hub")
    train.add_argument("--data", help="extxyz file with the target in atoms.info")
    train.add_argument("--target", help="atoms.info key of the target")
    train.add_argument("--name", help="module name in the hub")
    train.add_argument("--tasks", metavar="LIST", help="instead of --data/--target/--name: a JSON task list, one "
                       "module per entry (see docs/cli.md); modules the hub has are kept")
    train.add_argument("--engine", choices=["local", "ray"], default="local", help="with --tasks: where jobs run")
    train.add_argument("--address", default="local", help="ray: 'local', 'auto' or ray://HOST:PORT")
    train.add_argument("--workers", type=int, default=1, help="ray: jobs at a time")
    train.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs per job")
    train.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per job")
    train.add_argument("--task", help="task name (and key in --split; default: the data file's stem)")
    train.add_argument("--split", help="split file {task: {train, val, test}} (default: random split)")
    train.add_argument("--unit", default="", help="unit of the target, recorded in module.json")
    train.add_argument("--kind", default="full", choices=["full", "adapter"])
    train.add_argument("--readout", default="auto", choices=["auto", "head", "energy_per_atom"])
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--head-lr", type=float, default=1e-3)
    train.add_argument("--patience", type=int, default=8)
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--modalities", metavar="VIEWS",
                       help="views read beside the graph, e.g. graph,text,composition (a fusion head, kept "
                            "when it beats the graph model on validation; needs ase-moma[fusion])")
    train.add_argument("--mode", default="custom", help="label recorded in module.json")
    train.set_defaults(run=_train)

    add = verbs.add_parser("add", help="import a module folder after verifying it", parents=[shared_flags("overwrite")])
    add.add_argument("hub")
    add.add_argument("folder", help="a module folder (module.json + safetensors)")
    add.add_argument("--name", help="name in this hub (default: the module's own)")
    add.set_defaults(run=_add)

    for verb, helptext, run in (("list", "table of modules", _list),
                                ("verify", "check every module's files and fingerprint", _verify)):
        parser = verbs.add_parser(verb, help=helptext)
        parser.add_argument("hub")
        parser.set_defaults(run=run)

    for verb, helptext, run in (("show", "one module's metadata", _show),
                                ("remove", "delete a module", _remove)):
        parser = verbs.add_parser(verb, help=helptext)
        parser.add_argument("hub")
        parser.add_argument("name")
        parser.set_defaults(run=run)


def _init(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub
    from ase_moma.loading import load_backbone

    hub = Hub.create(args.hub, load_backbone(args.backbone, args.source, device="cpu"))
    record = hub.backbone
    print(f"created hub {hub.path} for {record['name']} ({record['version']}), "
          f"fingerprint {record['fingerprint'][:16]}…")
    return 0


def _starter(args: argparse.Namespace) -> int:
    from ase_moma.hub.starter import write_starter_hub

    hub = write_starter_hub(args.hub, overwrite=args.overwrite)
    print(f"wrote the starter hub to {hub.path}: {len(hub.modules)} {hub.backbone['name']} modules, all verified "
          f"(`ase-moma hub list {hub.path}`)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ase_moma.errors import UsageError

    if args.tasks is not None:
        if any(value is not None for value in (args.data, args.target, args.name)):
            raise UsageError("pass either --tasks or --data/--target/--name, not both")
        return _train_tasks(args)
    missing = [flag for flag, value in (("--data", args.data), ("--target", args.target), ("--name", args.name))
               if value is None]
    if missing:
        raise UsageError(f"hub train needs {', '.join(missing)} (or --tasks LIST)")
    if args.engine != "local":
        raise UsageError("--engine ray trains a task list: pass --tasks")
    from ase_moma.hub import TrainConfig, train_module
    from ase_moma.modalities.fusion_training import fusion_summary
    from ase_moma.modalities.registry import parse_modalities

    config = TrainConfig(kind=args.kind, readout=args.readout, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                         patience=args.patience, val_fraction=args.val_fraction,
                         max_train=args.n_train, seed=args.seed, mode=args.mode,
                         modalities=parse_modalities(args.modalities))
    meta = train_module(args.hub, args.name, args.data, args.target, config=config, split=args.split,
                        task=args.task, unit=args.unit, device=args.device, overwrite=args.overwrite)
    metrics = meta["metrics"]
    print(f"module {args.name}: val MAE {metrics['val_mae']:.4g} {meta['unit']} "
          f"(predicting the train mean: {metrics['val_mae_predict_mean']:.4g})")
    if "fusion" in meta:
        print(fusion_summary(meta["fusion"], meta["unit"]))
    return 0


def _train_tasks(args: argparse.Namespace) -> int:
    from ase_moma.hub.task_list import read_task_list, train_tasks

    results = train_tasks(args.hub, read_task_list(args.tasks), engine=args.engine, address=args.address,
                          workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker, device=args.device, overwrite=args.overwrite)
    for result in results:
        print(f"module {result['name']}: {result['status']}"
              + (f", val MAE {result['val_mae']:.4g}" if "val_mae" in result else ""))
    return 0


def _add(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub

    name = Hub(args.hub).add(args.folder, name=args.name, overwrite=args.overwrite)
    print(f"added module {name} to {args.hub}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub

    hub = Hub(args.hub)
    record = hub.backbone
    potentials = [m if "valid_errors" in m else hub.index_entry_of(m["name"]) for m in hub.modules
                  if m["kind"] == "delta"]  # entries written before potential modules were listed: re-read
    properties = [m for m in hub.modules if m["kind"] != "delta"]
    print(f"hub {hub.path}: backbone {record['name']} ({record['version']}), "
          f"fingerprint {record['fingerprint'][:16]}…, {len(properties)} property and {len(potentials)} "
          "potential modules")
    if properties:
        _table(("name", "task", "kind", "n_train", "val MAE", "size"), [
            (m["name"], str(m["task"]), m["kind"], str(m["n_train"]),
             "" if m["val_mae"] is None else f"{m['val_mae']:.4g} {m['unit'] or ''}".rstrip(),
             f"{m['size_bytes'] / 1e6:.2f} MB") for m in properties])
    if potentials:
        if properties:
            print()
        _table(("potential", "elements", "method", "moved", "n_train", "val E meV/atom", "val F meV/Å",
                "val S GPa", "size"), [
            (m["name"], _elements(m.get("elements") or ["?"]), str(m.get("method") or "?"),
             "" if m.get("moved_fraction") is None else f"{100 * m['moved_fraction']:.1f} %", str(m["n_train"]),
             *(_value((m.get("valid_errors") or {}).get(key)) for key in ("energy_mae", "forces_mae", "stress_mae")),
             f"{m['size_bytes'] / 1e6:.2f} MB") for m in potentials])
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _elements(symbols: list[str], shown: int = 6) -> str:
    """The symbols joined by commas; past ``shown`` of them, the first few and how many there are."""
    if len(symbols) <= shown:
        return ",".join(symbols)
    return f"{','.join(symbols[:shown - 2])},… ({len(symbols)} elements)"


def _value(number: float | None) -> str:
    return "" if number is None else f"{number:.4g}"


def _show(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub

    print(json.dumps(Hub(args.hub).read_module(args.name), indent=1, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub

    problems = Hub(args.hub).verify()
    for name, problem in problems.items():
        print(f"{name}: {'ok' if problem is None else problem}")
    bad = sum(problem is not None for problem in problems.values())
    print(f"{len(problems) - bad} of {len(problems)} modules verified")
    return 1 if bad else 0


def _remove(args: argparse.Namespace) -> int:
    from ase_moma.hub import Hub

    Hub(args.hub).remove(args.name)
    print(f"removed module {args.name} from {args.hub}")
    return 0
