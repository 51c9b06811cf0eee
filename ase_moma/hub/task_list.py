"""Training many hub modules from a task list, in this process or as Ray tasks.

A task list is a JSON list, one object per module: ``name``, ``data``, ``target``, and optionally
``split``, ``task``, ``unit`` and any :class:`~ase_moma.training.property_models.TrainConfig` field
(``epochs``, ``kind``, ...). Paths are relative to the list's folder. A module the hub already has is
kept, so running the same list again finishes what an interrupted run left. Each job trains with
:func:`train_module`, which keeps a checkpoint after every epoch in ``HUB/.work/<name>/``: a Ray job whose
worker dies is retried by Ray and resumes from that checkpoint. Writes to the hub take its lock, so jobs finishing together are safe.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ase_moma.training.property_models import TrainConfig

JOB_RETRIES = 3
"""Times Ray reruns a job whose worker died (each rerun resumes from the job's last epoch)."""
SPEC_KEYS = ("name", "data", "target", "split", "task", "unit")


def read_task_list(path: str | Path) -> list[dict[str, Any]]:
    """The jobs of a task list, paths made absolute; ValueError naming the entry that is wrong."""
    path = Path(path)
    try:
        jobs = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"task list {path} is not JSON: {error}") from None
    if not isinstance(jobs, list) or not jobs:
        raise ValueError(f"task list {path} must be a non-empty JSON list of tasks")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    names = set()
    for number, job in enumerate(jobs):
        if not isinstance(job, dict) or not {"name", "data", "target"} <= job.keys():
            raise ValueError(f"task list {path}, entry {number}: needs name, data and target")
        unknown = sorted(set(job) - set(SPEC_KEYS) - fields)
        if unknown:
            raise ValueError(f"task list {path}, entry {number}: unknown keys {unknown}")
        if job["name"] in names:
            raise ValueError(f"task list {path}: module name {job['name']!r} appears twice")
        names.add(job["name"])
        for key in ("data", "split"):
            if job.get(key) is not None:
                job[key] = str((path.parent / job[key]).resolve())
    return jobs


def train_job(hub_path: str, job: dict[str, Any], device: str, overwrite: bool) -> dict[str, Any]:
    """Train one job's module into the hub (or keep it when the hub has it); ``{"name", "status", ...}``."""
    from ase_moma.hub.store import Hub
    from ase_moma.hub.training import train_module

    hub = Hub(hub_path)
    if job["name"] in hub.names() and not overwrite:
        return {"name": job["name"], "status": "kept (already in the hub)"}
    config = TrainConfig(**{k: v for k, v in job.items() if k not in SPEC_KEYS})
    meta = train_module(hub, job["name"], job["data"], job["target"], config=config, split=job.get("split"),
                        task=job.get("task"), unit=job.get("unit", ""), device=device, overwrite=overwrite,
                        progress=False)
    return {"name": job["name"], "status": "trained", "val_mae": meta["metrics"]["val_mae"]}


def train_tasks(hub_path: str | Path, jobs: list[dict[str, Any]], *, engine: str = "local", address: str = "local",
                workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                device: str = "auto", overwrite: bool = False) -> list[dict[str, Any]]:
    """Train every job's module; one result per job, in order. ``engine``: ``"local"`` (one after the
    other here) or ``"ray"`` (``workers`` jobs at a time as Ray tasks, retried when a worker dies)."""
    hub_path = str(Path(hub_path).resolve())
    if engine == "local":
        return [train_job(hub_path, job, device, overwrite) for job in jobs]
    from ase_moma.screen.ray_engine import ray_session

    with ray_session(address, workers * cpus_per_worker) as ray:
        remote = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_retries=JOB_RETRIES)(train_job)
        return ray.get([remote.remote(hub_path, job, device, overwrite) for job in jobs])
