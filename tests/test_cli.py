"""The ase-moma command line: registry table and atomic batched prediction."""

from __future__ import annotations

from importlib.metadata import version

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from ase_moma import cli
from ase_moma.cli import main


def test_backbones_table(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["name", "package", "usable", "weights"]
    assert any(line.startswith("sevennet") and "embedded" in line for line in out.splitlines())


def test_version_prints_the_installed_package(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ase-moma {version('ase-moma')}"


def test_predict_writes_results_for_every_frame(tmp_path, calculator):
    frames = [bulk("Si", "diamond", 5.43 + 0.01 * i) for i in range(3)] + [molecule("CH4")]
    source, target = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    ase.io.write(source, frames)
    assert main(["predict", str(source), "--backbone", "sevennet", "--device", "cpu",
                 "-o", str(target), "--batch-size", "2"]) == 0
    written = ase.io.read(target, ":")
    assert len(written) == 4
    calc = calculator("sevennet", "float32")
    for atoms, frame in zip(written, frames):
        frame.calc = calc
        assert abs(atoms.get_potential_energy() - frame.get_potential_energy()) < 1e-5
        assert np.abs(atoms.get_forces() - frame.get_forces()).max() < 1e-5
    assert written[0].get_stress().shape == (6,)


def test_predict_failure_leaves_no_output(tmp_path, capsys):
    beyond = Atoms(numbers=[14, 110], positions=[[0, 0, 0], [1.4, 1.4, 1.4]], cell=[4, 4, 4], pbc=True)
    frames = [bulk("Si", "diamond", 5.43), beyond]  # SevenNet-0 does not cover Z = 110
    source, target = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    ase.io.write(source, frames)
    status = main(["predict", str(source), "--backbone", "mace", "--source", str(tmp_path / "missing"),
                   "-o", str(target)])
    assert status == 1 and "MACE model not found" in capsys.readouterr().err
    status = main(["predict", str(source), "--backbone", "sevennet", "--device", "cpu", "-o", str(target)])
    assert status == 1 and "structure 1" in capsys.readouterr().err
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [source]


def test_predict_refuses_to_overwrite(tmp_path, capsys):
    source, target = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    ase.io.write(source, [bulk("Si", "diamond", 5.43)])
    target.write_text("keep me")
    assert main(["predict", str(source), "--backbone", "sevennet", "-o", str(target)]) == 1
    assert "already exists" in capsys.readouterr().err and target.read_text() == "keep me"


def test_exit_status_says_what_kind_of_failure(tmp_path, capsys, monkeypatch):
    """Refused input exits 1 with one line, a command line that cannot work exits 2, a bug shows its traceback."""
    source = tmp_path / "in.extxyz"
    ase.io.write(source, [bulk("Si", "diamond", 5.43)])
    assert main(["predict", str(source), "--model", str(tmp_path / "typo_model"), "-o", str(tmp_path / "o")]) == 1
    assert "typo_model: no such folder" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["predict", str(source), "--model", str(tmp_path / "plain"), "-o", str(tmp_path / "o")]) == 1
    assert "is a folder, but not one ase-moma wrote" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "plain"), "--method", "full", "-o", str(tmp_path / "x")]) == 2
    assert "does not use --method, --output" in capsys.readouterr().err

    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "_backbones", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["backbones"])


def test_moved_fraction_keeps_its_old_name():
    for flag in ("--moved-fraction", "--target-sparsity"):
        assert cli._parser().parse_args(["finetune", flag, "0.3"]).moved_fraction == 0.3
