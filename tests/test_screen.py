"""`ase-moma screen`: every candidate once, in order, whatever dies on the way; local and Ray agree.

Real SevenNet-0, a real Ray cluster started in the test (in-process, and by `ray start --head`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import ase.io
import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk

from ase_moma.cli import main
from ase_moma.screen import ModelSpec, screen
from ase_moma.screen.run_folder import COMMITTED, RunFolder, RunMismatch

COLUMNS = ["index", "id", "formula", "energy_per_atom", "error"]
LATTICE = {"Si": 5.43, "Ge": 5.65, "C": 3.57}


def candidates(count: int, seed: int = 0, bad: int | None = None) -> list[Atoms]:
    """Strained, rattled diamond Si, Ge and C cells with ids; at ``bad``, an element SevenNet-0 lacks."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        element = ("Si", "Ge", "C")[index % 3]
        atoms = bulk(element, "diamond", a=LATTICE[element] * rng.uniform(0.97, 1.03))
        atoms.rattle(0.03, seed=index)
        frames.append(atoms)
    if bad is not None:
        frames[bad] = Atoms("Og2", positions=[[0, 0, 0], [1.6, 0, 0]], cell=[6, 6, 6], pbc=True)
    for index, atoms in enumerate(frames):
        atoms.info["id"] = f"cand{index:03d}"
    return frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen")
    ase.io.write(folder / "candidates.extxyz", candidates(200, bad=57))
    return folder


@pytest.fixture(scope="module")
def local_table(inputs):
    return screen(inputs / "candidates.extxyz", ModelSpec("sevennet", device="cpu"), inputs / "local",
                  shard_size=25, rank_by="energy_per_atom", progress=False)


def test_every_candidate_once_and_one_error_row_for_the_bad_one(local_table, inputs):
    assert list(local_table["id"]) == [f"cand{i:03d}" for i in range(200)]
    errors = local_table[local_table["error"].notna()]
    assert list(errors["id"]) == ["cand057"] and "does not cover element(s) Og" in errors["error"].iloc[0]
    ranked = local_table.dropna(subset=["energy_per_atom"]).sort_values("rank")
    assert ranked["energy_per_atom"].is_monotonic_increasing and ranked["rank"].tolist() == list(range(199))
    assert (inputs / "local" / "results.csv").is_file()
    first = ase.io.read(__import__("io").StringIO(local_table["structure"].iloc[0]), format="extxyz")
    assert first.get_potential_energy() / len(first) == pytest.approx(local_table["energy_per_atom"].iloc[0])


def test_a_run_folder_refuses_another_screening(local_table, inputs):  # local_table wrote inputs/"local"
    with pytest.raises(FileExistsError, match="--resume"):
        RunFolder(inputs / "local", {"candidates": 200}, resume=False, overwrite=False)
    with pytest.raises(RunMismatch, match="candidates"):
        RunFolder(inputs / "local", {"candidates": 201}, resume=True, overwrite=False)


def test_reopening_a_run_folder_removes_a_half_written_shard(tmp_path):
    folder = RunFolder(tmp_path / "run", {"candidates": 3}, resume=False, overwrite=False)
    assert folder.commit(0, [{"index": 0, "energy_per_atom": -1.0}])
    leftover = tmp_path / "run" / "shards" / ".00001.parquet.x1y2z3.tmp.parquet"  # a driver killed mid-write
    leftover.write_bytes(b"PAR1 half")
    again = RunFolder(tmp_path / "run", {"candidates": 3}, resume=True, overwrite=False)
    assert not leftover.exists() and again.done(0) and not again.done(1)


@pytest.mark.usefixtures("ray_turn")
def test_ray_gives_the_local_table_even_when_a_worker_is_killed(local_table, inputs, monkeypatch):
    ray = pytest.importorskip("ray")
    from ase_moma.screen.ray_engine import RayEngine

    engine = RayEngine("local", workers=2)
    commits, killed = [], []
    original = RunFolder.commit

    def commit_then_kill_a_worker(folder, shard, rows):
        written = original(folder, shard, rows)
        commits.append((shard, written))
        if not killed:  # SIGKILL one actor's process while the other shards are queued on it
            pid = ray.get(engine.actors[0].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return written

    monkeypatch.setattr(RunFolder, "commit", commit_then_kill_a_worker)
    table = screen(inputs / "candidates.extxyz", ModelSpec("sevennet", device="cpu"), inputs / "ray",
                   engine=engine, shard_size=25, rank_by="energy_per_atom", progress=False)
    assert killed and sorted(shard for shard, written in commits if written) == list(range(8))
    pd.testing.assert_frame_equal(table[COLUMNS], local_table[COLUMNS], check_exact=False, rtol=1e-6)


def test_a_driver_killed_mid_run_resumes_only_the_missing_shards(tmp_path):
    ase.io.write(tmp_path / "candidates.extxyz", candidates(12, seed=1))
    command = [sys.executable, "-m", "ase_moma.cli", "screen", str(tmp_path / "candidates.extxyz"), "--backbone",
               "sevennet", "--device", "cpu", "--relax", "--steps", "15", "--shard-size", "3"]
    driver = subprocess.Popen(command + ["-o", str(tmp_path / "run")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    shards = tmp_path / "run" / "shards"
    while driver.poll() is None and not list(shards.glob(COMMITTED)):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {path.name: path.stat().st_mtime_ns for path in shards.glob(COMMITTED)}
    assert 0 < len(before) < 4, "the driver was to be killed mid-run"
    assert not (tmp_path / "run" / "results.parquet").exists()
    assert main(command[3:] + ["-o", str(tmp_path / "run"), "--resume"]) == 0
    after = {path.name: path.stat().st_mtime_ns for path in shards.glob(COMMITTED)}
    assert len(after) == 4 and all(after[name] == stamp for name, stamp in before.items())
    assert sorted(path.name for path in shards.iterdir()) == sorted(after)  # no half-written shard is left
    assert main(command[3:] + ["-o", str(tmp_path / "whole")]) == 0
    resumed, whole = (pd.read_parquet(tmp_path / name / "results.parquet") for name in ("run", "whole"))
    pd.testing.assert_frame_equal(resumed.drop(columns=["structure"]), whole.drop(columns=["structure"]))


@pytest.mark.usefixtures("ray_turn")
def test_address_auto_reaches_a_cluster_started_with_ray_start(tmp_path, local_table, inputs):
    pytest.importorskip("ray")
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    short = tempfile.mkdtemp(prefix="rt")  # this cluster's files, not a user's /tmp/ray; sockets need a short path
    env = dict(os.environ, RAY_TMPDIR=short)
    started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1",
                              "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True,
                             text=True)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        ase.io.write(tmp_path / "few.extxyz", candidates(30))
        run = subprocess.run([sys.executable, "-m", "ase_moma.cli", "screen", str(tmp_path / "few.extxyz"),
                              "--backbone", "sevennet", "--device", "cpu", "--engine", "ray", "--address", "auto",
                              "--shard-size", "10", "-o", str(tmp_path / "run")],
                             env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(short, ignore_errors=True)
    table = pd.read_parquet(tmp_path / "run" / "results.parquet")
    np.testing.assert_allclose(table["energy_per_atom"].to_numpy()[:30:3],
                               local_table["energy_per_atom"].to_numpy()[:30:3], rtol=1e-6)


def test_screen_flags_are_checked():
    assert main(["screen", "x.extxyz", "--backbone", "sevennet", "-o", "r", "--workers", "2"]) == 2
    assert main(["screen", "x.extxyz", "--backbone", "sevennet", "-o", "r", "--cell"]) == 2
