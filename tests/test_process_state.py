"""Loading a backbone leaves the user's process as it was: environment, torch.load's safety, dtype, threads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from ase_moma.process_state import kept_process_state

PAYLOAD = textwrap.dedent("""
    import os, pathlib, sys
    import torch

    class Payload:  # unpickling this runs code: it touches a marker file
        def __reduce__(self):
            return (pathlib.Path.touch, (pathlib.Path(sys.argv[2]),))

    torch.save({"weights": torch.zeros(2), "payload": Payload()}, sys.argv[3])
    before = {key: os.environ.get(key) for key in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",)}
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()

    from ase_moma import load_backbone
    load_backbone("mace", sys.argv[1], device="cpu")
    import mace.calculators  # already imported: its module code does not run again

    assert {key: os.environ.get(key) for key in before} == before, os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    assert (torch.get_num_threads(), torch.get_default_dtype()) == (threads, dtype)
    try:
        torch.load(sys.argv[3])  # the user's own plain load, after ours
    except Exception as error:
        print("refused:", type(error).__name__)
    assert not pathlib.Path(sys.argv[2]).exists(), "the payload ran"
""")


def test_after_loading_mace_a_plain_torch_load_still_refuses_a_code_payload(sources, tmp_path):
    marker, payload = tmp_path / "payload_ran", tmp_path / "payload.pt"
    # a fresh process as a user's starts: this one imported mace for its fixtures, which set the variable
    environment = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    run = subprocess.run([sys.executable, "-c", PAYLOAD, sources["mace"], str(marker), str(payload)],
                         capture_output=True, text=True, timeout=300, env=environment)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused: UnpicklingError" in run.stdout
    assert not marker.exists()


def test_the_kept_state_is_put_back_after_the_block(monkeypatch):
    monkeypatch.delenv("ASE_MOMA_PROBE", raising=False)
    monkeypatch.setenv("ASE_MOMA_KEPT", "1")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    with kept_process_state():
        os.environ["ASE_MOMA_PROBE"] = "set inside"
        os.environ["ASE_MOMA_KEPT"] = "changed"
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
    assert "ASE_MOMA_PROBE" not in os.environ and os.environ["ASE_MOMA_KEPT"] == "1"
    assert (torch.get_num_threads(), torch.get_default_dtype()) == (threads, dtype)
