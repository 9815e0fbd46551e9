"""Bounded cost of untrusted input: what a junk drop in the landing zone may make the pipeline spend.

A refused batch is quarantined whole, as one row naming its size and digest,
without being parsed or held in memory; records refused inside an accepted
batch keep a bounded sample of rows; the counts stay exact either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.accounting import (
    MAX_SAMPLED_PER_BATCH,
    IntakeResult,
    summarise_files,
)
from domain.ecommerce.records import ACTIVITY
from domain.ecommerce.topics import collect_topic
from domain.healthcare.file_batches import DICOM_TOPIC, collect_studies
from examples.ecommerce.sources import SourceKeys, enrol_sources, kafka_message, write_batch
from resources.runtime import REPO_ROOT
from resources.sources import SourceRegistry

TOPIC = ACTIVITY.topic
SOURCE = "web-clickstream"
EVENT_TIME = "2026-11-02T10:00:00.000Z"
CREATED = datetime(2026, 11, 2, 11, tzinfo=UTC)
MiB = 1024 * 1024
DROP_BYTES = 300 * MiB


def _registry(root: Path, *, max_batch_bytes: int = 64 * MiB) -> tuple[SourceRegistry, SourceKeys]:
    keys = SourceKeys.load_or_create(root / "simulator")
    enrol_sources(
        root / "registry.json", keys, max_records_per_hour=1_000_000, max_batch_bytes=max_batch_bytes
    )
    return SourceRegistry(
        name="ecommerce", path=str(root / "registry.json"), landing=str(root / "landing")
    ), keys


def _event(i: int) -> dict:
    return {
        "event_id": f"e-{i}",
        "event_type": "view",
        "user_id": f"u-{i % 7}",
        "item_id": f"i-{i % 11}",
        "session_id": f"s-{i % 3}",
        "event_time": EVENT_TIME,
        "price": 12.5,
        "account_created": "2026-01-01",
    }


def _land(registry: SourceRegistry, signer, *, batch_id: str, events=(), raw_lines=None) -> Path:
    offsets: dict = {}
    messages = [kafka_message(TOPIC, offsets, e["user_id"], e, EVENT_TIME) for e in events]
    manifest = write_batch(
        registry.landing_dir(),
        SOURCE,
        TOPIC,
        messages,
        signer,
        batch_id=batch_id,
        created_at=CREATED,
        raw_lines=raw_lines,
    )
    return manifest.with_name(f"{batch_id}.jsonl")


def _balanced(result: IntakeResult) -> bool:
    """received = accepted + quarantined, and the stored rows plus the unstored count are the quarantine."""
    stored = sum(row["records"] for row in result.quarantine)
    return (
        result.received == result.accepted + result.quarantined
        and result.quarantined == stored + result.quarantine_unstored
        and result.quarantined == sum(result.reasons().values())
    )


# -- a 300 MiB unsigned drop ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def junk_drop(tmp_path_factory) -> Iterator[dict]:
    """A 300 MiB `.jsonl` without a manifest, streamed to disk (never held); its line count and digest."""
    root = tmp_path_factory.mktemp("drop")
    registry, _ = _registry(root)
    folder = registry.landing_dir() / TOPIC
    folder.mkdir(parents=True)
    path = folder / "junk.jsonl"
    digest, lines, size, offset = hashlib.sha256(), 0, 0, 0
    with open(path, "wb") as handle:
        while size < DROP_BYTES:
            noise = os.urandom(4096 * 24).hex()
            block = b"".join(
                b'{"topic":"user-activity","partition":%d,"offset":%d,"key":"u%d","value":"{\\"junk\\":\\"%s\\"}",'
                b'"timestamp":%d}\n'
                % (
                    n % 6,
                    offset + n,
                    n % 977,
                    noise[n * 48 : n * 48 + 16 + n % 32].encode(),
                    1_762_000_000_000 + n,
                )  # fmt: skip
                for n in range(4096)
            )
            block = block[: DROP_BYTES - size]
            handle.write(block)
            digest.update(block)
            lines += block.count(b"\n") + (not block.endswith(b"\n"))
            size += len(block)
            offset += 4096
    assert path.stat().st_size == DROP_BYTES
    yield {"root": root, "registry": registry, "path": path, "lines": lines, "sha256": digest.hexdigest()}
    path.unlink()  # pytest keeps the temporary folders of recent runs


@pytest.mark.slow
def test_a_300_mib_unsigned_drop_is_quarantined_whole_in_bounded_memory(junk_drop):
    registry: SourceRegistry = junk_drop["registry"]
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = collect_topic(registry, registry.landing_dir(), ACTIVITY, junk_drop["root"] / "out.parquet")
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    print(f"300 MiB drop: traced peak {peak / MiB:.1f} MiB in {elapsed:.1f} s")
    assert peak < 64 * MiB
    lines = junk_drop["lines"]
    assert result.received == result.quarantined == lines > 1_000_000 and result.accepted == 0
    assert _balanced(result)
    assert result.reasons() == {"batch refused": lines}
    [row] = result.quarantine  # one row for the whole batch, not one per line
    assert row["batch_id"] == "junk" and row["line"] is None and row["records"] == lines
    assert row["reason"] == "batch refused: unsigned: batch has no manifest"
    assert row["bytes"] == DROP_BYTES and row["sha256"] == junk_drop["sha256"]
    assert f"{DROP_BYTES} bytes" in row["raw"] and junk_drop["sha256"] in row["raw"]
    assert "junk" not in row["raw"].replace("jsonl batch", "")  # no content kept
    frame = result.quarantine_frame()
    assert len(frame) == 1 and frame["line"].isna().all() and frame["records"].tolist() == [lines]
    report = result.report()
    assert report.quarantined == lines and report.quarantine_rows == 1 and report.quarantine_unstored == 0
    assert report.batches_refused == report.unauthenticated_batches == 1


_RSS_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from domain.ecommerce.records import ACTIVITY
    from domain.ecommerce.topics import collect_topic
    from resources.sources import SourceRegistry

    def status_kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    def maxrss_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    registry = SourceRegistry(name="ecommerce", path=sys.argv[1], landing=sys.argv[2])
    out = Path(sys.argv[3])
    out.with_name("empty").mkdir()
    collect_topic(registry, out.with_name("empty"), ACTIVITY, out)  # warm up: lazy imports, Arrow pools
    try:  # reset the peak (VmHWM) to the current RSS, so that what follows is the collection's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    rss, maxrss = status_kib("VmRSS"), maxrss_kib()
    result = collect_topic(registry, Path(sys.argv[2]), ACTIVITY, out)
    print(json.dumps({"reset": reset, "rss_before_kib": rss, "hwm_after_kib": status_kib("VmHWM"),
                      "maxrss_before_kib": maxrss, "maxrss_after_kib": maxrss_kib(),
                      "received": result.received, "quarantined": result.quarantined,
                      "rows": len(result.quarantine)}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_the_300_mib_drop_costs_a_collection_process_little_resident_memory(junk_drop):
    """Measured outside tracemalloc, in a process of its own: the peak RSS the collection adds.

    Two measures, both bounded: the growth of `ru_maxrss` (the process's
    lifetime peak: an earlier, larger peak, such as the imports', can only
    hide growth), and, where `/proc/self/clear_refs` lets the peak be reset
    just before collecting, the peak RSS during the collection (VmHWM) over
    the RSS just before it, which nothing earlier can hide.
    """
    registry: SourceRegistry = junk_drop["registry"]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_PROBE,
            registry.path,
            registry.landing,
            str(junk_drop["root"] / "rss.parquet"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    maxrss_growth = (measured["maxrss_after_kib"] - measured["maxrss_before_kib"]) / 1024
    peak_growth = (
        (measured["hwm_after_kib"] - measured["rss_before_kib"]) / 1024 if measured["reset"] else 0.0
    )
    print(f"300 MiB drop: ru_maxrss growth {maxrss_growth:.1f} MiB, peak RSS growth {peak_growth:.1f} MiB")
    assert maxrss_growth < 150
    assert peak_growth < 150  # 0.0 where the peak could not be reset
    assert measured["received"] == measured["quarantined"] == junk_drop["lines"] and measured["rows"] == 1


# -- refused batches and bad records in accepted ones --------------------------------------------


def test_refused_and_malformed_batches_keep_a_bounded_sample_with_exact_counts(tmp_path):
    registry, keys = _registry(tmp_path)
    bad = [b'{"topic": "user-activity", "offset": %d, "value": "{not json' % i for i in range(5_000)]
    _land(registry, Ed25519PrivateKey.generate(), batch_id=f"{SOURCE}-forged", raw_lines=bad)
    offsets: dict = {}
    good = [
        json.dumps(kafka_message(TOPIC, offsets, "u-1", _event(i), EVENT_TIME)).encode() for i in range(20)
    ]
    _land(registry, keys.signer(SOURCE), batch_id=f"{SOURCE}-mixed", raw_lines=bad + good)

    result = collect_topic(registry, registry.landing_dir(), ACTIVITY, tmp_path / "out.parquet")

    assert result.received == 10_020 and result.accepted == 20 and result.quarantined == 10_000
    assert result.reasons() == {"batch refused": 5_000, "malformed": 5_000}
    assert _balanced(result)
    rows = result.quarantine
    assert len(rows) == 1 + MAX_SAMPLED_PER_BATCH  # one for the forged batch, a sample of the rest
    [forged] = [r for r in rows if r["batch_id"] == f"{SOURCE}-forged"]
    assert forged["records"] == 5_000 and forged["reason"].startswith("batch refused: bad signature")
    sampled = [r for r in rows if r["batch_id"] == f"{SOURCE}-mixed"]
    assert [r["line"] for r in sampled] == list(range(MAX_SAMPLED_PER_BATCH))
    assert all(r["raw"].startswith('{"topic": "user-activity"') for r in sampled)
    assert result.quarantine_unstored == 5_000 - MAX_SAMPLED_PER_BATCH
    report = result.report()
    assert report.quarantine_rows == len(rows) and report.quarantine_reasons == result.reasons()


def test_raw_text_kept_for_a_refused_record_is_truncated(tmp_path):
    registry, keys = _registry(tmp_path)
    huge = b'{"value": "' + b"x" * 15_000 + b'"'  # under the record limit, malformed
    _land(registry, keys.signer(SOURCE), batch_id=f"{SOURCE}-huge", raw_lines=[huge])
    result = collect_topic(registry, registry.landing_dir(), ACTIVITY, tmp_path / "out.parquet")
    [row] = result.quarantine
    assert row["reason"].startswith("malformed") and len(row["raw"]) == 1024


def test_a_batch_changed_after_verification_is_refused_not_parsed(tmp_path, monkeypatch):
    """The digest is checked again on the bytes parsed: a file swapped after verification is refused."""
    registry, keys = _registry(tmp_path)
    data = _land(
        registry, keys.signer(SOURCE), batch_id=f"{SOURCE}-swapped", events=[_event(i) for i in range(3)]
    )
    verify = SourceRegistry.verify

    def verify_then_swap(self, batch, topic, policies):
        verdict = verify(self, batch, topic, policies)
        data.write_bytes(data.read_bytes() + b"{}\n")
        return verdict

    monkeypatch.setattr(SourceRegistry, "verify", verify_then_swap)
    result = collect_topic(registry, registry.landing_dir(), ACTIVITY, tmp_path / "out.parquet")
    assert result.accepted == 0 and result.received == result.quarantined == 4
    assert result.reasons() == {"batch refused": 4}
    assert result.quarantine[0]["reason"] == "batch refused: digest mismatch: data changed after verification"


def test_links_and_pipes_in_the_landing_zone_are_refused_without_being_read(tmp_path):
    registry, keys = _registry(tmp_path)
    _land(registry, keys.signer(SOURCE), batch_id=f"{SOURCE}-ok", events=[_event(1)])
    folder = registry.landing_dir() / TOPIC
    (folder / "endless.jsonl").symlink_to("/dev/zero")  # read, it would never end
    os.mkfifo(folder / "pipe.jsonl")  # opened for reading, it would block
    result = collect_topic(registry, registry.landing_dir(), ACTIVITY, tmp_path / "out.parquet")
    assert result.accepted == result.received == 1 and result.quarantined == 0
    refused = {row["batch_id"]: row for row in result.quarantine}
    assert refused.keys() == {"endless", "pipe"}
    assert all(row["records"] == 0 and row["bytes"] == 0 for row in refused.values())
    assert _balanced(result)


def test_rows_per_run_are_capped_too(tmp_path, monkeypatch):
    """Many refused batches: counted, each up to the run's row cap; the rest counted only."""
    import domain.accounting as accounting

    monkeypatch.setattr(accounting, "MAX_QUARANTINE_ROWS", 3)
    registry, _ = _registry(tmp_path)
    folder = registry.landing_dir() / TOPIC
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"drop-{i}.jsonl").write_bytes(b"{}\n" * (i + 1))
    result = collect_topic(registry, registry.landing_dir(), ACTIVITY, tmp_path / "out.parquet")
    assert len(result.quarantine) == 3 and result.quarantined == result.received == 15
    assert result.quarantine_unstored == 4 + 5 and _balanced(result)


# -- healthcare file batches ---------------------------------------------------------------------


def test_an_unsigned_file_batch_is_quarantined_whole_without_file_names(tmp_path):
    from examples.healthcare.batches import (
        IMAGING_SOURCE,
        enrol_sources,
        load_or_create_keys,
        write_file_batch,
    )

    keys = load_or_create_keys(tmp_path / "simulator")
    enrol_sources(tmp_path / "registry.json", keys, max_records_per_hour=1_000)
    registry = SourceRegistry(
        name="healthcare", path=str(tmp_path / "registry.json"), landing=str(tmp_path / "in")
    )
    files = {f"1.2.826.0.1.3680043.8.498.{i}.dcm": os.urandom(1000 + i) for i in range(3)}
    files["readme.txt"] = b"not a record"
    write_file_batch(
        registry.landing_dir(),
        IMAGING_SOURCE,
        DICOM_TOPIC,
        files,
        None,
        batch_id="unsigned",
        created_at=CREATED,
    )

    result = collect_studies(registry, registry.landing_dir(), tmp_path / "out.parquet", b"k" * 32)

    assert result.received == result.quarantined == 3 and result.accepted == 0
    assert result.reasons() == {"batch refused": 3} and _balanced(result)
    [row] = result.quarantine
    size = sum(len(d) for d in files.values())
    digest = hashlib.sha256(b"".join(sorted(hashlib.sha256(d).digest() for d in files.values()))).hexdigest()
    assert row["records"] == 3 and row["bytes"] == size and row["sha256"] == digest
    assert row["reason"] == "batch refused: unsigned: manifest carries no signature"
    assert row["raw"] == f"file batch: 3 record files, 4 files of {size} bytes, sha256 {digest}"
    assert not any(name in str(value) for name in files for value in row.values())
    assert not any(name.split(".dcm")[0] in str(value) for name in files for value in row.values())


def test_a_file_batch_summary_does_not_follow_links(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"A" * 10)
    (folder / "b.dcm").symlink_to("/dev/zero")
    (folder / "c.dcm").mkdir()
    summary = summarise_files(folder, lambda n: n.endswith(".dcm"))
    assert (summary.records, summary.bytes) == (3, 10)
    assert summary.sha256 == hashlib.sha256(hashlib.sha256(b"A" * 10).digest()).hexdigest()
    assert "2 other entries not read" in summary.description
