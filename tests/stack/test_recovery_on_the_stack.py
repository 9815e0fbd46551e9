"""A service of the stack dies: what was submitted waits, `make stack` starts only what is missing.

The daemon is the one process every scheduled, sensed and submitted run goes
through. Killed outright (as the kernel's out-of-memory killer would), a run
submitted meanwhile waits in the queue in Postgres; `up` (what `make stack`
runs) sees the one dead service, starts it alone, and the queued run goes on.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from dagster import AssetKey, DagsterRunStatus

from deploy.stack.__main__ import status, supervisor, up
from deploy.stack.runs import StackRuns
from deploy.stack.services import all_services
from deploy.stack.settings import Stack

pytestmark = pytest.mark.slow

DAEMON = "dagster-daemon"
QUEUED_FOR_S = 20  # the daemon dequeues within a second or two when it runs


def test_a_killed_daemon_holds_submitted_runs_queued_and_up_restarts_only_it(
    stack: Stack, shop, runs: StackRuns
):
    processes = supervisor(stack)
    before = {service.name: processes.pid(service.name) for service in all_services(stack)}
    assert all(before.values()), before
    os.killpg(before[DAEMON], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes.pid(DAEMON) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not status(stack)  # what `make stack-status` answers: not all running

    run_id = runs.submit("ecommerce", "ecommerce_audit", [AssetKey(["ecommerce", "controls"])])
    time.sleep(QUEUED_FOR_S)
    assert runs.instance.get_run_by_id(run_id).status == DagsterRunStatus.QUEUED

    up(stack)
    after = {service.name: processes.pid(service.name) for service in all_services(stack)}
    assert after[DAEMON] not in (None, before[DAEMON])
    assert {k: v for k, v in after.items() if k != DAEMON} == {k: v for k, v in before.items() if k != DAEMON}
    finished = runs.wait(run_id, timeout_s=600)
    assert finished.status == DagsterRunStatus.SUCCESS, runs.why_failed(finished)
