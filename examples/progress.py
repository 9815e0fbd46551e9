"""Live progress of a Dagster run for a person at a terminal (`make demo`).

The instance hands each event of the run to a listener as it is stored. On a
terminal, a live line shows the job, the steps running, the elapsed time and
the last check evaluated, so minutes of training never look like a hang;
each finished step (with the records it accepted or wrote), each failed
check and each message a step logs at INFO or above (training epochs, the
attack lab's scenarios) is printed for good. Piped to a file, only those
lines are written.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterEventType, DagsterInstance, EventLogEntry
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

COUNTS = ("accepted", "rows")  # materialisation metadata that says how many records a step handled


class RunProgress:
    """Follows one run's events: what runs now on the live line, what finished and what failed below it."""

    def __init__(self, job: str, progress: Progress) -> None:
        self.job = job
        self.progress = progress
        self.task = progress.add_task(job, total=None)
        self.running: dict[str, float] = {}
        self.records: dict[str, int] = {}
        self.last_check = ""

    def __call__(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None:
            if entry.level >= logging.INFO and entry.user_message:
                self._say(f"      {entry.user_message}")
            return
        kind, step = event.event_type, event.step_key
        if kind == DagsterEventType.STEP_START:
            self.running[step] = time.perf_counter()
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.step_materialization_data.materialization.metadata
            counts = [metadata[name].value for name in COUNTS if name in metadata]
            if counts:
                self.records[step] = self.records.get(step, 0) + int(counts[0])
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            name = f"{check.asset_key.to_user_string()}:{check.check_name}"
            self.last_check = f"{name} {'passed' if check.passed else 'failed'}"
            if not check.passed:
                self._say(f"    check {name} FAILED ({check.severity.value})")
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            seconds = time.perf_counter() - self.running.pop(step, time.perf_counter())
            outcome = "done" if kind == DagsterEventType.STEP_SUCCESS else "FAILED"
            records = f", {self.records[step]:,} records" if step in self.records else ""
            self._say(f"    {step:<44} {outcome} in {seconds:6.1f} s{records}")
        self.progress.update(self.task, description=self._line())

    def _say(self, line: str) -> None:
        # Verbatim and whole: a logged "[...]" is text, not rich markup, and a log file keeps whole lines.
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _line(self) -> str:
        running = ", ".join(self.running) or "between steps"
        last = f" · last check: {self.last_check}" if self.last_check else ""
        return f"{self.job} · {running}{last}"


@contextmanager
def followed(instance: DagsterInstance, job: str, console: Console | None = None) -> Iterator[str]:
    """A run id to execute `job` under on `instance`, whose events are shown while the block runs."""
    run_id = str(uuid.uuid4())
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console or Console(), transient=True) as progress:
        instance.add_event_listener(run_id, RunProgress(job, progress))
        yield run_id
