"""The package's seams: no import cycle, lazy loading, saved-model kinds and capabilities, the wheel's contents."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ase_moma import list_backbones
from ase_moma.capabilities import Capabilities, MissingCapability
from ase_moma.registry import backbone_class
from ase_moma.saved_models import saved_kinds

ROOT = Path(__file__).resolve().parents[1]
# Installed module name → source folder (setup.cfg's package_dir).
PACKAGE_DIRS = {"ase_moma": ROOT / "ase_moma", "ase_moma.plugins": ROOT / "plugins",
                "ase_moma.calculators": ROOT / "calculators"}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, including the top-level folders."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[0] in ("plugins", "calculators") and package == "ase_moma":
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports anywhere (module level or inside functions).

    ``from P import x`` depends on module ``P.x`` when it is one, else on ``P`` itself (a name
    taken from P). Importing ``A.B.C`` also runs the packages ``A`` and ``A.B`` first, except
    those that enclose the importing module (they are initialised before it).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    enclosing = {".".join(name.split(".")[:end]) for end in range(1, len(name.split(".")))}
    wanted: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                wanted.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    edges = set()
    for target in wanted:
        parts = target.split(".")
        chain = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
        edges.update(m for m in chain[:-1] if m in known and m not in enclosing)
        if target in known:
            edges.add(target)
    edges.discard(name)
    return edges


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 40  # the walk saw the whole package, plugins and calculators included


def test_loading_a_plain_backbone_imports_neither_compose_nor_finetune():
    code = ("import sys; from ase_moma import load_calculator; from ase.build import bulk; "
            "a = bulk('Si'); a.calc = load_calculator('sevennet', device='cpu'); a.get_potential_energy(); "
            "print(sorted(m for m in sys.modules if m.startswith(('ase_moma.compose', 'ase_moma.finetune', "
            "'ase_moma.hub', 'ase_moma.training'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_saved_model_kinds_are_registered_entry_points():
    kinds = saved_kinds()
    assert {"composed", "tuned", "module"} <= set(kinds)
    for name, ep in kinds.items():
        cls = ep.load()
        assert cls.name == name and cls.description


def test_every_backbone_declares_its_capabilities():
    rows = {row.name: row for row in list_backbones()}
    for name in ("sevennet", "chgnet", "mace", "orb", "matgl"):
        assert isinstance(rows[name].capabilities, Capabilities)
        assert rows[name].capabilities is backbone_class(name).capabilities
    assert rows["chgnet"].capabilities.magmoms and not rows["chgnet"].capabilities.energy_terms
    assert rows["sevennet"].capabilities.energy_terms and not rows["sevennet"].capabilities.parity
    assert not rows["orb"].capabilities.adapters


def test_unsupported_combinations_are_refused_before_any_data_is_read(tmp_path, sources):
    from ase_moma.cli import main
    from ase_moma.hub import Hub, TrainConfig, train_module
    from ase_moma import load_backbone

    missing = tmp_path / "never_written.extxyz"  # reading it would be a FileNotFoundError
    with pytest.raises(MissingCapability, match="chgnet backbone cannot do a spin head: it lacks energy_terms"):
        from ase_moma.finetune import FinetuneConfig, finetune_potential
        finetune_potential("chgnet", missing, missing, tmp_path / "out",
                           FinetuneConfig(method="zero_shot", spin_head="collinear", refit_references=False),
                           device="cpu")
    hub = Hub.create(tmp_path / "orb_hub", load_backbone("orb", sources["orb"], device="cpu"))
    with pytest.raises(MissingCapability, match="orb backbone cannot do adapter modules: it lacks adapters"):
        train_module(hub, "gap", missing, "gap", config=TrainConfig(kind="adapter"), device="cpu")
    assert main(["finetune", "--backbone", "chgnet", "--train", str(missing), "--valid", str(missing),
                 "--method", "readout", "-o", str(tmp_path / "o2"), "--device", "cpu"]) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()


def test_calculator_parameters_name_the_model(calculator):
    calc = calculator("sevennet", "float64")
    parameters = calc.todict()
    assert parameters["backbone"] == "sevennet" and parameters["source"] is None
    assert parameters["dtype"] == "float64" and parameters["fingerprint"] == calc.backbone.fingerprint()


@pytest.mark.skipif(sys.platform != "linux", reason="the wheel check builds with pip on the CI's platform")
def test_the_built_wheel_holds_every_module_and_the_starter_hub(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("ase_moma-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    packed = {name for name in names if name.endswith(".py")}
    expected = {"/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")
                for name, path in _modules().items()}
    assert expected == packed, (f"missing from the wheel: {sorted(expected - packed)}; "
                                f"extra: {sorted(packed - expected)}")
    starter = ROOT / "ase_moma" / "hub" / "starter"
    shipped = {f"ase_moma/hub/starter/{path.relative_to(starter).as_posix()}" for path in starter.rglob("*")
               if path.is_file() and not path.name.startswith(".")}
    assert shipped and shipped == {name for name in names if name.startswith("ase_moma/hub/starter/")}
