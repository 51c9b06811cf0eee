"""path_weights tags real parameters; e3nn irrep slices tile each weight; fingerprints are stable."""

from __future__ import annotations

import pytest
from conftest import BACKBONES

from ase_moma import load_backbone


@pytest.mark.parametrize("name", BACKBONES)
def test_path_weights_name_real_parameters(calculator, name):
    backbone = calculator(name).backbone
    parameters = dict(backbone.model.named_parameters())
    weights = backbone.path_weights()
    assert weights, f"{name} exposes no path weights"
    for weight in weights:
        assert weight.name in parameters
        assert weight.kind in {"linear", "tensor_product", "radial_mlp"}
        if weight.irrep_slices:
            spans = sorted(span for spans in weight.irrep_slices.values() for span in spans)
            assert spans[0][0] == 0 and spans[-1][1] == parameters[weight.name].numel()
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_sevennet_path_weights_cover_every_block_and_irrep(calculator):
    weights = calculator("sevennet", "float32").backbone.path_weights()
    layers = {w.layer.split("_")[0] for w in weights}
    assert {"0", "1", "2", "3", "4"} <= layers
    degrees = set().union(*(w.irrep_slices for w in weights if w.kind == "linear"))
    assert degrees == {0, 1, 2}
    assert {w.kind for w in weights} == {"linear", "radial_mlp"}


def test_fingerprint_is_the_pretrained_weights_not_the_dtype(calculator):
    f32 = calculator("sevennet", "float32").backbone.fingerprint()
    f64 = calculator("sevennet", "float64").backbone.fingerprint()
    assert f32 == f64 and len(f32) == 64
    assert calculator("chgnet").backbone.fingerprint() != f32


def test_fingerprint_tells_checkpoints_apart(sources, model_dir):
    from model_factories import save_mace_model_file

    from ase_moma.plugins.mace import save_mace

    other = save_mace_model_file(model_dir / "other.model", seed=1)
    other_safe = model_dir / "other_safe"
    save_mace(load_backbone("mace", str(other), device="cpu", trust_pickle=True).model, other_safe)
    assert (load_backbone("mace", str(other_safe), device="cpu").fingerprint()
            != load_backbone("mace", sources["mace"], device="cpu").fingerprint())
