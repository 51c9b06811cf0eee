"""``ase-moma screen``: relax and predict many candidates, resumable, on this machine or a Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from ase_moma.cli_options import output_flag, shared_flags


def add_screen_command(commands: argparse._SubParsersAction) -> None:
    """Register ``screen`` on the top-level parser's sub-parsers."""
    screen = commands.add_parser(
        "screen", help="relax and predict many candidates in shards, resumable, locally or on Ray",
        parents=[output_flag("run folder: run.json, shards/, results.parquet and results.csv"),
                 shared_flags("device", "dtype", "overwrite")])
    screen.add_argument("candidates", help="extended XYZ file, folder of CIF/POSCAR/pymatgen-JSON files, or a "
                                           "pymatgen JSON file")
    model = screen.add_mutually_exclusive_group(required=True)
    model.add_argument("--backbone", help="registered backbone name (the potential)")
    model.add_argument("--model", help="a saved potential's folder (tuned, composed, hub module)")
    screen.add_argument("--source", help="checkpoint path (default: the embedded model)")
    screen.add_argument("--relax", action="store_true", help="relax each candidate first (FIRE)")
    screen.add_argument("--cell", action="store_true", help="relax the cell too (Fréchet cell filter)")
    screen.add_argument("--fmax", type=float, default=0.05, help="force criterion, eV/Å (default 0.05)")
    screen.add_argument("--steps", type=int, default=200, help="most relaxation steps per candidate")
    screen.add_argument("--properties", nargs="+", default=[], metavar="MODEL",
                        help="property models (fine-tuned composition or hub module folders) predicted on the "
                             "final structures; each adds a column named after its target")
    screen.add_argument("--rank-by", metavar="COLUMN", help="rank the results by this column, lowest first "
                                                           "(energy_per_atom or a property)")
    screen.add_argument("--resume", action="store_true", help="keep the shards the run folder holds, compute the rest")
    screen.add_argument("--shard-size", type=int, default=32, help="candidates per shard (default 32)")
    screen.add_argument("--engine", choices=["local", "ray"], default="local")
    screen.add_argument("--address", default="local", help="ray: 'local' (start one here), 'auto' (this "
                                                          "machine's cluster) or ray://HOST:PORT")
    screen.add_argument("--workers", type=int, default=1, help="ray: actors")
    screen.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs per actor")
    screen.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor")
    screen.set_defaults(run=_screen)


def _screen(args: argparse.Namespace) -> int:
    from ase_moma.errors import UsageError
    from ase_moma.screen import LocalEngine, ModelSpec, screen

    if args.engine == "local" and (args.workers != 1 or args.address != "local" or args.gpus_per_worker):
        raise UsageError("--workers, --address and --gpus-per-worker are for --engine ray")
    if args.cell and not args.relax:
        raise UsageError("--cell relaxes the cell: it needs --relax")
    name = args.model or args.backbone
    spec = ModelSpec(model=str(Path(name).resolve()) if Path(name).exists() else name,
                     source=str(Path(args.source).resolve()) if args.source else None, device=args.device,
                     dtype=args.dtype, properties=tuple(str(Path(p).resolve()) for p in args.properties),
                     relax=args.relax, cell=args.cell, fmax=args.fmax, steps=args.steps)
    if args.engine == "ray":
        from ase_moma.screen.ray_engine import RayEngine

        engine = RayEngine(args.address, args.workers, args.cpus_per_worker, args.gpus_per_worker)
    else:
        engine = LocalEngine()
    table = screen(args.candidates, spec, args.output, engine=engine, shard_size=args.shard_size,
                   rank_by=args.rank_by, resume=args.resume, overwrite=args.overwrite)
    failed = int(table["error"].notna().sum())
    print(f"screened {len(table)} candidates ({failed} errors); wrote {Path(args.output) / 'results.parquet'} "
          f"and results.csv")
    if args.rank_by:
        best = table.dropna(subset=[args.rank_by]).sort_values(args.rank_by).head(5)
        for _, row in best.iterrows():
            print(f"  {row['id']:>12}  {row['formula']:12}  {args.rank_by} {row[args.rank_by]:.4g}")
    return 0
