"""Progress of a Beam job while it runs: rows read, written and dead-lettered.

Each count is a Beam metrics counter (``<job>:progress/rows_read`` and so on; the Dataflow console
shows them live, and ``PipelineResult.metrics()`` has them at the end), and every worker's DoFn logs
its own running totals at most every ``interval_s`` seconds, plus once when the runner tears the DoFn down, on
the logger ``beam_jobs.progress`` at INFO::

    build_tfrecords: progress (this worker): 412,331 rows read, 412,290 written, 41 dead-lettered; 61,022 rows/s

The jobs' default runner options let that logger through the SDK harness's log level
(:data:`beam_jobs.options.DEFAULT_RUNNER_ARGS`); on Dataflow the lines are in the worker logs.
"""

from __future__ import annotations

import logging
import time

from apache_beam.metrics import Metrics

LOGGER = "beam_jobs.progress"
DEFAULT_INTERVAL_S = 10.0

_log = logging.getLogger(LOGGER)


class Progress:
    """Rows read, written and dead-lettered by one DoFn instance (create it in ``setup``).

    Args:
      job: the job name, the counters' namespace prefix and the log lines' prefix.
      interval_s: the least time between two log lines of this instance.
    """

    def __init__(self, job: str, interval_s: float = DEFAULT_INTERVAL_S):
        self.job = job
        self.interval_s = interval_s
        self.read = self.written = self.dead = 0
        self._counters = {name: Metrics.counter(job, f"progress/{name}")
                          for name in ("rows_read", "rows_written", "rows_dead_lettered")}
        self._start = self._last = time.monotonic()

    def add(self, read: int, written: int, dead: int) -> None:
        """Counts one bundle's rows; logs the totals when ``interval_s`` has passed since the last line."""
        for name, n in (("rows_read", read), ("rows_written", written), ("rows_dead_lettered", dead)):
            if n:
                self._counters[name].inc(n)
        self.read += read
        self.written += written
        self.dead += dead
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self.log()

    def line(self) -> str:
        rate = self.read / max(time.monotonic() - self._start, 1e-9)
        return (f"{self.job}: progress (this worker): {self.read:,} rows read, {self.written:,} written, "
                f"{self.dead:,} dead-lettered; {rate:,.0f} rows/s")

    def log(self) -> None:
        if self.read:
            _log.info(self.line())
