"""The fusion head learns what the graph misses from the view that carries it, and starts as the graph model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_moma.modalities.fusion_head import FusionHead


def _generated(n: int, seed: int):
    """Graph features explain a linear part; composition feature 0 explains a non-linear rest; text is noise."""
    rng = np.random.default_rng(seed)
    graph, composition, text = rng.normal(size=(n, 16)), rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    direction = np.linspace(-1, 1, 16)
    target = graph @ direction / 4 + np.tanh(2 * composition[:, 0])
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return as_tensor(graph), {"composition": as_tensor(composition), "text": as_tensor(text)}, as_tensor(target)


def _graph_only(graph, target):
    """The graph model: a least-squares linear read-out of its features (what LP-FT starts from)."""
    design = torch.cat([graph, torch.ones(len(graph), 1, dtype=graph.dtype)], dim=1)
    weights = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    return lambda g: torch.cat([g, torch.ones(len(g), 1, dtype=g.dtype)], dim=1) @ weights


def _inputs(graph, views, present=None):
    features = {"graph": graph, **views}
    mask = present or {name: torch.ones(len(graph), dtype=torch.bool) for name in views}
    return features, mask


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    graph, views, target = _generated(600, seed=0)
    graph_model = _graph_only(graph, target)
    head = FusionHead(16, {"composition": 8, "text": 8}).double()
    head.fit_normalisation(*_inputs(graph, views))
    before = head(graph_model(graph), *_inputs(graph, views))[0]
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    head.train()
    for step in range(600):
        rows = torch.randint(0, len(graph), (64,))
        prediction, _ = head(graph_model(graph[rows]), *_inputs(graph[rows], {k: v[rows] for k, v in views.items()}))
        loss = torch.nn.functional.mse_loss(prediction, target[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    return head, graph_model, (graph_model(graph) - before).detach()


def test_before_training_the_head_is_the_graph_model(trained):
    _, _, start_gap = trained
    assert float(start_gap.abs().max()) == 0.0


def test_it_learns_the_part_only_another_view_carries(trained):
    head, graph_model, _ = trained
    graph, views, target = _generated(400, seed=1)  # held out
    with torch.no_grad():
        fused, gates = head(graph_model(graph), *_inputs(graph, views))
    graph_error = float((graph_model(graph) - target).abs().mean())
    assert float((fused - target).abs().mean()) < 0.4 * graph_error
    mean_gates = dict(zip(head.names, gates.mean(0).tolist()))
    assert mean_gates["composition"] > mean_gates["text"]  # it reads the view that carries the signal


def test_its_terms_sum_to_the_correction_and_name_the_view_that_carries_the_signal(trained):
    head, graph_model, _ = trained
    graph, views, target = _generated(400, seed=4)  # held out
    absent = {"composition": torch.rand(len(graph), generator=torch.Generator().manual_seed(0)) < 0.2,
              "text": torch.ones(len(graph), dtype=torch.bool)}
    absent["composition"] = ~absent["composition"]  # a fifth of the structures lack the composition view
    for present in (None, absent):
        with torch.no_grad():
            fused, _ = head(graph_model(graph), *_inputs(graph, views, present))
            terms, _ = head.contributions(*_inputs(graph, views, present))
        assert terms.shape == (len(graph), len(head.terms))
        assert torch.allclose(graph_model(graph) + terms.sum(1), fused, atol=1e-10)
    term = dict(zip(head.terms, terms.T))
    carried = np.tanh(2 * views["composition"][:, 0].numpy())
    have = absent["composition"].numpy()
    # what only the composition carries is attributed to it, structure by structure; text's term is small
    assert np.corrcoef(term["composition"].numpy()[have], carried[have])[0, 1] > 0.8
    assert float(term["text"].abs().mean()) < 0.25 * float(term["composition"][have].abs().mean())
    # a structure without the view gets its stand-in value (scaled by its gate), not a reading of the view
    assert float(term["composition"][~have].std()) < 0.1 * float(term["composition"][have].std())


def test_a_view_missing_at_prediction_time_still_predicts(trained):
    head, graph_model, _ = trained
    graph, views, target = _generated(400, seed=2)
    absent = {"composition": torch.zeros(len(graph), dtype=torch.bool), "text": torch.ones(len(graph), dtype=torch.bool)}
    with torch.no_grad():
        fused, _ = head(graph_model(graph), *_inputs(graph, views, absent))
    graph_error = float((graph_model(graph) - target).abs().mean())
    assert torch.isfinite(fused).all()
    assert float((fused - target).abs().mean()) < 1.1 * graph_error  # falls back near the graph model


def test_the_graph_view_name_is_reserved():
    with pytest.raises(ValueError, match="graph"):
        FusionHead(4, {"graph": 3})


def test_a_linear_start_is_exactly_that_linear_model():
    graph, views, _ = _generated(50, seed=3)
    head = FusionHead(16, {"composition": 8, "text": 8}).double()
    head.fit_normalisation(*_inputs(graph, views))
    rng = np.random.default_rng(0)
    weights = {"graph": rng.normal(size=16), "composition": rng.normal(size=8)}
    head.set_linear(weights, bias=0.7)
    blocks = head.standardised_blocks(*_inputs(graph, views))
    expected = 0.7 + blocks["graph"] @ weights["graph"] + blocks["composition"] @ weights["composition"]
    base = torch.zeros(len(graph), dtype=torch.float64)
    with torch.no_grad():
        fused, gates = head.eval()(base, *_inputs(graph, views))
    assert np.allclose(fused.numpy(), expected, atol=1e-12) and np.allclose(gates.numpy(), 1 / 3)


def test_a_forest_predicts_as_scikit_learn_and_survives_its_file():
    from sklearn.ensemble import RandomForestRegressor

    from ase_moma.modalities.forest import MIN_LEAF, TREES, Forest

    rng = np.random.default_rng(0)
    x, x_new = rng.normal(size=(120, 6)), rng.normal(size=(40, 6))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2
    forest = Forest.fit(x, y, seed=4)
    reference = RandomForestRegressor(n_estimators=TREES, min_samples_leaf=MIN_LEAF, random_state=4).fit(x, y)
    assert np.allclose(forest.predict(x_new), reference.predict(x_new), rtol=0, atol=1e-12)
    stored = forest.tensors("expert.composition.")
    assert np.array_equal(Forest.from_tensors(stored, "expert.composition.").predict(x_new), forest.predict(x_new))
    stored["expert.composition.left"] = stored["expert.composition.left"] + 10 ** 6
    with pytest.raises(ValueError, match="do not fit together"):
        Forest.from_tensors(stored, "expert.composition.")


def test_boosting_predicts_as_scikit_learn_and_an_older_forest_file_still_loads():
    from sklearn.ensemble import GradientBoostingRegressor

    from ase_moma.modalities.forest import BOOSTING, Forest
    from ase_moma.module_format import FUSION, MODULE_FORMAT

    rng = np.random.default_rng(1)
    x, x_new = rng.normal(size=(150, 6)), rng.normal(size=(40, 6))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2
    boosted = Forest.fit_boosted(x, y, seed=3)
    reference = GradientBoostingRegressor(random_state=3, **BOOSTING).fit(x, y)
    assert boosted.kind == "boosted" and np.allclose(boosted.predict(x_new), reference.predict(x_new), rtol=0, atol=1e-12)
    stored = boosted.tensors("expert.composition_boosted.")
    assert np.array_equal(Forest.from_tensors(stored, "expert.composition_boosted.").predict(x_new),
                          boosted.predict(x_new))
    forest = Forest.fit(x, y, seed=3)
    older = {name: tensor for name, tensor in forest.tensors("member0.expert.joint.").items()
             if not name.endswith("combine")}  # saved before boosting (module.json version 1): the mean of its trees
    with pytest.raises(ValueError, match="lacks member0.expert.joint.combine"):
        Forest.from_tensors(older, "member0.expert.joint.")
    loaded = Forest.from_tensors(MODULE_FORMAT.migrations[0].tensors[FUSION](older), "member0.expert.joint.")
    assert loaded.kind == "forest" and np.allclose(loaded.predict(x_new), forest.predict(x_new), rtol=0, atol=1e-12)


def _views(graph, composition, graph_prediction):
    from ase_moma.modalities.fused_model import Views

    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return Views(as_tensor(graph_prediction), {"graph": as_tensor(graph), "composition": as_tensor(composition)},
                 {"composition": torch.ones(len(graph), dtype=torch.bool)}, [{} for _ in graph])


def test_the_blend_leans_on_boosting_where_the_rest_is_additive_in_many_composition_features():
    """What the graph misses is a sum over eight composition features, boosting's kind of function (a forest's
    trees split one feature at a time and average them): the fusion gets a boosted composition view, its linear
    start weighs it above the composition forest, and the fused model beats the graph model on validation."""
    from ase_moma.modalities.fused_model import BOOSTED
    from ase_moma.modalities.fusion_training import FusionConfig, fit_heads

    rng = np.random.default_rng(5)
    graph, composition = rng.normal(size=(400, 16)), rng.normal(size=(400, 8))
    target = graph @ np.linspace(-1, 1, 16) / 4 + composition @ np.linspace(1, 2, 8) / 4
    graph_model = _graph_only(torch.as_tensor(graph[:300]), torch.as_tensor(target[:300]))
    val_prediction = graph_model(torch.as_tensor(graph[300:])).numpy()
    train = _views(graph[:300], composition[:300], graph_model(torch.as_tensor(graph[:300])).numpy())
    val = _views(graph[300:], composition[300:], val_prediction)
    fit = fit_heads(train, target[:300], val, target[300:], FusionConfig(members=1, epochs=20))
    assert fit.record["kept"] == "fused" and BOOSTED in fit.record["views"]
    assert fit.members[0].experts[BOOSTED].kind == "boosted" and fit.members[0].experts["composition"].kind == "forest"
    blend = fit.record["members"][0]["start"]["steps"][0]
    assert blend["step"] == "blend" and blend["weights"][BOOSTED] > blend["weights"]["composition"], blend
    assert fit.record["val_mae"]["fused"] < 0.5 * fit.record["val_mae"]["graph only"]
