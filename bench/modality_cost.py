"""What each view of a structure costs: seconds per structure for the composition and text encoders,
and the description cache's effect (a cold cache against the same structures again).

Structures: the first N of a shared matminer task (../shared/data/matminer). The cache lives in a
fresh temporary folder, so the first pass describes every structure with robocrys.

    python bench/modality_cost.py [--task jarvis_2d_exfoliation] [-n 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ase.io

from ase_moma.modalities import CompositionModality, TextModality

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="jarvis_2d_exfoliation")
    parser.add_argument("-n", type=int, default=40, help="structures timed")
    args = parser.parse_args()
    path = DATA / f"{args.task}.extxyz"
    if not path.is_file():
        parser.error(f"real data not found at {path}")
    frames = ase.io.read(path, f":{args.n}")
    composition = CompositionModality()
    composition.encode(frames[:2])  # warm-up: imports and tables
    start = time.perf_counter()
    encoded = composition.encode(frames)
    per_composition = (time.perf_counter() - start) / len(frames)
    with tempfile.TemporaryDirectory() as cache:
        text = TextModality(cache=cache)
        text.embed_text("A warm-up sentence.")
        start = time.perf_counter()
        cold = text.encode(frames)
        cold_seconds = time.perf_counter() - start
        describe, encode = text.describer.counts["seconds"], text.seconds_encoding
        start = time.perf_counter()
        text.encode(frames)
        warm_seconds = time.perf_counter() - start
    n = len(frames)
    print(f"{n} structures of {args.task}")
    print(f"composition (Magpie, 132 features): {1000 * per_composition:.1f} ms/structure, "
          f"{int(encoded.present.sum())}/{n} encoded")
    print(f"text, cold cache: {cold_seconds / n:.2f} s/structure (robocrys {describe / n:.2f} s, MiniLM "
          f"{encode / n:.3f} s); {int(cold.present.sum())}/{n} described, missing: "
          f"{sorted(set(reason.split(':')[0] for reason in cold.missing.values())) or 'none'}")
    print(f"text, warm cache: {warm_seconds / n:.3f} s/structure ({cold_seconds / warm_seconds:.0f}x faster)")


if __name__ == "__main__":
    main()
