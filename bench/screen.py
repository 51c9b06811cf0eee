"""Screening throughput and memory: the local engine against Ray with one and two workers.

Inputs: generated strained, rattled diamond Si/Ge/C cells (two atoms each; the tests' generator), SevenNet-0
on the CPU. In one
run, on the same candidates:

- structures/s of ``screen`` (predict, and with ``--relax`` a short FIRE relaxation) for the local engine
  and for Ray with one and two workers, with their ratios to the local engine;
- Ray's start-up overhead: the time from ``ray.init`` to the first actor that has loaded the model;
- the local engine's peak resident memory at 1,000 and 10,000 candidates (each in a fresh process): it
  must not grow with the number of candidates.

    python bench/screen.py [--candidates 400] [--relax-steps 0] [--memory 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_screen import candidates  # noqa: E402  (strained, rattled diamond Si/Ge/C cells)


def write_candidates(path: Path, count: int) -> None:
    """The tests' generated candidates (tests/test_screen.py), without the bad one."""
    ase.io.write(path, candidates(count))


def timed(candidates: Path, out: Path, engine, relax_steps: int) -> float:
    from ase_moma.screen import ModelSpec, screen

    spec = ModelSpec("sevennet", device="cpu", relax=relax_steps > 0, steps=max(relax_steps, 1))
    start = time.perf_counter()
    screen(candidates, spec, out, engine=engine, progress=False)
    return time.perf_counter() - start


def ray_start_up() -> float:
    import ray

    from ase_moma.screen import ModelSpec, ShardWorker

    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    actor = ray.remote(num_cpus=1)(ShardWorker).remote(ModelSpec("sevennet", device="cpu"))
    ray.get(actor.pid.remote())
    seconds = time.perf_counter() - start
    ray.shutdown()
    return seconds


def peak_memory(count: int, scratch: Path) -> float:
    """Peak resident memory (GB) of a fresh process screening ``count`` candidates with the local engine."""
    candidates = scratch / f"memory_{count}.extxyz"
    write_candidates(candidates, count)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec, so a child
    # started by a large parent reports the parent's size; VmHWM belongs to the child's own address space.
    code = ("from ase_moma.screen import ModelSpec, screen; "
            f"screen({str(candidates)!r}, ModelSpec('sevennet', device='cpu'), {str(scratch / f'mem{count}')!r}, "
            "progress=False); print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(output.split()[-2]) / 1e6  # "VmHWM:  123456 kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--relax-steps", type=int, default=0, help="FIRE steps per candidate (0: predict only)")
    parser.add_argument("--memory", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    args = parser.parse_args()
    if args.memory_only:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps({"peak_memory_gb": {n: peak_memory(n, Path(scratch)) for n in args.memory}}))
        return
    from ase_moma.screen import LocalEngine
    from ase_moma.screen.ray_engine import RayEngine

    report = {"candidates": args.candidates, "relax_steps": args.relax_steps}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        candidates = scratch / "candidates.extxyz"
        write_candidates(candidates, args.candidates)
        timed(candidates, scratch / "warm", LocalEngine(), args.relax_steps)  # imports and weights, paid once
        seconds = {"local": timed(candidates, scratch / "local", LocalEngine(), args.relax_steps)}
        for workers in (1, 2):
            seconds[f"ray, {workers} worker(s)"] = timed(candidates, scratch / f"ray{workers}",
                                                         RayEngine("local", workers=workers), args.relax_steps)
        report["structures_per_s"] = {name: args.candidates / value for name, value in seconds.items()}
        report["ratio_to_local"] = {name: seconds["local"] / value for name, value in seconds.items()}
        report["ray_start_up_s"] = ray_start_up()
        report["peak_memory_gb"] = {count: peak_memory(count, scratch) for count in args.memory}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
