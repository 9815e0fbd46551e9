"""`reports/bench.json`: each benchmark writes its own section and keeps the others'."""

import json
from typing import Any

from resources.atomic import atomic_write_bytes
from resources.runtime import REPO_ROOT

BENCH_REPORT = REPO_ROOT / "reports" / "bench.json"


def write_section(name: str, section: Any) -> None:
    """Replace section `name` of the report atomically, keeping every other section."""
    report = json.loads(BENCH_REPORT.read_text()) if BENCH_REPORT.exists() else {}
    report[name] = section
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(BENCH_REPORT, text.encode(), mode=0o644)
