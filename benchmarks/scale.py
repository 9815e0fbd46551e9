"""Scale: e-commerce collection and processing at 100k, 1M and 10M events.

    make bench                                   # 100k, 1M and 10M events
    SCALE_EVENTS=20000,200000 python -m benchmarks.scale

For each size, in processes of their own so that nothing carries over from
one size to the next:
- one process generates the shop (the reference and current windows as
  signed source batches, the registry, the approvals); it is not timed;
- another runs what `make demo` runs before modeling, with every control
  on: the baseline job (the reference window collected, the trusted
  baseline), then the lifecycle's collection and processing assets with
  their checks. Both are timed (wall clock), and the process reports its
  own peak resident set (VmHWM) and, separately, that of the Spark driver
  JVM it started (read while the JVM is still up).
A size whose clean shop fails a check (a false alarm at that size) is
reported with the checks that failed and left out of the ratios.
Ratios per 10x are measured between consecutive complete sizes and scaled to a factor
of ten (time(b) / time(a)) ** (1 / log10(b / a)); the top-level ratios are
those of the two largest sizes. Writes the "scale" section of `reports/bench.json`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.report import write_section

EVENTS = (100_000, 1_000_000, 10_000_000)
STAGES = ("collection", "processing")


def peak_rss_mib(pid: int) -> float:
    """The peak resident set of process `pid` so far (Linux's VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM: peak memory is only measured on Linux")


def spark_jvm_pids() -> list[int]:
    """The Java processes this process started (the Spark driver of a local session)."""
    return [p.pid for p in psutil.Process().children(recursive=True) if p.name() == "java"]


def generate(home: Path, events: int) -> None:
    """Child process: a shop of `events` events over `home`, trusted and approved, ready to collect."""
    from examples.ecommerce.shop import Shop

    Shop(home, events=events)


def collect_and_process(home: Path, events: int) -> dict:
    """Child process: the baseline, then collection and processing with their checks; times and peaks."""
    from dagster import AssetSelection, DagsterEventType

    from examples.ecommerce.shop import Shop
    from pipelines.ecommerce import REFERENCE

    shop = Shop(home, events=events, generated=True)
    started = time.perf_counter()
    shop.baseline()
    baseline_s = time.perf_counter() - started
    selection = AssetSelection.groups(*STAGES) - REFERENCE
    assets = sorted(k.to_user_string() for k in selection.resolve(shop.defs.resolve_asset_graph()))
    started = time.perf_counter()
    result = shop.run_selection(assets)
    run_s = time.perf_counter() - started
    failed = {
        f"{check.asset_key.to_user_string()}:{check.check_name}": {
            name: str(value.value)[:300] for name, value in check.metadata.items()
        }
        for check in (
            e.event_specific_data
            for e in result.all_events
            if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        )
        if not check.passed
    }
    return {
        "events": events,
        # A clean shop that fails a check is a false alarm at this size: reported, never timed as complete.
        "complete": result.success,
        "failed_checks": failed,
        "baseline_s": round(baseline_s, 2),
        "collection_processing_s": round(run_s, 2),
        "total_s": round(baseline_s + run_s, 2),
        "python_peak_rss_mib": round(peak_rss_mib(os.getpid()), 1),
        "spark_jvm_peak_rss_mib": round(max((peak_rss_mib(p) for p in spark_jvm_pids()), default=0.0), 1),
    }


def _child(step: str, home: Path, events: int) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", step, str(home), str(events)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return completed.stdout


def measure(events: int, folder: Path) -> dict:
    home = folder / f"shop-{events}"
    _child("generate", home, events)
    return json.loads(_child("run", home, events).splitlines()[-1])


def per_10x(a: dict, b: dict, field: str) -> float:
    """How `field` grows for ten times the events, from sizes `a` < `b`."""
    return (b[field] / a[field]) ** (1 / math.log10(b["events"] / a["events"]))


def summarise(rows: list[dict]) -> dict:
    complete = [r for r in rows if r["complete"]]
    steps = [
        {
            "from": a["events"],
            "to": b["events"],
            "time_ratio_per_10x": round(per_10x(a, b, "total_s"), 3),
            "peak_rss_ratio_per_10x": round(per_10x(a, b, "python_peak_rss_mib"), 3),
            "spark_jvm_peak_rss_ratio_per_10x": round(per_10x(a, b, "spark_jvm_peak_rss_mib"), 3),
        }
        for a, b in zip(complete, complete[1:], strict=False)
    ]
    top = steps[-1] if steps else {}
    return {
        "events": [r["events"] for r in rows],
        "time_ratio_per_10x": top.get("time_ratio_per_10x"),
        "peak_rss_ratio_per_10x": top.get("peak_rss_ratio_per_10x"),
        "steps": steps,
        "rows": rows,
    }


def print_table(summary: dict) -> None:
    print("scale: e-commerce baseline + collection + processing, every control on")
    print(f"{'events':>11} {'baseline s':>11} {'collect+process s':>18} {'python MiB':>11} {'JVM MiB':>9}")
    for r in summary["rows"]:
        print(
            f"{r['events']:>11,} {r['baseline_s']:>11.1f} {r['collection_processing_s']:>18.1f} "
            f"{r['python_peak_rss_mib']:>11.0f} {r['spark_jvm_peak_rss_mib']:>9.0f}"
        )
    for r in summary["rows"]:
        if not r["complete"]:
            failed = ", ".join(r["failed_checks"])
            print(f"{r['events']:,} events: NOT COMPLETE, a clean shop failed {failed}")
    for s in summary["steps"]:
        print(
            f"{s['from']:,} -> {s['to']:,}, per 10x: time {s['time_ratio_per_10x']:.2f}x, "
            f"python peak {s['peak_rss_ratio_per_10x']:.2f}x, "
            f"JVM peak {s['spark_jvm_peak_rss_ratio_per_10x']:.2f}x"
        )


def sizes_from_env() -> tuple[int, ...]:
    raw = os.environ.get("SCALE_EVENTS", "")
    try:
        return tuple(sorted(int(n) for n in raw.split(","))) if raw else EVENTS
    except ValueError:
        raise SystemExit(
            f"SCALE_EVENTS={raw!r}: give event counts separated by commas, e.g. 20000,200000"
        ) from None


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        rows = []
        for events in sizes_from_env():
            rows.append(measure(events, Path(folder)))
            print(f"  {events:,} events: {rows[-1]['total_s']:.1f} s", flush=True)
    summary = summarise(rows)
    print_table(summary)
    write_section("scale", summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) == 4:
        step, home, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
        if step == "generate":
            generate(home, count)
        else:
            print(json.dumps(collect_and_process(home, count)))
    else:
        main()
