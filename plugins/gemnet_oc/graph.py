"""GemNet-OC's four graphs and its triplet and quadruplet indices, built with numpy.

One structure gives four directed graphs over the same atoms (an edge is a source
atom's periodic image, a target atom and the image's cell shift, and carries
messages from source to target):

- ``a2a``: every pair within ``cutoff_aint`` (atom-atom interactions);
- ``main``: the embedded edges, made symmetric (each edge present both ways; which
  capped pairs count is ``GemNetOCConfig.pair_rule``);
- ``aea``: atom-to-edge / edge-to-atom interactions; ``qint``: quadruplet interactions.

The smaller graphs are taken from ``a2a`` by cut-off and by a per-target neighbour
cap that keeps ties: every edge no longer than the (k+1)-th nearest distance plus
``degeneracy_tolerance`` stays, as in the reference implementation JMP was trained
with (whose atom-atom cap compares squared distances). The index arrays then say
which edges meet in a triplet (edge b→a feeding edge c→a) or a quadruplet
(d→b→a←c), grouped by the edge they update. :func:`collate` batches structures by
offsetting every index by the sizes of the structures before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from ase_moma.plugins.gemnet_oc.config import GemNetOCConfig

GRAPHS = ("a2a", "main", "aea", "qint")

# Which index space each index array points into ("" for positions within a group).
INDEX_SPACES: dict[str, str] = {
    **{f"{g}_src": "atom" for g in GRAPHS}, **{f"{g}_tgt": "atom" for g in GRAPHS},
    "main_swap": "main", "a2a_inner": "", "aea_inner": "",
    "e2e_in": "main", "e2e_out": "main", "e2e_agg": "",
    "a2e_in": "aea", "a2e_out": "main", "a2e_agg": "",
    "e2a_in": "main", "e2a_out": "aea", "e2a_agg": "",
    "tin_in": "main", "tin_out": "qint",
    "tout_in": "qint", "tout_out": "main",
    "quad_out": "main", "quad_tin": "tin", "quad_tout": "tout", "quad_agg": "",
}


@dataclass
class _Edges:
    src: np.ndarray  # (E,) source atom
    tgt: np.ndarray  # (E,) target atom
    shift: np.ndarray  # (E, 3) cell shift of the source image
    dist: np.ndarray  # (E,) Å

    def take(self, keep: np.ndarray) -> "_Edges":
        return _Edges(self.src[keep], self.tgt[keep], self.shift[keep], self.dist[keep])


@dataclass
class GemNetGraph:
    """The graphs and indices of one structure (numpy, on the CPU).

    arrays: the index arrays named in :data:`INDEX_SPACES` and ``{graph}_shift``
    (E, 3) integer cell shifts; numbers (n,); positions (n, 3) Å; cell (3, 3) Å.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    arrays: dict[str, np.ndarray]

    def size(self, space: str) -> int:
        """How many atoms, edges of a graph, or input/output triplets (``tin``/``tout``) it has."""
        if space == "atom":
            return len(self.numbers)
        if space in GRAPHS:
            return len(self.arrays[f"{space}_src"])
        return len(self.arrays[f"{space}_in"])


def build_graph(atoms: Atoms, config: GemNetOCConfig) -> GemNetGraph:
    """All graphs and indices of ``atoms``; ValueError if an atom of it has no neighbour."""
    tgt, src, dist, shift = neighbor_list("ijdS", atoms, config.cutoff_aint, self_interaction=False)
    everything = _Edges(src.astype(np.int64), tgt.astype(np.int64), shift.astype(np.int64), dist)
    lonely = np.setdiff1d(np.arange(len(atoms)), everything.tgt)
    if len(lonely):
        raise ValueError(f"atoms {lonely.tolist()} have no neighbour within {config.cutoff_aint} Å; "
                         "GemNet-OC needs every atom to have one")
    n = len(atoms)
    a2a = everything.take(_capped(everything, n, config.max_neighbors_aint, config.degeneracy_tolerance,
                                  squared=True))
    main = _symmetric(_subgraph(a2a, n, config.cutoff, config.max_neighbors, config), config.pair_rule)
    aea = _subgraph(a2a, n, config.cutoff_aeaint, config.max_neighbors_aeaint, config)
    qint = _subgraph(a2a, n, config.cutoff_qint, config.max_neighbors_qint, config)
    a2a, aea = (_by_target(g) for g in (a2a, aea))

    arrays: dict[str, np.ndarray] = {}
    for name, graph in zip(GRAPHS, (a2a, main, aea, qint)):
        arrays[f"{name}_src"], arrays[f"{name}_tgt"], arrays[f"{name}_shift"] = graph.src, graph.tgt, graph.shift
    half = len(main.src) // 2
    arrays["main_swap"] = np.concatenate([np.arange(half, 2 * half), np.arange(half)])
    arrays["a2a_inner"] = _rank_in_groups(a2a.tgt)
    arrays["aea_inner"] = _rank_in_groups(aea.tgt)
    arrays["e2e_in"], arrays["e2e_out"] = _triplets(main, main, n, into_source=False, same_graph=True)
    arrays["a2e_in"], arrays["a2e_out"] = _triplets(aea, main, n, into_source=False)
    arrays["e2a_in"], arrays["e2a_out"] = _triplets(main, aea, n, into_source=False)
    for kind in ("e2e", "a2e", "e2a"):
        arrays[f"{kind}_agg"] = _rank_in_groups(arrays[f"{kind}_out"])
    arrays["tin_in"], arrays["tin_out"] = _triplets(main, qint, n, into_source=True)
    arrays["tout_in"], arrays["tout_out"] = _triplets(qint, main, n, into_source=False)
    arrays.update(_quadruplets(main, qint, arrays))
    return GemNetGraph(atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                       atoms.cell.array.astype(np.float64), arrays)


def collate(graphs: Sequence[GemNetGraph], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One batch: every index offset by the structures before it, on ``device``.

    Adds numbers (N,), positions (N, 3), cell (B, 3, 3), batch (N,) structure of each atom
    and n_atoms (B,).
    """
    spaces = {space for space in INDEX_SPACES.values() if space}
    offsets = {space: np.cumsum([0] + [g.size(space) for g in graphs])[:-1] for space in spaces}
    batch: dict[str, torch.Tensor] = {}
    for key in graphs[0].arrays:
        space = INDEX_SPACES.get(key, "")
        parts = [g.arrays[key] + (offsets[space][i] if space else 0) for i, g in enumerate(graphs)]
        batch[key] = torch.as_tensor(np.concatenate(parts), dtype=torch.long)
    counts = [len(g.numbers) for g in graphs]
    batch["numbers"] = torch.as_tensor(np.concatenate([g.numbers for g in graphs]), dtype=torch.long)
    batch["batch"] = torch.as_tensor(np.repeat(np.arange(len(graphs)), counts), dtype=torch.long)
    batch["n_atoms"] = torch.as_tensor(counts, dtype=torch.long)
    batch["positions"] = torch.as_tensor(np.concatenate([g.positions for g in graphs]), dtype=dtype)
    batch["cell"] = torch.as_tensor(np.stack([g.cell for g in graphs]), dtype=dtype)
    return {key: value.to(device) for key, value in batch.items()}


def _subgraph(a2a: _Edges, n_atoms: int, cutoff: float, max_neighbors: int, config: GemNetOCConfig) -> _Edges:
    """``a2a`` cut to ``cutoff`` and capped at ``max_neighbors`` per target (each only where it differs)."""
    graph = a2a
    if not np.isclose(cutoff, config.cutoff_aint):
        graph = graph.take(graph.dist <= cutoff)
    if max_neighbors != config.max_neighbors_aint:
        graph = graph.take(_capped(graph, n_atoms, max_neighbors, config.degeneracy_tolerance, squared=False))
    return graph


def _capped(graph: _Edges, n_atoms: int, k: int, tolerance: float, squared: bool) -> np.ndarray:
    """Mask of the edges kept when each target keeps those within its (k+1)-th nearest distance + tolerance.

    Targets with at most k edges keep all of them; ``squared`` compares squared distances.
    """
    counts = np.bincount(graph.tgt, minlength=n_atoms)
    if counts.max(initial=0) <= k:
        return np.ones(len(graph.src), dtype=bool)
    measure = graph.dist ** 2 if squared else graph.dist
    order = np.lexsort((measure, graph.tgt))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = _rank_in_groups(graph.tgt[order])
    kth = np.full(n_atoms, np.inf)
    at_k = rank == k
    kth[graph.tgt[at_k]] = measure[at_k]
    return measure <= kth[graph.tgt] + tolerance


def _symmetric(graph: _Edges, rule: str) -> _Edges:
    """Each kept pair once (see ``GemNetOCConfig.pair_rule``), then every edge's reverse after it."""
    s, t, shift = graph.src, graph.tgt, graph.shift
    earlier = (shift[:, 0] > 0) | ((shift[:, 0] == 0) & (shift[:, 1] > 0)) | (
        (shift[:, 0] == 0) & (shift[:, 1] == 0) & (shift[:, 2] > 0))
    one_way = (s < t) | ((s == t) & earlier)
    if rule == "either":  # orient every kept edge one way, then keep each pair once
        oriented = np.where(one_way[:, None], np.stack([s, t], 1), np.stack([t, s], 1))
        signed = np.where(one_way[:, None], shift, -shift)
        _, first = np.unique(np.concatenate([oriented, signed], axis=1), axis=0, return_index=True)
        keep = np.zeros(len(s), dtype=bool)
        keep[np.sort(first)] = True
        graph = _Edges(oriented[:, 0], oriented[:, 1], signed, graph.dist).take(keep)
    else:
        graph = graph.take(one_way)
    return _Edges(np.concatenate([graph.src, graph.tgt]), np.concatenate([graph.tgt, graph.src]),
                  np.concatenate([graph.shift, -graph.shift]), np.concatenate([graph.dist, graph.dist]))


def _by_target(graph: _Edges) -> _Edges:
    return graph.take(np.argsort(graph.tgt, kind="stable"))


def _triplets(into: _Edges, out: _Edges, n_atoms: int, *, into_source: bool,
              same_graph: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(in, out) edge indices of every triplet, ordered by the out edge.

    For each edge o of ``out`` (c→a): the edges of ``into`` that end where o ends (b→a),
    or, with ``into_source``, where o starts (d→b for o = b→a). The degenerate triplet
    that runs an edge back onto itself is left out: with ``same_graph`` the edge o
    itself, otherwise an in-edge from the same image as o's other end.
    """
    order = np.argsort(into.tgt, kind="stable")
    counts = np.bincount(into.tgt, minlength=n_atoms)
    starts = np.cumsum(counts) - counts
    meet = out.src if into_source else out.tgt
    out_index = np.repeat(np.arange(len(out.src)), counts[meet])
    in_index = order[_ragged(starts[meet], counts[meet])]
    if same_graph:
        keep = in_index != out_index
    elif into_source:  # d→b→a with d the image of a itself
        keep = (into.src[in_index] != out.tgt[out_index]) | np.any(
            into.shift[in_index] + out.shift[out_index] != 0, axis=1)
    else:  # b→a and c→a from the same image
        keep = (into.src[in_index] != out.src[out_index]) | np.any(
            into.shift[in_index] != out.shift[out_index], axis=1)
    return in_index[keep], out_index[keep]


def _quadruplets(main: _Edges, qint: _Edges, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Quadruplets d→b→a←c: an input triplet d→b→a and an output triplet c→a←b sharing b→a.

    quad_tin / quad_tout: the triplets each quadruplet joins; quad_out: its edge c→a;
    quad_agg: its rank among the quadruplets of that edge. c and d the same image are left out.
    """
    tin_out, tout_in = arrays["tin_out"], arrays["tout_in"]
    per_inter = np.bincount(tin_out, minlength=len(qint.src))
    starts = np.cumsum(per_inter) - per_inter  # tin is ordered by its qint edge
    repeat = per_inter[tout_in]
    quad_tout = np.repeat(np.arange(len(tout_in)), repeat)
    quad_tin = _ragged(starts[tout_in], repeat)
    out = arrays["tout_out"][quad_tout]
    d_edge = arrays["tin_in"][quad_tin]
    inter = tout_in[quad_tout]
    keep = (main.src[out] != main.src[d_edge]) | np.any(
        main.shift[d_edge] + qint.shift[inter] != main.shift[out], axis=1)
    out, quad_tin, quad_tout = out[keep], quad_tin[keep], quad_tout[keep]
    return {"quad_out": out, "quad_tin": quad_tin, "quad_tout": quad_tout, "quad_agg": _rank_in_groups(out)}


def _ragged(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[i] … starts[i] + counts[i] − 1."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    group_start = np.cumsum(counts) - counts
    return np.repeat(starts - group_start, counts) + np.arange(total)


def _rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element among the equal keys before it (``sorted_keys`` grouped)."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.zeros(len(sorted_keys), dtype=np.int64)
    starts[boundaries] = boundaries
    return np.arange(len(sorted_keys)) - np.maximum.accumulate(starts)
