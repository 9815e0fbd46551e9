"""The health system's data sources: the source side of the pipeline's trust boundary.

Two simulated systems export what they hold as signed *file batches*:

- ``imaging-archive`` (topic ``dicom-studies``): the PACS exports each
  study's image as a DICOM Part-10 file, ``<SOPInstanceUID>.dcm``;
- ``records-system`` (topic ``clinical-notes``): the RIS exports each study's
  radiology report as one XML document, ``<StudyInstanceUID>.xml``, and the
  coded label of every study in the batch, ``labels.csv``
  (``study_uid,label``, 1 = lesion).

A batch is a folder ``<landing>/<topic>/<batch_id>/`` holding its files and,
beside it, ``<landing>/<topic>/<batch_id>.manifest.json``::

    {"source", "batch_id", "topic", "schema_version": 1,
     "files": {name: sha256_hex, ...}, "records": number_of_files,
     "created_at": ISO-8601 UTC with ms and "Z", "signature": base64 Ed25519}

The signature covers the canonical JSON of all the other fields (the
e-commerce convention, `examples.ecommerce.sources.signed_bytes`). The files
are written into a private temporary folder, each fsynced, which is then
renamed into place; the manifest is written last, atomically: it is the
batch's commit record, and a folder without one is not a batch. Batches of
both sources cover the same studies (about `BATCH_STUDIES` each), but the
pipeline must link images and notes by StudyInstanceUID, never by batch.

The sources' private keys stay with the simulator (`load_or_create_keys`);
the registry the pipeline trusts (`enrol_sources`) holds their public keys and
limits, in the same format as the e-commerce registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from examples.ecommerce.sources import (
    SAFE_NAME,
    SourceKeys,
    batch_sequence,
    iso_z,
    load_or_create_key,
    signed_bytes,
)
from examples.ecommerce.sources import (
    enrol_sources as enrol_registry,
)
from examples.healthcare.studies.dicom import dicom_bytes
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.reports import labels_csv, note_xml
from resources.atomic import atomic_write_bytes, fsync_dir

IMAGING_SOURCE = "imaging-archive"
RECORDS_SOURCE = "records-system"
DICOM_TOPIC = "dicom-studies"
NOTES_TOPIC = "clinical-notes"
SOURCES = {IMAGING_SOURCE: DICOM_TOPIC, RECORDS_SOURCE: NOTES_TOPIC}
LABELS_FILE = "labels.csv"

SCHEMA_VERSION = 1
BATCH_STUDIES = 200
RATE_HEADROOM = 50  # registry rate limit, in multiples of the busiest source's mean hourly volume
EXPORT_DELAY = timedelta(minutes=10)  # a batch is created this long after its last study or report
_WRITERS = 8  # files are written and fsynced in parallel: one fsync at a time costs ~3 ms a file


def load_or_create_keys(folder: Path) -> SourceKeys:
    """The healthcare sources' Ed25519 keys, one owner-only PEM file per source in `folder`."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return SourceKeys({source: load_or_create_key(folder / f"{source}.pem") for source in SOURCES})


def enrol_sources(registry_path: Path, keys: SourceKeys, *, max_records_per_hour: int) -> Path:
    """Write the registry the pipeline trusts for the healthcare sources (same format as e-commerce)."""
    return enrol_registry(registry_path, keys, max_records_per_hour=max_records_per_hour, sources=SOURCES)


def default_max_records_per_hour(cfg: CohortConfig, batch_studies: int = BATCH_STUDIES) -> int:
    """A rate limit (files per hour per source) with room for normal traffic of this size.

    `RATE_HEADROOM` times the busiest source's mean hourly volume, and never
    less than two full batches, since a batch's files arrive together.
    """
    hours = cfg.days * 24
    busiest = cfg.studies + math.ceil(cfg.studies / batch_studies)  # notes plus one labels.csv a batch
    return max(math.ceil(RATE_HEADROOM * busiest / hours), 2 * (batch_studies + 1))


def write_file_batch(
    landing: Path,
    source_id: str,
    topic: str,
    files: dict[str, bytes],
    signer: Ed25519PrivateKey | None,
    *,
    batch_id: str,
    created_at: datetime,
) -> Path:
    """Land one batch: its files in ``<landing>/<topic>/<batch_id>/``, then its manifest; return that.

    `signer=None` leaves the manifest unsigned (no "signature" field), for
    attack scenarios. A batch of the same id is replaced: its manifest is
    removed first, so no manifest ever describes a half-written folder.
    """
    for name in (source_id, batch_id, topic, *files):
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"unsafe name for a landing file: {name!r}")
    if not files:
        raise ValueError("a batch needs at least one file")
    folder = landing / topic  # consumers read a topic, whoever claims to have sent it
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / batch_id
    manifest_path = folder / f"{batch_id}.manifest.json"
    manifest_path.unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{batch_id}.", suffix=".partial"))
    try:
        with ThreadPoolExecutor(_WRITERS) as pool:
            digests = dict(
                zip(files, pool.map(_write_new, (staging / n for n in files), files.values()), strict=True)
            )
        fsync_dir(staging)
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest: dict = {
        "source": source_id,
        "batch_id": batch_id,
        "topic": topic,
        "schema_version": SCHEMA_VERSION,
        "files": digests,
        "records": len(files),
        "created_at": iso_z(created_at),
        "sequence": batch_sequence(created_at),
    }
    if signer is not None:
        manifest["signature"] = base64.b64encode(signer.sign(signed_bytes(manifest))).decode()
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    return manifest_path


def _write_new(path: Path, data: bytes) -> str:
    """Create `path` owner-only (never through a link), write and fsync it; return its SHA-256."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return hashlib.sha256(data).hexdigest()


def chunks(studies: list[Study], batch_studies: int = BATCH_STUDIES) -> Iterator[list[Study]]:
    """`studies` in order, cut into near-equal batches of at most `batch_studies`."""
    n = math.ceil(len(studies) / batch_studies)
    for i in range(n):
        yield studies[i * len(studies) // n : (i + 1) * len(studies) // n]


def imaging_files(studies: list[Study]) -> dict[str, bytes]:
    """What the imaging archive exports for `studies`: ``{<SOPInstanceUID>.dcm: DICOM bytes}``."""
    return {study.dicom_name: dicom_bytes(study) for study in studies}


def records_files(studies: list[Study]) -> dict[str, bytes]:
    """What the records system exports: ``{<StudyInstanceUID>.xml: note, "labels.csv": labels}``."""
    files = {study.note_name: note_xml(study) for study in studies}
    files[LABELS_FILE] = labels_csv([(study.study_uid, study.label) for study in studies])
    return files


def emit_window(
    studies: list[Study],
    landing: Path,
    keys: SourceKeys,
    *,
    window: str,
    batch_studies: int = BATCH_STUDIES,
    part: tuple[int, int] = (0, 1),
) -> dict[str, dict[str, int]]:
    """Land `studies` as signed batches of both sources, one batch in memory at a time.

    Batch ids are ``<source>-<window>-<000000>``. `part` ``(k, n)`` lands only
    the batches whose number is k modulo n, so that n processes can share a
    window. Returns ``{source_id: {"batches": n, "records": files, "bytes": n}}``.
    """
    index, parts = part
    if not 0 <= index < parts:
        raise ValueError(f"part {index} of {parts} does not exist")
    summary = {source: {"batches": 0, "records": 0, "bytes": 0} for source in SOURCES}
    for number, batch in enumerate(chunks(studies, batch_studies)):
        if number % parts != index:
            continue
        exports = (
            (IMAGING_SOURCE, imaging_files(batch), max(s.time for s in batch)),
            (RECORDS_SOURCE, records_files(batch), max(s.report_time for s in batch)),
        )
        for source, files, last in exports:
            write_file_batch(
                landing,
                source,
                SOURCES[source],
                files,
                keys.signer(source),
                batch_id=f"{source}-{window}-{number:06d}",
                created_at=last + EXPORT_DELAY,
            )
            summary[source]["batches"] += 1
            summary[source]["records"] += len(files)
            summary[source]["bytes"] += sum(len(data) for data in files.values())
    return summary


def clear_window(landing: Path, window: str) -> None:
    """Remove earlier batches of this window (manifests first), so that a rerun leaves none behind."""
    for source, topic in SOURCES.items():
        folder = landing / topic
        for path in sorted(folder.glob(f"{source}-{window}-*.manifest.json")):
            path.unlink()
        for pattern in (f"{source}-{window}-*", f".{source}-{window}-*.partial"):
            for path in folder.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path)
