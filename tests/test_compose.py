"""AMC building blocks: kNN proxy, simplex weights, streaming weight-space merge."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from ase_moma.compose import knn_proxy, merge_safetensors, solve_weights


def _knn_loop(x: np.ndarray, y: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """The formula written out: cosine similarity, exp(s/T), K nearest others, normalised."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.empty(len(y))
    for i in range(len(y)):
        similarities = [(float(unit[i] @ unit[j]), j) for j in range(len(y)) if j != i]
        nearest = sorted(similarities, reverse=True)[:k]
        a = np.array([np.exp(s / temperature) for s, _ in nearest])
        out[i] = sum(a_ik * y[j] for a_ik, (_, j) in zip(a, nearest)) / a.sum()
    return out


@pytest.mark.parametrize("k, temperature, chunk", [(5, 0.2, 2048), (3, 0.05, 7), (1, 1.0, 1)])
def test_knn_proxy_matches_the_loop_formula(k, temperature, chunk):
    rng = np.random.default_rng(k)
    x, y = rng.standard_normal((60, 16)), rng.standard_normal(60)
    np.testing.assert_allclose(knn_proxy(x, y, k=k, temperature=temperature, chunk_size=chunk),
                               _knn_loop(x, y, k, temperature), rtol=1e-12, atol=1e-12)


def test_knn_proxy_other_similarities_and_bad_input():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal(20)
    nearest = np.argsort(((x[:, None] - x[None]) ** 2).sum(-1) + np.eye(20) * 1e9, axis=1)[:, 0]
    np.testing.assert_allclose(knn_proxy(x, y, k=1, similarity="euclidean"), y[nearest])
    with pytest.raises(ValueError, match="finite; structures \\[3\\]"):
        knn_proxy(x, np.where(np.arange(20) == 3, np.nan, y))
    with pytest.raises(ValueError, match="K\\+1=6 structures, got 5"):
        knn_proxy(x[:5], y[:5])
    with pytest.raises(ValueError, match="similarity must be one of"):
        knn_proxy(x, y, similarity="manhattan")


def _kkt_residual(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Max violation of the simplex-QP KKT conditions at w (gradient equal on the support,
    not smaller off it)."""
    gradient = 2 / len(y) * p @ (p.T @ w - y)
    support = w > 1e-6
    level = gradient[support].mean()
    return max(np.abs(gradient[support] - level).max(), max(0.0, (level - gradient[~support]).max(initial=0)))


def test_weights_satisfy_kkt_and_agree_between_solvers():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(200)
    p = np.stack([y + s * rng.standard_normal(200) for s in (0.3, 0.5, 0.6, 2.0, 3.0)] +
                 [-y, np.zeros(200)])
    clarabel = solve_weights(p, y, solver="CLARABEL")
    osqp = solve_weights(p, y, solver="OSQP")
    assert clarabel.status == "optimal" and clarabel.weights.sum() == pytest.approx(1)
    assert (clarabel.weights >= 0).all() and clarabel.weights[5] < 1e-6
    assert _kkt_residual(p, y, clarabel.weights) < 1e-6
    np.testing.assert_allclose(osqp.weights, clarabel.weights, atol=1e-3)
    assert clarabel.proxy_error <= min(np.mean((row - y) ** 2) for row in p) + 1e-12


def test_a_module_cap_without_a_mixed_integer_solver_is_a_clear_error():
    p = np.random.default_rng(2).standard_normal((4, 30))
    with pytest.raises(RuntimeError, match="mixed-integer QP.*Leave max_modules unset"):
        solve_weights(p, p[0], max_modules=2)
    with pytest.raises(ValueError, match="predictions and targets must be finite"):
        solve_weights(p, np.full(30, np.nan))


def _weights_file(hub, name):
    return hub.folder(name) / "weights.safetensors"


def test_merge_with_weight_one_reproduces_the_module(hub):
    from safetensors.torch import load_file

    merged = merge_safetensors([_weights_file(hub, "heat_full"), _weights_file(hub, "dir_gap_full")], [1.0, 0.0])
    original = load_file(str(_weights_file(hub, "heat_full")))
    assert merged.keys() == original.keys()
    for key in original:
        assert torch.equal(merged[key], original[key]), key


def test_merge_half_half_is_the_parameter_mean(hub):
    from safetensors.torch import load_file

    a, b = (load_file(str(_weights_file(hub, n))) for n in ("heat_full", "dir_gap_full"))
    merged = merge_safetensors([_weights_file(hub, "heat_full"), _weights_file(hub, "dir_gap_full")], [0.5, 0.5])
    changed = 0
    for key in a:
        expected = ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)
        assert torch.equal(merged[key], expected), key
        changed += not torch.equal(a[key], b[key])
    assert changed > 0


def test_merging_streams_one_tensor_name_at_a_time(hub, monkeypatch):
    """Loaded tensors alive at once never exceed two per name: with 4 modules, at most
    about two modules' bytes are held (the merged result plus the current tensors)."""
    from safetensors import safe_open as real_safe_open

    live: dict[int, int] = {}
    peak = [0]

    class TrackedHandle:
        def __init__(self, path, framework):
            self.handle = real_safe_open(path, framework=framework)

        def keys(self):
            return self.handle.keys()

        def get_tensor(self, name):
            tensor = self.handle.get_tensor(name)
            key = id(tensor)
            live[key] = tensor.numel() * tensor.element_size()
            weakref.finalize(tensor, live.pop, key, None)
            peak[0] = max(peak[0], sum(live.values()))
            return tensor

    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", TrackedHandle)
    names = ["heat_full", "carbon_energy", "dir_gap_full", "heat_full"]
    files = [_weights_file(hub, n) for n in names]
    merged = merge_safetensors(files, [0.4, 0.3, 0.2, 0.1])
    largest = max(t.numel() * t.element_size() for t in merged.values())
    module_bytes = sum(t.numel() * t.element_size() for t in merged.values())
    assert peak[0] <= 2 * largest
    assert peak[0] + module_bytes <= 2 * module_bytes


def test_merge_refuses_files_that_do_not_line_up(hub):
    with pytest.raises(ValueError, match="holds other tensors"):
        merge_safetensors([_weights_file(hub, "heat_full"), _weights_file(hub, "gap_adapter")], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per module file"):
        merge_safetensors([_weights_file(hub, "heat_full")], [0.5, 0.5])


def test_embeddings_share_graphs_and_are_cached(hub, hub_data, tmp_path, monkeypatch):
    import ase.io

    from ase_moma.backbone import Backbone
    from ase_moma.compose import module_embeddings

    frames = ase.io.read(hub_data["perov"], ":12")
    graph_calls = []
    real_graph = Backbone.graph
    monkeypatch.setattr(Backbone, "graph", lambda self, atoms: graph_calls.append(1) or real_graph(self, atoms))
    names = hub.names()
    first = module_embeddings(hub, names, frames, device="cpu", cache_dir=tmp_path, progress=False)
    assert len(graph_calls) == len(frames)  # one graph per structure, shared by every module
    assert {name: e.shape for name, e in first.items()} == {name: (12, 128) for name in names}
    assert not np.allclose(first["heat_full"], first["gap_adapter"])
    direct = hub.load_module("gap_adapter", device="cpu").backbone.embed(frames)
    np.testing.assert_allclose(first["gap_adapter"], direct.double().numpy(), rtol=1e-6, atol=1e-6)

    from ase_moma.plugins.sevennet import SevenNetBackbone

    monkeypatch.setattr(SevenNetBackbone, "node_features", lambda *a: pytest.fail("cache was not used"))
    again = module_embeddings(hub, names, frames, device="cpu", cache_dir=tmp_path, progress=False)
    for name in names:
        np.testing.assert_array_equal(again[name], first[name])
