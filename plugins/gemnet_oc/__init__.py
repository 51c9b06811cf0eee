"""GemNet-OC written for ase-moma (the JMP backbone): config, graphs, model, safe checkpoints."""

from ase_moma.plugins.gemnet_oc.config import GemNetOCConfig
from ase_moma.plugins.gemnet_oc.graph import GemNetGraph, build_graph, collate
from ase_moma.plugins.gemnet_oc.model import GemNetOC

__all__ = ["GemNetOCConfig", "GemNetGraph", "GemNetOC", "build_graph", "collate"]
