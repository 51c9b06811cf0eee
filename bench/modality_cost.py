"""What each view of a structure costs: seconds per structure for the composition, structure and text encoders,
the description cache's effect (a cold cache against the same structures again), and what fusion adds
to ``predict`` against the graph-only model.

Structures: the first N of a shared matminer task (../shared/data/matminer). The cache lives in a
fresh temporary folder, so the first pass describes every structure with robocrys. For ``predict``, a
SevenNet-0 property model (its ridge-probe head) gets a fusion head over composition, structure and text, fitted
on the next 2N structures; then the first N are predicted by the graph model alone, by the fused model
with a cold description cache, and again with a warm one.

    python bench/modality_cost.py [--task jarvis_2d_exfoliation] [-n 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ase.io

from ase_moma.modalities import CompositionModality, StructureModality, TextModality

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
    structure = StructureModality()
    structure.encode(frames[:2])
    start = time.perf_counter()
    geometry = structure.encode(frames)
    per_structure = (time.perf_counter() - start) / len(frames)
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
    print(f"structure (20 geometry statistics): {1000 * per_structure:.1f} ms/structure, "
          f"{int(geometry.present.sum())}/{n} encoded")
    print(f"text, cold cache: {cold_seconds / n:.2f} s/structure (robocrys {describe / n:.2f} s, MiniLM "
          f"{encode / n:.3f} s); {int(cold.present.sum())}/{n} described, missing: "
          f"{sorted(set(reason.split(':')[0] for reason in cold.missing.values())) or 'none'}")
    print(f"text, warm cache: {warm_seconds / n:.3f} s/structure ({cold_seconds / warm_seconds:.0f}x faster: the "
          "description and its embedding are read back)")
    predict_cost(path, frames)


def predict_cost(path: Path, frames: list) -> None:
    """Seconds per structure of graph-only and fused ``predict`` (cold and warm description cache)."""
    import os

    from ase_moma import load_backbone
    from ase_moma.training.property_models import TrainConfig, build_property_model
    from ase_moma.labelled_data import read_labelled
    from ase_moma.modalities.fusion_training import fit_fusion
    from ase_moma.process_state import kept_process_state

    n = len(frames)
    labelled = read_labelled(path, "target", range(n, 3 * n))
    train, val = labelled.subset(range(0, 3 * n // 2)), labelled.subset(range(3 * n // 2, 2 * n))
    backbone = load_backbone("sevennet", device="cpu")
    graphs = {name: [backbone.graph(a) for a in part.frames] for name, part in (("train", train), ("val", val))}
    graph_model = build_property_model(backbone, TrainConfig(), "head", graphs["train"], train)
    graph_model.target = "target"
    with tempfile.TemporaryDirectory() as cache, kept_process_state():
        os.environ["XDG_CACHE_HOME"] = cache
        fused = fit_fusion(graph_model, ("composition", "structure", "text"), (graphs["train"], train),
                           (graphs["val"], val)).model
        if fused is None:
            print("predict: the fusion head lost to the graph model on validation; nothing to time")
            return
        graph_model.predict(frames[:2])  # warm-up
        timings = {}
        for label, model in (("graph only", graph_model), ("fused, cold cache", fused), ("fused, warm cache", fused)):
            start = time.perf_counter()
            model.predict(frames)
            timings[label] = (time.perf_counter() - start) / n
    base = timings["graph only"]
    print("predict: " + ", ".join(f"{label} {1000 * value:.0f} ms/structure ({value / base:.1f}x)"
                                  for label, value in timings.items()))


if __name__ == "__main__":
    main()
