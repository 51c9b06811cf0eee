"""Wall time of a command's stages, for the line a user reads and the record a module keeps."""

from __future__ import annotations

import time


class StageClock:
    """Laps of wall time: ``lap(name)`` records the seconds since the previous lap (or since the clock
    was made) under ``name``; ``seconds`` maps each stage to its seconds, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        """Record and return the seconds since the last lap as stage ``name``."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now
        return self.seconds[name]
