"""Where a model's weights came from: the record of a base backbone, and loading it back checked.

A record is ``{"name", "version", "source", "fingerprint"}``: the registered
backbone name, the packages' versions, the source as the user named it (None for
the embedded default, or the folder of a saved model, which is itself resolved
through its own record, recursively) and the fingerprint of the weights. Hubs,
compositions, fine-tuned potentials and modules all keep one, and loading
refuses weights whose fingerprint differs from it.
"""

from __future__ import annotations

from typing import Any

import torch

from ase_moma.backbone import Backbone
from ase_moma.module_files import HubIntegrityError

RECORD_KEYS = ("name", "version", "source", "fingerprint")


def backbone_record(backbone: Backbone) -> dict[str, Any]:
    """What is recorded of ``backbone``: name, package versions, requested source, fingerprint."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    versions = []
    for module in backbone.requires:
        for dist in packages_distributions().get(module, [module]):
            try:
                versions.append(f"{dist} {version(dist)}")
            except PackageNotFoundError:
                continue
    return {"name": backbone.name, "version": ", ".join(versions), "source": backbone.requested_source,
            "fingerprint": backbone.fingerprint()}


def load_recorded_backbone(record: dict[str, Any], built_on: str, device: str | torch.device = "auto",
                           dtype: str | torch.dtype = "float32", source: str | None = None,
                           **options: Any) -> Backbone:
    """The backbone a ``record`` names, with its fingerprint checked.

    built_on: what was built on it (e.g. ``"hub PATH"``), for the error message.
    source: load from here instead of the recorded source. A recorded source
    that is a saved model's folder is loaded through that folder's own record.
    """
    from ase_moma.loading import load_backbone

    backbone = load_backbone(record["name"], source or record.get("source"), device=device, dtype=dtype,
                             **options)
    if backbone.fingerprint() != record["fingerprint"]:
        raise HubIntegrityError(
            f"the {record['name']} weights loaded from {backbone.source} have fingerprint "
            f"{backbone.fingerprint()[:16]}…, but {built_on} was built on {record['fingerprint'][:16]}…"
        )
    return backbone
