"""Fine-tuning methods are classes behind one registry: ours, a third party's, and no name switches left."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
from potential_fixtures import emt_copper
from third_party_site import install_into

from ase_moma.cli import main
from ase_moma.errors import EXIT_USAGE
from ase_moma.finetune import FinetuneConfig, LoRAOptions, SparseOptions
from ase_moma.finetune.methods import FinetuneMethod, method_class, method_names

PACKAGE = Path(__file__).resolve().parents[1] / "ase_moma"
TOY = Path(__file__).parent / "third_party" / "toy_method"
OURS = {"zero_shot", "readout", "full", "lora", "sparse"}


def test_our_methods_are_registered_classes_with_their_own_options():
    assert OURS <= set(method_names())
    for name in OURS:
        cls = method_class(name)
        assert issubclass(cls, FinetuneMethod) and cls.name == name
    assert method_class("sparse").Options is SparseOptions and method_class("lora").Options is LoRAOptions
    assert FinetuneConfig(method="lora").options == LoRAOptions()
    with pytest.raises(ValueError, match="unknown fine-tuning method 'dora'; choose one of .*sparse"):
        FinetuneConfig(method="dora").check()
    with pytest.raises(TypeError, match="the full method takes MethodOptions, got SparseOptions"):
        FinetuneConfig(method="full", options=SparseOptions()).check()
    with pytest.raises(ValueError, match="unknown sparsity preset 'M'"):
        FinetuneConfig(options=SparseOptions(preset="M")).check()


def test_a_flag_of_another_method_is_refused(tmp_path, capsys):
    assert main(["finetune", "--backbone", "sevennet", "--train", "t.xyz", "--valid", "v.xyz", "-o",
                 str(tmp_path / "out"), "--method", "full", "--preset", "H", "--rank", "8"]) == EXIT_USAGE
    assert "--preset, --rank are not an option of --method full" in capsys.readouterr().err


def _compares_a_method_name(node: ast.Compare) -> bool:
    """Whether ``node`` compares something named like a method (``method``, ``config.method``) with a
    fine-tuning method's name."""
    def named_method(part: ast.AST) -> bool:
        return (isinstance(part, ast.Name) and "method" in part.id) or \
               (isinstance(part, ast.Attribute) and "method" in part.attr)

    def strings(part: ast.AST) -> bool:
        return (isinstance(part, ast.Constant) and part.value in OURS) or \
               (isinstance(part, (ast.Tuple, ast.List, ast.Set)) and any(strings(e) for e in part.elts))

    parts = [node.left, *node.comparators]
    return any(named_method(p) for p in parts) and any(strings(p) for p in parts)


def test_no_code_outside_the_registry_switches_on_a_method_name():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "finetune/methods" in path.as_posix():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and _compares_a_method_name(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    """The toy method's distribution, pip-installed into its own directory (the environment is untouched)."""
    return install_into(TOY, tmp_path_factory.mktemp("method_site"))


def test_a_third_party_method_trains_through_the_command_line(toy_site, tmp_path):
    ase.io.write(tmp_path / "train.extxyz", emt_copper(4, 0))
    ase.io.write(tmp_path / "valid.extxyz", emt_copper(2, 1))
    out = tmp_path / "tuned"
    paths = [str(toy_site), *filter(None, [os.environ.get("PYTHONPATH")])]
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from ase_moma.cli import main; sys.exit(main(sys.argv[1:]))",
         "finetune", "--backbone", "sevennet", "--train", str(tmp_path / "train.extxyz"), "--valid",
         str(tmp_path / "valid.extxyz"), "--method", "readout_scaled", "--lr-scale", "2", "--epochs", "1",
         "--batch-size", "2", "--max-steps", "1", "--device", "cpu", "--no-stress-check", "-o", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)}, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "finetune.json").read_text())
    assert record["method"] == "readout_scaled" and record["config"]["options"] == {"lr_scale": 2.0}
    assert record["result"]["steps"] == 1
    assert "readout_scaled fine-tuning: 1 steps" in result.stdout
