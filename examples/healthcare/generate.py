"""Generate the healthcare example's landing data.

Simulates two windows of the same health system (same patients, who come
back within and across windows) and lands them as signed source batches:

- ``reference``: the window before, a trusted baseline for drift checks;
- ``inbox``: the current window, which the pipeline collects.

It also enrols the two sources in the registry the pipeline trusts, keeping
the sources' private keys in the simulator's own folder. Run
``python -m examples.healthcare.generate --seed 7 --studies 3000``.

Writing DICOM is CPU-bound (pydicom), so larger runs share the batches among
worker processes, each a fresh ``python -m examples.healthcare.generate
--emit-part ...`` that recomputes the same deterministic plan and lands its
share; they exchange only JSON on the command line and stdout (nothing is
pickled). The bytes landed do not depend on the number of workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from examples.healthcare.batches import (
    BATCH_STUDIES,
    SOURCES,
    clear_window,
    default_max_records_per_hour,
    emit_window,
    enrol_sources,
    load_or_create_keys,
)
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from resources.runtime import REPO_ROOT, RuntimeHome

WINDOWS = (("reference", -1), ("inbox", 0))
MAX_WORKERS = 8
MIN_STUDIES_PER_WORKER = 400  # below this a worker's start-up (imports) costs more than it saves


def default_paths(home: Path) -> dict[str, Path]:
    """Where the simulator lands data, enrols sources and keeps keys under `home`."""
    return {
        "inbox": home / "landing" / "healthcare" / "inbox",
        "reference": home / "landing" / "healthcare" / "reference",
        "feedback": home / "landing" / "healthcare" / "feedback",
        "registry": home / "config" / "healthcare_sources.json",
        "keys": home / "simulator" / "healthcare_keys",
    }


def default_workers(studies: int, windows: int = len(WINDOWS)) -> int:
    """Worker processes for landing `windows` windows of `studies` each: 1 for small runs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS, studies * windows // MIN_STUDIES_PER_WORKER))


def generate(
    seed: int,
    studies: int,
    home: Path,
    *,
    inbox: Path | None = None,
    reference: Path | None = None,
    registry: Path | None = None,
    keys: Path | None = None,
    workers: int | None = None,
) -> dict:
    """Enrol the sources and land the reference and inbox windows (`studies` each); return a summary.

    Paths default to `default_paths(home)`. Rerunning replaces the batches of
    the same windows, so the landing zone holds exactly one generation.
    `workers` defaults to `default_workers(studies)`.
    """
    overrides = {"inbox": inbox, "reference": reference, "registry": registry, "keys": keys}
    paths = default_paths(home) | {k: v for k, v in overrides.items() if v is not None}
    cfg = CohortConfig(seed=seed, studies=studies)
    source_keys = load_or_create_keys(paths["keys"])
    enrol_sources(paths["registry"], source_keys, max_records_per_hour=default_max_records_per_hour(cfg))
    windows = _land(cfg, [(paths[name], period) for name, period in WINDOWS], paths["keys"], workers)
    return {
        "seed": seed,
        "studies": studies,
        "registry": str(paths["registry"]),
        "keys": str(paths["keys"]),
        "windows": dict(zip([name for name, _ in WINDOWS], windows, strict=True)),
    }


def generate_feedback(
    seed: int,
    studies: int,
    home: Path,
    *,
    cycle: int = 1,
    workers: int | None = None,
    landing: Path | None = None,
) -> dict:
    """Land window `cycle` after the inbox into the feedback landing (or `landing`): new studies."""
    paths = default_paths(home)
    load_or_create_keys(paths["keys"])
    cfg = CohortConfig(seed=seed, studies=studies)
    return _land(cfg, [(landing or paths["feedback"], cycle)], paths["keys"], workers)[0]


def _land(cfg: CohortConfig, targets: list[tuple[Path, int]], keys: Path, workers: int | None) -> list[dict]:
    """Land period `period` into `landing` for each target; the summaries, in order."""
    workers = default_workers(cfg.studies, len(targets)) if workers is None else max(1, workers)
    batches = -(-cfg.studies // BATCH_STUDIES)
    parts = max(1, min(batches, -(-workers // len(targets))))
    jobs = []
    for landing, period in targets:
        clear_window(landing, _window(cfg, period))
        jobs += [{"landing": str(landing), "period": period, "part": k, "parts": parts} for k in range(parts)]
    common = {"seed": cfg.seed, "studies": cfg.studies, "keys": str(keys)}
    if workers == 1:
        results = [emit_part(common | job) for job in jobs]
    else:
        results = _run_workers([common | job for job in jobs])
    summaries = []
    for landing, period in targets:
        mine = [
            r
            for job, r in zip(jobs, results, strict=True)
            if (job["landing"], job["period"]) == (str(landing), period)
        ]
        sources = {source: {"batches": 0, "records": 0, "bytes": 0} for source in SOURCES}
        for result in mine:
            for source, counts in result["sources"].items():
                for key, value in counts.items():
                    sources[source][key] += value
        window = {key: mine[0][key] for key in ("studies", "positive_labels", "patients")}
        summaries.append(
            {"window": _window(cfg, period), "landing": str(landing), **window, "sources": sources}
        )
    return summaries


def _window(cfg: CohortConfig, period: int) -> str:
    return cfg.window_start(period).strftime("%Y%m%d")


def emit_part(job: dict) -> dict:
    """Land share ``job["part"]`` of ``job["parts"]`` of one window's batches (see `emit_window`).

    Returns what it landed per source (``"sources"``) and the whole window's
    study, positive-label and patient counts.
    """
    cfg = CohortConfig(seed=int(job["seed"]), studies=int(job["studies"]))
    period = int(job["period"])
    studies = plan_studies(cfg, period)
    sources = emit_window(
        studies,
        Path(job["landing"]),
        load_or_create_keys(Path(job["keys"])),
        window=_window(cfg, period),
        part=(int(job["part"]), int(job["parts"])),
    )
    return {
        "sources": sources,
        "studies": len(studies),
        "positive_labels": sum(s.label for s in studies),
        "patients": len({s.patient.index for s in studies}),
    }


def _run_workers(jobs: list[dict]) -> list[dict]:
    """Run each job in its own Python process, all at once; their JSON summaries, in order."""
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    }
    command = [sys.executable, "-m", "examples.healthcare.generate", "--emit-part"]
    processes = [
        subprocess.Popen(  # our own module; the arguments are JSON we built
            [*command, json.dumps(job)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for job in jobs
    ]
    results, failures = [], []
    for job, process in zip(jobs, processes, strict=True):
        out, err = process.communicate()
        if process.returncode:
            failures.append(f"part {job['part']} of period {job['period']}: {err.decode()[-2000:]}")
        else:
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    if failures:
        raise RuntimeError("healthcare generation failed in a worker:\n" + "\n".join(failures))
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--studies", type=int, default=3000, help="studies per window")
    parser.add_argument("--landing", type=Path, help="inbox landing folder")
    parser.add_argument("--reference", type=Path, help="reference-window landing folder")
    parser.add_argument("--registry", type=Path, help="source registry file")
    parser.add_argument("--keys", type=Path, help="folder of the sources' private keys")
    parser.add_argument("--workers", type=int, help="worker processes (default: by size and CPUs)")
    parser.add_argument(
        "--feedback-cycle", type=int, help="land window N after the inbox as feedback instead"
    )
    parser.add_argument("--emit-part", help=argparse.SUPPRESS)  # a worker's job, as JSON
    args = parser.parse_args(argv)
    home = RuntimeHome.from_environment().root
    if args.emit_part:
        result = emit_part(json.loads(args.emit_part))
        print(json.dumps(result, sort_keys=True))
        return result
    started = time.perf_counter()
    if args.feedback_cycle:
        summary = generate_feedback(
            args.seed, args.studies, home, cycle=args.feedback_cycle, workers=args.workers
        )
        print(f"feedback {summary['window']}: {summary['sources']} -> {summary['landing']}")
        return summary
    summary = generate(
        args.seed,
        args.studies,
        home,
        inbox=args.landing,
        reference=args.reference,
        registry=args.registry,
        keys=args.keys,
        workers=args.workers,
    )
    for name, window in summary["windows"].items():
        counts = ", ".join(
            f"{source} {s['records']} files/{s['batches']} batches" for source, s in window["sources"].items()
        )
        print(
            f"{name} {window['window']}: {window['studies']} studies of {window['patients']} patients, "
            f"{window['positive_labels']} labelled positive; {counts} -> {window['landing']}"
        )
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return summary


if __name__ == "__main__":
    main()
