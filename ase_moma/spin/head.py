"""The spin-aware head: per-atom moment magnitudes, spin directions as input, and a spin-exchange energy.

- **Spins are an input**, as in DFT: directions (non-collinear) or signs (collinear) come from
  ``atoms.set_initial_magnetic_moments``; the head predicts the magnitudes |m_i| ≥ 0, and m_i = |m_i| s_i.
  (Moments of geometry alone cannot carry an antiferromagnet's signs.)
- **Magnitudes** |m_i| = softplus(probe(x_i) + mlp(x_i) + order(o_i)) of the backbone's invariant node
  features x_i and the local order features o_ik = Σ_j φ_k(r_ij) (ŝ_i·ŝ_j − |ŝ_i||ŝ_j|) (radial Bessel
  functions times the cutoff envelope; zero when every neighbour is parallel), so one geometry can hold
  different moments in different orders. Their weights learn from the DFT moments alone: the energy's
  gradient does not reach them.
- **Exchange** E_spin = ½ Σ_ij J(r_ij, Z_i, Z_j, h_i, h_j) (m⁰_i·m⁰_j − |m⁰_i||m⁰_j|) over directed edges,
  m⁰ the moments at the parallel order's magnitudes, J a radial network (meV/μB², EXCHANGE_UNIT) times a
  smooth cutoff envelope, reading the two atoms' environments h (node features projected on the main
  directions in which the training environments differ) beside distance and species. It is zero when
  every moment is parallel: the pretrained backbone carries the parallel state (Materials Project
  calculations start ferromagnetic), the head what turning moments away from it costs. Rotating or
  flipping every spin leaves it unchanged.
- **Moments that shrink and vanish** (``longitudinal``, the default): the magnitudes' layers give the
  squared moment, |m_i|² = w·softplus(q_i/w) with a floor of width w = LANDAU_WIDTH (μB²) — in a Landau
  model antiparallel neighbours shift a moment's quadratic coefficient, so its square falls linearly with
  them and is zero past the point where the state stops being magnetic; how far an order shifts it may
  depend on the lattice (the order layer also reads the order features times the environment's leading
  directions). The energy gains an on-site
  Landau term Σ_i A_i (|m_i|² − |m⁰_i|²) + B_i (|m_i|⁴ − |m⁰_i|⁴) with A, B read from the atom's species and
  environment, and the exchange multiplies the moments of the order, ½ Σ J (m_i·m_j − |m⁰_i||m⁰_j|): a state
  whose moments collapse (or a non-magnetic one, every spin zero) costs its Landau energy, not an exchange
  priced at moments that are not there. Without it (heads saved before), the exchange multiplies the
  geometry's magnitudes m⁰ and the size of a moment costs nothing.
- **An energy term**: the backbone adds E_spin before differentiating, so forces and stress are exact
  derivatives of the total at a fixed spin configuration.

Why each choice (the parallel reference, J's view of the environment, the order layer, the geometry's
magnitudes in the exchange, the Landau term): bench/RESULTS.md, "The spin-aware head". Each choice is a setting that
a head records; a file written before a setting existed is read with the value that undoes it
(:data:`ase_moma.spin.files.LEGACY_HEAD`, applied by finetune.json's migration to version 2).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ase_moma.backbone import Edges, NodeFeatures
from ase_moma.probe import RidgeProbe, fit_ridge_probe

SPIN_KINDS = ("vector", "collinear")  # how training moments are read: 3-vectors, or signed scalars
EXCHANGE_UNIT = 1e-3
"""eV/μB²: the unit J's network outputs. Exchange couplings in metals and oxides are meV/μB² (bcc Fe's first
shell is of order 1–10), while an optimiser step moves each weight by about its learning rate whatever the
gradient's size: read in eV/μB², one step of the head's learning rate (1e-2) could move J by tenths of an
eV/μB² and, on fe_spin, a dozen steps set order gaps thirty times DFT's."""
MIN_MAGNITUDE = 0.05
"""μB: the floor under training |m_i| before softplus⁻¹ (non-magnetic atoms would map to −∞); below the
≈ 0.1 μB resolution of the DFT moments this head learns from."""

LANDAU_WIDTH = 0.01
"""μB²: the width of the smooth floor under a longitudinal head's squared moments, w·softplus(q/w): a square q of
zero reads as 0.08 μB and one of −0.05 μB² as 0.008 μB, under the ≈ 0.1 μB resolution of DFT moments; a few
widths above zero the square is q."""
ORDER_ENVIRONMENT = 2
"""How many of the environment projection's leading entries (the training atoms' main directions of variation)
a longitudinal head's order layer multiplies the order features by: all 16 overfitted the shipped cobalt (a
held-out antiparallel state at 79 μB), two did not (bench/RESULTS.md, "Moments that shrink and vanish")."""
COLLAPSED = 0.1
"""μB: a DFT moment below this has collapsed (the resolution of DFT moments): its direction is noise, and for a
longitudinal head its square is only bounded above by zero."""
CENSORED_ROUNDS = 30  # fits of the censored least squares at most
SQUARE_FLOOR = 1e-12
"""μB²: added under the square root so that |m| and its slope stay finite where the square underflows."""

ENVIRONMENT_SPREAD = 1e-6
"""The spread of the training atoms' features, relative to their largest entry, below which they count as one
environment (float32 round-off is 1e-7 of it)."""


def inverse_softplus(value: float | torch.Tensor) -> float | torch.Tensor:
    """softplus⁻¹(y) = log(exp(y) − 1), for y > 0."""
    if isinstance(value, torch.Tensor):
        return value + torch.log(-torch.expm1(-value))
    return math.log(math.expm1(value))


class SpinHead(torch.nn.Module):
    """Moment magnitudes and exchange energy from invariant node features and the spin directions.

    kind: the form of the moments it was trained on (``"vector"`` or
    ``"collinear"``), recorded for the user. width: invariant features per atom
    (F). cutoff: Å, the range of J. hidden: MLP width. n_basis: radial Bessel
    functions of J. The exchange network's last layer starts at zero, so a
    fresh head adds no energy. parallel_reference: the exchange is zero for
    parallel moments (see the module's docstring; False only for heads saved
    before it). exchange_unit: eV/μB² per unit of the exchange network's
    output (EXCHANGE_UNIT; 1.0 for heads saved before it). environment: J
    also reads the atoms' node features, through a projection that starts at
    zero, is set by :meth:`start_environment` and is not trained (False: distance and
    species only, as heads saved before it). The magnitudes are
    softplus(probe(x) + mlp(x) [+ order(o)]) of the node features x and, with
    ``local_order`` (False for heads saved before it), the order features o
    (see the module's docstring): they start at ``initial_magnitude`` μB, and
    :meth:`start_from_probe` starts them at a ridge fit to training moments.
    longitudinal: the squared-moment magnitudes and the on-site Landau energy (A, B of
    the atom's species and environment, starting at zero); False for heads saved before it.
    """

    def __init__(self, kind: str, width: int, cutoff: float, hidden: int = 64, n_basis: int = 8,
                 n_elements: int = 119, embedding: int = 16, initial_magnitude: float = 1.0,
                 parallel_reference: bool = True, exchange_unit: float = EXCHANGE_UNIT,
                 environment: bool = True, local_order: bool = True, longitudinal: bool = True) -> None:
        super().__init__()
        if kind not in SPIN_KINDS:
            raise ValueError(f"spin head kind must be one of {', '.join(SPIN_KINDS)}, got {kind!r}")
        if not initial_magnitude > 0:
            raise ValueError(f"the initial magnitude must be positive, got {initial_magnitude}")
        if not exchange_unit > 0:
            raise ValueError(f"the exchange unit must be positive, got {exchange_unit}")
        if longitudinal and not parallel_reference:
            raise ValueError("a longitudinal spin head is referenced to the parallel state: parallel_reference=False "
                             "is a setting of heads saved before it")
        self.kind, self.cutoff, self.parallel_reference = kind, float(cutoff), bool(parallel_reference)
        self.exchange_unit = float(exchange_unit)
        self.settings = {"kind": kind, "width": width, "cutoff": float(cutoff), "hidden": hidden,
                         "n_basis": n_basis, "n_elements": n_elements, "embedding": embedding,
                         "initial_magnitude": initial_magnitude, "parallel_reference": bool(parallel_reference),
                         "exchange_unit": float(exchange_unit), "environment": bool(environment),
                         "local_order": bool(local_order), "longitudinal": bool(longitudinal)}
        self.probe = torch.nn.Linear(width, 1)
        self.magnitude = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                             torch.nn.Linear(hidden, 1))
        # a longitudinal head's order layer also reads the order features times the environment (order_inputs)
        self.order = (torch.nn.Linear(n_basis * (1 + ORDER_ENVIRONMENT if longitudinal and environment else 1), 1)
                      if local_order else None)
        self.species = torch.nn.Embedding(n_elements, embedding)
        self.environment = torch.nn.Linear(width, embedding) if environment else None
        self.exchange = torch.nn.Sequential(torch.nn.Linear(n_basis + embedding, hidden), torch.nn.SiLU(),
                                            torch.nn.Linear(hidden, 1))
        self.landau = torch.nn.Linear(embedding, 2) if longitudinal else None
        self.register_buffer("frequencies", torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff)
        self.start_at(initial_magnitude)
        with torch.no_grad():
            torch.nn.init.zeros_(self.exchange[-1].weight)
            torch.nn.init.zeros_(self.exchange[-1].bias)
            if self.landau is not None:
                torch.nn.init.zeros_(self.landau.weight)
                torch.nn.init.zeros_(self.landau.bias)
            if self.environment is not None:
                torch.nn.init.zeros_(self.environment.weight)
                torch.nn.init.zeros_(self.environment.bias)

    def config(self) -> dict:
        """Constructor arguments, for saving the head beside its weights."""
        return dict(self.settings)

    @torch.no_grad()
    def start_at(self, magnitude: float) -> None:
        """Make every predicted magnitude ``magnitude`` μB (the training mean: the trivial baseline)."""
        if not magnitude > 0:
            raise ValueError(f"the starting magnitude must be positive, got {magnitude}")
        self._zero_corrections()
        self.probe.weight.zero_()
        self.probe.bias.fill_(float(self._from_magnitude(torch.tensor(float(magnitude), dtype=torch.float64))))

    def _to_magnitude(self, value: torch.Tensor) -> torch.Tensor:
        """|m| in μB from the magnitudes' layers' output: softplus of it, or, for a longitudinal head, the square
        root of its smooth floor (the output is then the squared moment, μB²)."""
        if self.landau is None:
            return torch.nn.functional.softplus(value)
        return torch.sqrt(LANDAU_WIDTH * torch.nn.functional.softplus(value / LANDAU_WIDTH) + SQUARE_FLOOR)

    def _from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The layers' output that gives |m| (μB): softplus⁻¹ of it, floored at MIN_MAGNITUDE where that
        diverges; for a longitudinal head the squared moment (a zero moment: the floor's start, 0 μB²)."""
        if self.landau is None:
            return inverse_softplus(magnitude.clamp(min=MIN_MAGNITUDE))
        return magnitude ** 2

    @torch.no_grad()
    def start_from_probe(self, features: torch.Tensor, magnitudes: torch.Tensor, structures: torch.Tensor,
                         order: torch.Tensor | None = None) -> RidgeProbe:
        """Start the magnitudes at the ridge probe of softplus⁻¹(|m_i|) (a longitudinal head's: of |m_i|²) on
        per-atom features.

        features: (N, F) invariant node features of training atoms (the frozen
        backbone's); magnitudes: (N,) their DFT |m_i| in μB, floored at
        MIN_MAGNITUDE where softplus⁻¹ diverges; structures: (N,) the structure
        each atom belongs to — the ridge strength is chosen by the error on
        |m_i| of whole structures left out, since equivalent atoms of one
        structure share features and moment. order: (N, K) their order features
        (:meth:`order_features`), for a head with ``local_order``: the order layer
        starts at the ridge fit of what the node features' probe leaves (zero
        where the training orders do not vary). Returns the node features' probe.

        A longitudinal head fits node and order features together, in one ridge over every atom given a
        moment (where the training orders vary): the node features' part, the parallel state's m⁰ (whose
        order features are zero), is informed by the atoms of every order. A moment that collapsed
        (|m_i| < COLLAPSED) says only that its square is at most zero — in a Landau model the state's
        quadratic coefficient turned positive, by however much — so the fit counts it as an error only
        where it predicts a square above zero (censored least squares).
        """
        targets = self._from_magnitude(magnitudes.double()).cpu().numpy()
        x, groups = features.double().cpu().numpy(), structures.cpu().numpy()
        readout = lambda v: self._to_magnitude(torch.as_tensor(v)).numpy()  # noqa: E731
        o = (self.order_inputs(order, features).double().cpu().numpy() if self.order is not None and order is not None
             else np.zeros((len(targets), 0)))
        varies = o.shape[1] > 0 and np.ptp(o, axis=0).max() > 0
        self._zero_corrections()
        if self.landau is not None and varies:  # one fit of node and order features: m⁰ is the parallel state's
            censored = magnitudes.double().cpu().numpy() < COLLAPSED
            joint = _censored_ridge(np.concatenate([x, o], axis=1), targets, censored, groups, readout=readout)
            probe = RidgeProbe(weight=joint.weight[:x.shape[1]], bias=joint.bias, alpha=joint.alpha,
                               loo_mae=joint.loo_mae)
            self.order.weight.copy_(torch.as_tensor(joint.weight[x.shape[1]:])[None].to(self.order.weight))
        else:
            probe = fit_ridge_probe(x, targets, groups=groups, readout=readout)
        self.probe.weight.copy_(torch.as_tensor(probe.weight)[None].to(self.probe.weight))
        self.probe.bias.fill_(probe.bias)
        if self.landau is None and varies:
            correction = fit_ridge_probe(o, targets - probe.predict(x), groups=groups)
            self.order.weight.copy_(torch.as_tensor(correction.weight)[None].to(self.order.weight))
            self.order.bias.fill_(correction.bias)
        return probe

    @torch.no_grad()
    def start_environment(self, features: torch.Tensor) -> None:
        """Point J's view of the environment along the main directions of ``features``' variation.

        features: (N, F) invariant node features of the training atoms. The
        projection becomes their centred principal components (as many as the
        species embedding has entries), all divided by the largest one's spread:
        on the training atoms the first score has unit variance, the rest keep
        their relative sizes (a direction the training set barely varies along
        stays small instead of being blown up to unit variance). Features that do
        not vary (one ideal lattice: spreads of round-off, ENVIRONMENT_SPREAD)
        leave the projection at zero. Does nothing for a head without ``environment``.
        """
        if self.environment is None:
            return
        x = features.double()
        centre = x.mean(0)
        _, spreads, directions = torch.linalg.svd(x - centre, full_matrices=False)
        scale = spreads[0] / math.sqrt(max(len(x) - 1, 1))
        weight = torch.zeros_like(self.environment.weight, dtype=torch.float64)
        count = min(weight.shape[0], directions.shape[0])
        if scale > ENVIRONMENT_SPREAD * float(x.abs().max()):
            weight[:count] = directions[:count] / scale
        self.environment.weight.copy_(weight.to(self.environment.weight))
        self.environment.bias.copy_((-weight @ centre).to(self.environment.bias))

    def _zero_corrections(self) -> None:
        """Zero the MLP's output and the order layer: the magnitudes become the probe's alone."""
        for layer in (self.magnitude[-1], self.order):
            if layer is not None:
                torch.nn.init.zeros_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    def order_features(self, edges: Edges, spins: torch.Tensor) -> torch.Tensor:
        """(N, K) o_ik = Σ_j φ_k(r_ij) (ŝ_i·ŝ_j − |ŝ_i||ŝ_j|): how far each atom's neighbours turn away from it,
        shell by shell (φ_k: the radial Bessel functions times the cutoff envelope). Zero for parallel
        neighbours; unchanged by turning or flipping every spin together. spins: (N, 3) unit or zero."""
        length = edges.vectors.norm(dim=-1).clamp(min=1e-9)
        centre, neighbour = edges.index
        spins = spins.to(length.dtype)
        turn = (spins[centre] * spins[neighbour]).sum(-1) - spins[centre].norm(dim=-1) * spins[neighbour].norm(dim=-1)
        shells = self._radial(length) * (_envelope(length, self.cutoff) * turn)[:, None]
        return torch.zeros(len(spins), shells.shape[1], dtype=shells.dtype, device=shells.device).index_add_(
            0, centre, shells)

    def order_inputs(self, order: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """What the order layer reads: the order features ``order`` (N, K), and for a longitudinal head that
        reads the environment also each of them times each of the ORDER_ENVIRONMENT leading entries of tanh of
        the atoms' projected node features ``features`` (N, F) — (N, K(1 + ORDER_ENVIRONMENT)): how far an
        order shrinks a moment depends on the lattice (cobalt's antiparallel planes keep a moment in hcp
        where fcc's lose it at one nearest-neighbour distance), and the projection is zero, adding nothing,
        until :meth:`start_environment` opens it."""
        if self.order.in_features == order.shape[1]:
            return order
        environment = torch.tanh(self.environment(features.to(self.environment.weight.dtype)))
        environment = environment[:, :ORDER_ENVIRONMENT].to(order.dtype)
        return torch.cat([order, (order[:, :, None] * environment[:, None, :]).flatten(1)], dim=1)

    def magnitudes(self, features: NodeFeatures, edges: Edges | None = None, spins: torch.Tensor | None = None,
                   *, frozen_weights: bool = False) -> torch.Tensor:
        """(N,) |m_i| in μB, ≥ 0, invariant under rotations and inversion of the structure and under turning
        every spin together.

        edges, spins: (N, 3) the spin directions, read by the order layer of a head with ``local_order``;
        none given: the geometry's magnitudes m⁰ (what the exchange reads; for a longitudinal head, those
        of the parallel state, whose order features are zero, so the order layer adds its bias alone).
        frozen_weights: the same values, but no gradient reaches the head's own weights (it still flows
        through the features, to positions and backbone).
        """
        linear = torch.nn.functional.linear
        weights = [(layer.weight, layer.bias) for layer in (self.probe, self.magnitude[0], self.magnitude[2])]
        if frozen_weights:
            weights = [(w.detach(), b.detach()) for w, b in weights]
        (probe_w, probe_b), (hidden_w, hidden_b), (out_w, out_b) = weights
        x = features.invariant
        hidden = torch.nn.functional.silu(linear(x, hidden_w, hidden_b))
        value = linear(x, probe_w, probe_b) + linear(hidden, out_w, out_b)
        if self.order is not None and edges is not None and spins is not None:
            order_w, order_b = self.order.weight, self.order.bias
            if frozen_weights:
                order_w, order_b = order_w.detach(), order_b.detach()
            order = self.order_inputs(self.order_features(edges, spins).to(x.dtype), x)
            value = value + linear(order.to(x.dtype), order_w, order_b)
        elif self.order is not None and self.landau is not None:
            value = value + (self.order.bias.detach() if frozen_weights else self.order.bias)
        return self._to_magnitude(value.squeeze(-1))

    def coupling(self, edges: Edges, features: torch.Tensor | None = None) -> torch.Tensor:
        """(E,) J(r_ij, Z_i, Z_j, h_i, h_j) in eV/μB², zero with zero slope at the cutoff.

        features: (N, F) the atoms' invariant node features (needed when the head reads the environment).
        """
        length = edges.vectors.norm(dim=-1).clamp(min=1e-9)
        return self.exchange(self._exchange_inputs(length, edges, features)).squeeze(-1).to(length.dtype) * (
            self.exchange_unit * _envelope(length, self.cutoff))

    def landau_coefficients(self, numbers: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 2) a longitudinal head's on-site A (eV/μB²) and B (eV/μB⁴) of each atom, from its species and
        environment (``numbers`` (N,), ``features`` (N, F) as for :meth:`coupling`)."""
        return self.landau(self._atoms(numbers, features)) * self.exchange_unit

    def exchange_design(self, length: torch.Tensor, edges: Edges, features: torch.Tensor | None = None
                        ) -> torch.Tensor:
        """(E, H + 1) the exchange's read-out design: J = design @ [w; b] (eV/μB²) for the last layer's weight
        w (H,) and bias b, at edge lengths ``length`` (E,) Å and node features ``features`` (N, F); the unit
        and the envelope are included.

        J is linear in the last layer, and A, B in the Landau layer, so a least-squares fit of both to energy
        and force residuals is a closed-form start (:mod:`ase_moma.spin.exchange_start`).
        """
        hidden = self.exchange[:-1](self._exchange_inputs(length, edges, features)).to(length.dtype)
        ones = torch.ones_like(length)[:, None]
        return torch.cat([hidden, ones], dim=-1) * (self.exchange_unit * _envelope(length, self.cutoff))[:, None]

    def landau_design(self, numbers: torch.Tensor, features: torch.Tensor | None, onsite: torch.Tensor
                      ) -> torch.Tensor:
        """(N, 2(D + 1)) each atom's Landau energy per unit of the Landau layer's coefficients [w_A; b_A; w_B;
        b_B], for ``onsite`` (N, 2) of :meth:`energy_inputs` (eV per unit, the unit included)."""
        atoms = self._atoms(numbers, features).to(onsite.dtype)
        inputs = torch.cat([atoms, torch.ones_like(atoms[:, :1])], dim=1)
        return torch.cat([inputs * onsite[:, :1], inputs * onsite[:, 1:]], dim=1) * self.exchange_unit

    def readout_size(self) -> int:
        """How many coefficients :meth:`set_energy_readout` takes: J's H + 1, then a longitudinal head's 2(D + 1)."""
        size = self.exchange[-1].in_features + 1
        return size + (2 * (self.landau.in_features + 1) if self.landau is not None else 0)

    @torch.no_grad()
    def set_energy_readout(self, coefficients: torch.Tensor) -> None:
        """Set the exchange's last layer, and a longitudinal head's Landau layer, from the (readout_size(),)
        coefficients of :meth:`exchange_design` and :meth:`landau_design`, in that order."""
        layer = self.exchange[-1]
        split = layer.in_features + 1
        layer.weight.copy_(coefficients[:split - 1].reshape(layer.weight.shape).to(layer.weight))
        layer.bias.copy_(coefficients[split - 1:split].to(layer.bias))
        if self.landau is not None:
            landau = coefficients[split:].reshape(2, -1)
            self.landau.weight.copy_(landau[:, :-1].to(self.landau.weight))
            self.landau.bias.copy_(landau[:, -1].to(self.landau.bias))

    def alignment(self, magnitudes: torch.Tensor, spins: torch.Tensor, edges: Edges) -> torch.Tensor:
        """(E,) what J multiplies on each edge, in μB²: m_i·m_j − |m_i||m_j| (parallel reference), or m_i·m_j.

        magnitudes: (N,) |m_i| in μB; spins: (N, 3) the input directions (unit, or zero for no moment).
        """
        centre, neighbour = edges.index
        moments = magnitudes[:, None] * spins
        product = (moments[centre] * moments[neighbour]).sum(-1)
        if not self.parallel_reference:
            return product
        sizes = magnitudes * spins.norm(dim=-1)
        return product - sizes[centre] * sizes[neighbour]

    def energy_inputs(self, features: NodeFeatures, edges: Edges, spins: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the head's energy multiplies, its magnitudes taken with their weights frozen (the energy's
        gradient reaches positions and backbone through them, not their weights): (E,) μB² per edge, what J
        multiplies, and for a longitudinal head (N, 2) per atom what A and B multiply, |m_i|² − |m⁰_i|² and
        |m_i|⁴ − |m⁰_i|⁴ (None otherwise). spins: (N, 3) unit directions, zero for an atom given no moment.

        A longitudinal head's edges carry m_i·m_j − |m⁰_i||m⁰_j| with m_i = |m_i| s_i the order's moments and
        m⁰ the parallel state's magnitudes, so that a ferromagnetic state adds nothing; other heads' carry
        :meth:`alignment` of the geometry's magnitudes m⁰.
        """
        geometry = self.magnitudes(features, frozen_weights=True)
        if self.landau is None:
            return self.alignment(geometry, spins, edges), None
        present = self.magnitudes(features, edges, spins, frozen_weights=True) * spins.norm(dim=-1)
        centre, neighbour = edges.index
        moments = present[:, None] * spins
        pair = (moments[centre] * moments[neighbour]).sum(-1) - geometry[centre] * geometry[neighbour]
        return pair, torch.stack([present ** 2 - geometry ** 2, present ** 4 - geometry ** 4], dim=1)

    def _atoms(self, numbers: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """(N, D) each atom's input to J and to the Landau coefficients: its species' embedding plus, with
        ``environment``, tanh of its projected features (bounded: an environment far outside the training
        set's, where the projection grows without limit, gets the training range's edge instead of a value
        extrapolated linearly)."""
        atom = self.species(numbers)
        if self.environment is not None:
            if features is None:
                raise ValueError("this spin head reads the atoms' environments: pass their node features")
            atom = atom + torch.tanh(self.environment(features.to(self.environment.weight.dtype)))
        return atom

    def _exchange_inputs(self, length: torch.Tensor, edges: Edges, features: torch.Tensor | None) -> torch.Tensor:
        """(E, n_basis + embedding) radial Bessel functions of the lengths beside the pair's embedding: the sum
        over its two atoms of :meth:`_atoms`."""
        basis = self._radial(length)
        centre, neighbour = edges.index
        atom = self._atoms(edges.numbers, features)
        pair = atom[centre] + atom[neighbour]
        return torch.cat([basis.to(pair.dtype), pair], dim=-1)

    def _radial(self, length: torch.Tensor) -> torch.Tensor:
        """(E, n_basis) radial Bessel functions sin(kπr/r_c)/r of the edge lengths (E,) Å."""
        return torch.sin(self.frequencies.to(length.dtype) * length[:, None]) / length[:, None]

    def forward(self, features: NodeFeatures, edges: Edges, n_graphs: int,
                spins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) spin energy in eV, (N, 3) moments m_i = |m_i| s_i in μB) for one batch.

        spins: (N, 3) the input spin directions s_i: unit vectors, or zero for an
        atom given no moment (it then carries none).
        """
        spins = spins.to(features.invariant.dtype)
        moments = self.magnitudes(features, edges, spins)[:, None] * spins
        pair, onsite = self.energy_inputs(features, edges, spins)
        pair_energy = 0.5 * self.coupling(edges, features.invariant) * pair.to(edges.vectors.dtype)
        per_atom = torch.zeros(features.batch.shape[0], dtype=pair_energy.dtype, device=pair_energy.device)
        per_atom.index_add_(0, edges.index[0], pair_energy)
        if onsite is not None:
            landau = self.landau_coefficients(edges.numbers, features.invariant).to(per_atom.dtype)
            per_atom = per_atom + (landau * onsite.to(per_atom.dtype)).sum(-1)
        energy = torch.zeros(n_graphs, dtype=per_atom.dtype, device=per_atom.device)
        return energy.index_add_(0, features.batch, per_atom), moments


def _censored_ridge(x: np.ndarray, targets: np.ndarray, censored: np.ndarray, groups: np.ndarray,
                    readout=None) -> RidgeProbe:
    """The ridge probe (:func:`fit_ridge_probe`) of ``targets`` (M,) on ``x`` (M, F), where the ``censored``
    rows' targets are upper bounds: a censored row predicted below its bound has its target moved there and
    counts no error. Alternates fits and target moves until no target moves (at most CENSORED_ROUNDS fits;
    without censored rows, one)."""
    y = targets.copy()
    for _ in range(CENSORED_ROUNDS):
        probe = fit_ridge_probe(x, y, groups=groups, readout=readout)
        moved = np.where(censored, np.minimum(probe.predict(x), targets), targets)
        if np.allclose(moved, y, rtol=0, atol=1e-9):
            break
        y = moved
    return probe


def _envelope(length: torch.Tensor, cutoff: float) -> torch.Tensor:
    """(1 − (r/r_c)²)², cut to zero beyond r_c: J and its slope vanish at the cutoff."""
    return (1 - (length / cutoff).clamp(max=1.0) ** 2) ** 2
