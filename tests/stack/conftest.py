"""The stack tier: one production stack per test session, on loopback, in a throwaway home.

Every service runs as it does under `make stack`. The worlds on it (a shop, a
clinic, a week of clean feedback) are made once per session, by whichever
test asks first: the lifecycle tests and the browser tests look at the same runs. The stack's settings are put
in the environment only for the tests of this folder, so other tests keep
the embedded defaults.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dagster import DagsterRun

from deploy.stack.__main__ import down, up
from deploy.stack.processes import port_taken
from deploy.stack.runs import StackRuns
from deploy.stack.settings import PORTS, Stack
from domain.healthcare.deidentify import phi_values
from examples.ecommerce.shop import MODEL_EVENTS, Shop
from examples.healthcare.clinic import MODEL_STUDIES, SMALL_WORLD_SETTINGS, Clinic
from resources.runtime import RuntimeHome


def _free_base() -> int:
    for _ in range(50):
        # Below the ephemeral range, where outgoing connections would take ports from under us.
        base = random.randrange(20_000, 30_000, PORTS)  # noqa: S311 - a port, not a secret
        if not any(port_taken(base + offset) for offset in range(PORTS)):
            return base
    raise RuntimeError(f"No {PORTS} consecutive free ports between 20000 and 30000 on 127.0.0.1.")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # mkdtemp, not tmp_path: Postgres runs as another account when we are root and must be able to
    # traverse every folder above its data directory (pytest's base folder is owner-only).
    root = Path(tempfile.mkdtemp(prefix="pipeline-stack-"))
    # Sensors that look every 5 s, not every 15: the tests wait on them less.
    stack = Stack(RuntimeHome(root), base_port=_free_base(), sensor_interval_s=5)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # The healthcare code server holds the small world's model to the small world's thresholds.
            patch.setenv("PIPELINE_HEALTHCARE_SETTINGS", str(SMALL_WORLD_SETTINGS))
            up(stack)
        yield stack
    finally:
        down(stack)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_env(stack: Stack) -> Iterator[dict[str, str]]:
    """The stack's settings in this process's environment, for the rest of the session (the stack
    tier is the suite's last folder, so the other tiers keep the embedded defaults)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.pipeline_environment().items():
            patch.setenv(name, value)
        yield dict(os.environ)


@pytest.fixture(scope="session")
def runs(stack: Stack, stack_env: dict[str, str]) -> StackRuns:
    return StackRuns(stack)


@pytest.fixture(scope="session")
def shop(stack: Stack, stack_env: dict[str, str], runs: StackRuns) -> Shop:
    """A shop whose pipeline runs on the stack: baseline and first lifecycle submitted and finished."""
    shop = Shop(stack.pipeline_home, events=MODEL_EVENTS)
    shop.submitted = [
        runs.run("ecommerce", "ecommerce_baseline"),
        runs.run("ecommerce", "ecommerce_lifecycle"),
    ]
    return shop


@pytest.fixture(scope="session")
def clean_feedback(shop: Shop, runs: StackRuns) -> tuple[set[str], DagsterRun | None]:
    """A week of clean feedback landed in the shop's landing zone: the runs before it, and the intake
    run its landing sensor started (None if none finished in time)."""
    known = runs.known()
    shop.feedback(cycle=1)
    return known, runs.next_run(lambda r: r.job_name == "ecommerce_feedback_intake", known, timeout_s=600)


@pytest.fixture(scope="session")
def clinic(stack: Stack, stack_env: dict[str, str], runs: StackRuns) -> Clinic:
    """A clinic whose pipeline runs on the stack: baseline and first lifecycle submitted and finished."""
    clinic = Clinic(stack.pipeline_home, studies=MODEL_STUDIES)
    # Read before the intake takes the batches out of the landing zone.
    landed = sorted(clinic.home.joinpath("landing", "healthcare").rglob("*.dcm"))[:50]
    clinic.identifying = {v for path in landed for v in phi_values(pydicom.dcmread(path)) if len(v) >= 6}
    clinic.submitted = [
        runs.run("healthcare", job) for job in ("healthcare_baseline", "healthcare_lifecycle")
    ]
    return clinic
