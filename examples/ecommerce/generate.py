"""Generate the e-commerce example's landing data.

Simulates two windows of the same shop (same users and items) and lands them
as signed source batches:

- ``reference``: the week before, a trusted baseline for drift checks;
- ``inbox``: the current week, which the pipeline collects.

It also enrols the sources in the registry the pipeline trusts, keeping the
sources' private keys in the simulator's own folder. Run
``python -m examples.ecommerce.generate --seed 7 --events 1000000``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from examples.ecommerce.sources import (
    SOURCES,
    Offsets,
    SourceKeys,
    default_max_records_per_hour,
    emit_window,
    enrol_sources,
)
from examples.ecommerce.world.config import WorldConfig
from examples.ecommerce.world.simulation import build_world
from resources.runtime import RuntimeHome

WINDOWS = (("reference", -1), ("inbox", 0))  # emitted in this order: one continuing Kafka log


def default_paths(home: Path) -> dict[str, Path]:
    """Where the simulator lands data, enrols sources and keeps keys under `home`."""
    return {
        "inbox": home / "landing" / "ecommerce" / "inbox",
        "reference": home / "landing" / "ecommerce" / "reference",
        "feedback": home / "landing" / "ecommerce" / "feedback",
        "registry": home / "config" / "ecommerce_sources.json",
        "keys": home / "simulator" / "ecommerce_keys",
    }


def generate(
    seed: int,
    events: int,
    home: Path,
    *,
    inbox: Path | None = None,
    reference: Path | None = None,
    registry: Path | None = None,
    keys: Path | None = None,
) -> dict:
    """Enrol the sources and land the reference and inbox windows; return a summary.

    Paths default to `default_paths(home)`. Rerunning replaces the batches of
    the same windows, so the landing zone holds exactly one generation.
    """
    overrides = {"inbox": inbox, "reference": reference, "registry": registry, "keys": keys}
    paths = default_paths(home) | {k: v for k, v in overrides.items() if v is not None}
    cfg = WorldConfig(seed=seed, events=events)
    source_keys = SourceKeys.load_or_create(paths["keys"])
    enrol_sources(paths["registry"], source_keys, max_records_per_hour=default_max_records_per_hour(cfg))
    offsets: Offsets = {}
    windows = {}
    for name, period in WINDOWS:
        world = build_world(cfg, period=period)
        window = world.window_start.strftime("%Y%m%d")
        landing = paths[name]
        _clear_window(landing, window)
        windows[name] = {
            "window": window,
            "landing": str(landing),
            "sources": emit_window(world, landing, source_keys, window=window, offsets=offsets),
        }
    return {
        "seed": seed,
        "events": events,
        "registry": str(paths["registry"]),
        "keys": str(paths["keys"]),
        "windows": windows,
    }


def generate_feedback(
    seed: int, events: int, home: Path, *, cycle: int = 1, landing: Path | None = None
) -> dict:
    """Land week `cycle` after the collected window as feedback batches (clicks and new reviews).

    Same shop, same users and items, same signing sources: what the deployed
    recommender's users do next, which monitoring validates before retraining.
    `landing` is where the batches are written instead of the home's feedback landing folder (a
    staging folder, from which they are delivered whole); that folder's earlier batches of the same
    week are removed either way.
    """
    paths = default_paths(home)
    landing = landing or paths["feedback"]
    world = build_world(WorldConfig(seed=seed, events=events), period=cycle)
    window = world.window_start.strftime("%Y%m%d")
    _clear_window(paths["feedback"], window)
    keys = SourceKeys.load_or_create(paths["keys"])
    return {
        "window": window,
        "landing": str(landing),
        "sources": emit_window(world, landing, keys, window=window, offsets={}),
    }


def _clear_window(landing: Path, window: str) -> None:
    """Remove earlier batches of this window, so that a smaller rerun leaves none behind."""
    for source, topic in SOURCES.items():
        for path in (landing / topic).glob(f"{source}-{window}-*"):
            path.unlink()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--landing", type=Path, help="inbox landing folder")
    parser.add_argument("--reference", type=Path, help="reference-window landing folder")
    parser.add_argument("--registry", type=Path, help="source registry file")
    parser.add_argument("--keys", type=Path, help="folder of the sources' private keys")
    parser.add_argument("--feedback-cycle", type=int, help="land feedback week N instead of the windows")
    args = parser.parse_args(argv)
    home = RuntimeHome.from_environment().root
    if args.feedback_cycle:
        summary = generate_feedback(args.seed, args.events, home, cycle=args.feedback_cycle)
        print(f"feedback {summary['window']}: {summary['sources']} -> {summary['landing']}")
        return summary
    summary = generate(
        args.seed,
        args.events,
        home,
        inbox=args.landing,
        reference=args.reference,
        registry=args.registry,
        keys=args.keys,
    )
    for name, window in summary["windows"].items():
        counts = ", ".join(
            f"{source} {s['records']} records/{s['batches']} batches"
            for source, s in window["sources"].items()
        )
        print(f"{name} {window['window']}: {counts} -> {window['landing']}")
    return summary


if __name__ == "__main__":
    main()
