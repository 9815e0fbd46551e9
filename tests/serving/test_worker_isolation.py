"""The isolated inference worker imports the loader and the model contract, not the pipeline.

The process that sits next to an untrusted model should hold as little as
possible: no orchestrator, no Spark, no experiment tracker, no crypto keyset
library. The worker is started here as it is in production (a fresh
interpreter, `-P`, its handler resolved by name) and asked what it loaded.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("dagster", "pyspark", "mlflow", "great_expectations", "cleanlab", "sklearn", "tink")
PROBE = """
import json, sys
import serving.worker as worker
worker.resolve_handler(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_worker(handler: str) -> set[str]:
    """Every module a fresh worker interpreter holds once it has resolved `handler`."""
    result = subprocess.run(
        [sys.executable, "-P", "-c", PROBE, handler],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & set(HEAVY))


@pytest.mark.parametrize(
    "handler",
    ["serving.recommender_handler:RecommenderHandler", "serving.diagnostic_handler:DiagnosticHandler"],
)
def test_the_worker_loads_no_pipeline_library(handler):
    modules = loaded_by_worker(handler)
    assert heavy(modules) == []
    project = {m.split(".")[0] for m in modules} & {"assets", "pipelines", "examples", "benchmarks"}
    assert project == set()


def test_a_handler_that_drags_in_the_orchestrator_is_caught():
    """The same probe on a handler that imports Dagster reports it (the test can fail)."""
    modules = loaded_by_worker("tests.serving.leaky_handler:LeakyHandler")
    assert heavy(modules) == ["dagster"]
