"""One batched model call for the force requests of many systems that each run their own ASE loop.

Each system runs its own, unmodified ASE optimiser or integrator in a thread of
its own, with a :class:`BatchedCalculator` attached. When that calculator is
asked for a new state it hands the structure to the shared
:class:`BatchEvaluator` and waits; once every system still running has asked,
the evaluator makes one batched model call and answers them all. A system
that finishes leaves the batch. Since every system's loop is ASE's own, each
trajectory is exactly the one ASE would produce with a single-structure
calculator, up to the round-off of batched against single evaluation.
"""

from __future__ import annotations

import threading
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_moma.backbone import Backbone
from ase_moma.calculators.batch import predict
from ase_moma.calculators.moma import model_parameters


class BatchEvaluator:
    """Answers the requests of ``n_systems`` concurrent systems with batched calls of ``backbone``.

    batch_size: structures per model call within one batched evaluation (None: all at once).
    ``calls`` counts the batched evaluations made (one per step of the slowest system).
    """

    def __init__(self, backbone: Backbone, n_systems: int, batch_size: int | None = None) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self.calls = 0
        self._running = n_systems
        self._pending: dict[int, Atoms] = {}
        self._answers: dict[int, dict[str, Any]] = {}
        self._error: BaseException | None = None
        self._condition = threading.Condition()

    def request(self, index: int, atoms: Atoms) -> dict[str, Any]:
        """Results (energy, forces, stress where the cell is 3-D, moments where predicted) of system
        ``index`` in state ``atoms``, once the batch it joins has been evaluated."""
        with self._condition:
            self._raise_if_failed()
            self._pending[index] = atoms.copy()
            self._evaluate_if_complete()
            while index not in self._answers:
                self._raise_if_failed()
                self._condition.wait()
            return self._answers.pop(index)

    def finish(self) -> None:
        """Called once by each system when its loop ends (converged, out of steps, or failed)."""
        with self._condition:
            self._running -= 1
            self._evaluate_if_complete()

    def _evaluate_if_complete(self) -> None:
        if not self._pending or len(self._pending) < self._running or self._error is not None:
            return
        batch, self._pending = self._pending, {}
        try:
            rows = predict(self.backbone, list(batch.values()), batch_size=self.batch_size or len(batch),
                           progress=False)
        except BaseException as error:  # every waiting system must learn of it, not wait forever
            self._error = error
            self._condition.notify_all()
            raise
        self._answers.update(zip(batch, rows))
        self.calls += 1
        self._condition.notify_all()

    @property
    def error(self) -> BaseException | None:
        """The error of a failed batched call, if any."""
        return self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the batched model call failed: {self._error}") from self._error


class BatchedCalculator(Calculator):
    """The calculator of system ``index``: its requests go through ``evaluator``."""

    def __init__(self, evaluator: BatchEvaluator, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluator = evaluator
        self.index = index
        self.implemented_properties = ["energy", "free_energy", "forces", "stress"]
        if evaluator.backbone.capabilities.magmoms:
            self.implemented_properties += ["magmoms", "magmom"]
        self.parameters.update(model_parameters(evaluator.backbone))

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = self.evaluator.request(self.index, self.atoms)


def run_together(evaluator: BatchEvaluator, loops: list[Any]) -> None:
    """Run ``loops`` (callables, one per system, each driving its system's ASE loop) concurrently.

    Each loop calls ``evaluator.finish()`` when done (run here). Re-raises the
    first error of any loop after every thread has ended.
    """
    errors: list[BaseException] = []

    def target(loop: Any) -> None:
        try:
            loop()
        except BaseException as error:
            errors.append(error)
        finally:
            evaluator.finish()

    threads = [threading.Thread(target=target, args=(loop,), daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if evaluator.error is not None:
        raise evaluator.error
    if errors:
        raise errors[0]
