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
from typing import Any, Callable

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_moma.backbone import Backbone
from ase_moma.calculators.batch import predict
from ase_moma.calculators.moma import model_parameters


class BatchEvaluator:
    """Answers the requests of ``n_systems`` concurrent systems with batched calls of ``backbone``.

    ``n_systems`` counts the loops running at once (threads), each of which may drive several systems in
    turn (:func:`run_together`).

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
        """Called once by each loop thread when it ends (no system left for it, or a failure)."""
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

    def abort(self, error: BaseException) -> None:
        """Stop serving: every waiting and later request raises (a loop failed, or the user interrupted)."""
        with self._condition:
            if self._error is None:
                self._error = error
            self._condition.notify_all()

    @property
    def error(self) -> BaseException | None:
        """The error of a failed batched call, if any."""
        return self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"stopped: {type(self._error).__name__}: {self._error}") from self._error


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


IN_FLIGHT = 64
"""Systems advanced together by default: enough small cells to fill one batched model call (on a CPU a
larger call gains little per structure), few enough that one call's graphs stay small in memory."""


def run_together(evaluator: BatchEvaluator, loops: list[Callable[[], None]], in_flight: int | None = None,
                 on_done: Callable[[], None] | None = None) -> None:
    """Run ``loops`` (one per system, each driving its system's ASE loop), ``in_flight`` at a time.

    ``in_flight`` threads (default IN_FLIGHT; the evaluator must have been made for that many) each take
    the next loop when theirs ends, so at most ``in_flight`` systems are in one model call and finished
    systems are replaced at once. ``on_done`` is called after each loop that ends. The first error of
    any loop (or a KeyboardInterrupt here) stops every thread — each waiting request raises — and is
    re-raised once all have ended: nothing is left running.
    """
    pending = iter(loops)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def take() -> Callable[[], None] | None:
        with lock:
            return None if errors else next(pending, None)

    def target() -> None:
        try:
            while (loop := take()) is not None:
                loop()
                if on_done is not None:
                    on_done()
        except BaseException as error:
            with lock:
                errors.append(error)
            evaluator.abort(error)
        finally:
            evaluator.finish()

    threads = [threading.Thread(target=target, daemon=True) for _ in range(threads_for(len(loops), in_flight))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt as interrupt:
        with lock:
            errors.append(interrupt)
        evaluator.abort(interrupt)
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]


def threads_for(systems: int, in_flight: int | None) -> int:
    """How many systems advance together: ``in_flight`` (default IN_FLIGHT), at most ``systems``."""
    bound = IN_FLIGHT if in_flight is None else in_flight
    if bound < 1:
        raise ValueError(f"in_flight must be at least 1, got {bound}")
    return max(1, min(bound, systems))
