"""Per-volume log line of the synthesis workflow: file written and seconds taken."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events


class SynthesisLogger:
    """Log ``wrote FILE (S s)`` for every volume an evaluator synthesizes (the file name comes from the
    postprocessing's ``pred_file`` entry), and the total at the end."""

    def __init__(self, file_key: str = "pred_file", name: str = "synthesis"):
        self.file_key, self.logger = file_key, logging.getLogger(name)
        self._start = self._first = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._first = time.perf_counter()

    def _iteration_started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        seconds = time.perf_counter() - self._start
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for out in outputs:
            self.logger.info(f"wrote {out.get(self.file_key, '(not saved)')} ({seconds / max(len(outputs), 1):.1f} s)")

    def _completed(self, engine: Engine) -> None:
        n = engine.state.iteration
        self.logger.info(f"{n} request(s) in {time.perf_counter() - self._first:.1f} s")
