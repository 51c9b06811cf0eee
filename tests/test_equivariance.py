"""Layer-level equivariance with e3nn's own assertion: what adapters and sparse increments change
keeps an e3nn layer equivariant (whole-model rotation tests live beside each backbone's physics)."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant
from torch.nn.utils import parametrize

import ase_moma  # noqa: F401  (allow-lists slice so e3nn imports)
from ase_moma.adapters import Adapter
from ase_moma.finetune.sparse import LayerThreshold, SparseIncrement, ThresholdOffset

IRREPS = "8x0e+4x1o+2x2e"


def test_an_acting_adapter_is_equivariant():
    torch.manual_seed(0)
    adapter = Adapter(IRREPS)
    with torch.no_grad():
        adapter.up.weight.normal_()  # a fresh adapter is the identity: make it act
    assert_equivariant(adapter, irreps_in=[o3.Irreps(IRREPS)], irreps_out=[o3.Irreps(IRREPS)])


def test_a_sparse_increment_keeps_an_e3nn_linear_equivariant():
    torch.manual_seed(1)
    linear = o3.Linear(IRREPS, "6x0e+3x1o+2x2e")
    offset = ThresholdOffset()
    increment = SparseIncrement(linear.weight, LayerThreshold(0.05), offset, sigma=0.1)
    with torch.no_grad():
        offset.value.fill_(0.02)  # a budget cut as well: some entries pruned, the rest moved
    assert 0 < int(torch.count_nonzero(increment.increment())) < linear.weight.numel()
    parametrize.register_parametrization(linear, "weight", increment)
    assert_equivariant(linear)
