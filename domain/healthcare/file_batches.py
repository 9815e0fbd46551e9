"""Intake of signed file batches: DICOM studies and clinical notes, de-identified on the way in.

`collect_studies` and `collect_notes` read one topic's batches from the
landing zone, one batch at a time, authenticate each against the source
registry (signature, file set, digests, replay, rate limit), and write the
accepted records, de-identified, to a Parquet file. A refused batch is
quarantined whole (one row: its record-file count, size, digest and reason,
never a file's name or content); a file refused inside an accepted batch is
quarantined with its reason, size and digest, without its content (which
would carry PHI): received = accepted + quarantined, in record files.

Per DICOM file: the 128-byte preamble is zeroed (DICOM/executable
polyglots), the file is validated (parseable, required tags, modality,
transfer syntax, pixel data), de-identified (PS3.15 Annex E basic profile,
keyed pseudonyms so a patient's studies still link) and searched for every
PHI value the original carried; a survivor quarantines the file (fail
closed). Per note: parsed with defusedxml (entity bombs and external
entities refused), de-identified the same way, and its diagnosis compared
with the coded label from the batch's ``labels.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from domain.accounting import IntakeResult, ReplayGuard, refused, summarise_files
from domain.distribution import design_effect
from domain.healthcare.deidentify import deidentify, phi_values, to_bytes, whole_word_matches
from domain.healthcare.dicom import Refusal, neutralise_preamble, validate_dicom
from domain.healthcare.images import first_number
from domain.healthcare.notes import (
    consistency,
    deidentify_note,
    note_label,
    note_phi_values,
    parse_note,
)
from resources.sources import BatchVerdict, RateLimiter, SourceRegistry, landed_batches

DICOM_TOPIC = "dicom-studies"
NOTES_TOPIC = "clinical-notes"
LABELS_FILE = "labels.csv"
MAX_LABELS_BYTES = 4 * 1024 * 1024
PIXEL_DATA = b"\xe0\x7f\x10\x00"  # the (7FE0,0010) tag, little endian

STUDY_SCHEMA = pa.schema(
    {
        "study_uid": pa.string(),
        "series_uid": pa.string(),
        "sop_uid": pa.string(),
        "patient_pseudonym": pa.string(),
        "modality": pa.string(),
        "rows": pa.int32(),
        "columns": pa.int32(),
        "pixel_spacing": pa.float64(),
        "window_center": pa.float64(),
        "window_width": pa.float64(),
        "preamble": pa.string(),
        "source": pa.string(),
        "batch_id": pa.string(),
        "dicom": pa.binary(),
    }
)
NOTE_SCHEMA = pa.schema(
    {
        "study_uid": pa.string(),
        "patient_pseudonym": pa.string(),
        "findings": pa.string(),
        "impression": pa.string(),
        "diagnosis_code": pa.string(),
        "diagnosis_system": pa.string(),
        "diagnosis_label": pa.string(),
        "note_label": pa.int8(),
        "label": pa.int8(),
        "source": pa.string(),
        "batch_id": pa.string(),
    }
)

OnBatch = Callable[[BatchVerdict, int], None]


def _authenticated(
    registry: SourceRegistry,
    landing: Path,
    topic: str,
    result: IntakeResult,
    replays: ReplayGuard,
    on_batch: OnBatch | None,
    is_record: Callable[[str], bool],
) -> Iterator[tuple[BatchVerdict, list[Path]]]:
    """Each landed batch of `topic`, verified; yields the accepted ones with their record files.

    A refused batch is never opened file by file: it is streamed once for
    its record-file count, size and digest (`summarise_files`, which names no
    file) and quarantined whole, as one row standing for its record files.
    """
    policies = registry.policies()
    limiter = RateLimiter()
    for batch in landed_batches(landing, topic):
        verdict = registry.verify(batch, topic, policies)
        folder = batch.data_path
        files: list[Path] = []
        created_ms = 0
        if verdict.accepted:
            # The registry checked this folder's exact file set, so listing it is bounded by what was signed.
            files = sorted(p for p in folder.iterdir() if is_record(p.name)) if folder.is_dir() else []
            created_ms = int(datetime.fromisoformat(batch.read_manifest()["created_at"]).timestamp() * 1000)
            why = replays.reason(verdict) or limiter.admit(
                policies[verdict.source], [created_ms] * len(files)
            )
            if why:
                verdict = refused(verdict, why)
            else:
                replays.accepted(verdict)
        if not verdict.accepted:
            summary = summarise_files(folder, is_record)
            result.received += summary.records
            if on_batch:
                on_batch(verdict, summary.records)
            result.add_batch(verdict, summary.records)
            result.refuse_batch(verdict, summary)
            continue
        result.received += len(files)
        if on_batch:
            on_batch(verdict, len(files))
        result.add_batch(verdict, len(files))
        result.source_hours[verdict.source].update([created_ms // 3_600_000] * len(files))
        yield verdict, files


def _describe(path: Path, data: bytes) -> str:
    """What the quarantine keeps of a refused file: size and digest, never its content or name.

    File names are instance and study UIDs, identifiers in their own right;
    the batch id, the file's position and its digest find it in the landing archive.
    """
    return f"{path.suffix.lstrip('.')} file of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def _leaks(originals: set[str], output: bytes) -> list[str]:
    """The original PHI values that still appear in `output` as whole words.

    Word boundaries keep "MARY" from matching inside "PRIMARY" and a short
    number inside a UID. Pixel data is not text and is left out of the search.
    The bytes are read both as Latin-1 and as UTF-8, so a name with accents
    ("Müller") is found whichever of the two character sets wrote it.
    What to search for is the caller's choice: `phi_values` leaves numbers
    out, so kept geometry never reads as a leak.
    """
    header = output[: output.rfind(PIXEL_DATA)] if PIXEL_DATA in output else output
    texts = (header.decode("latin-1"), header.decode("utf-8", errors="replace"))
    return sorted(set().union(*(whole_word_matches(originals, text) for text in texts)))


def collect_studies(
    registry: SourceRegistry,
    landing: Path,
    dest: Path,
    pseudonym_key: bytes,
    *,
    replays: ReplayGuard | None = None,
    on_batch: OnBatch | None = None,
) -> IntakeResult:
    """Validate, neutralise and de-identify every landed DICOM file into the Parquet file `dest`."""
    result = IntakeResult()
    seen_studies: set[str] = set()
    preambles: dict[str, int] = {}
    modalities: dict[str, int] = {}
    with pq.ParquetWriter(dest, STUDY_SCHEMA) as writer:
        batches = _authenticated(
            registry,
            landing,
            DICOM_TOPIC,
            result,
            replays or ReplayGuard(),
            on_batch,
            lambda n: n.endswith(".dcm"),
        )
        for verdict, files in batches:
            rows = []
            for i, path in enumerate(files):
                data = path.read_bytes()
                row = _study_row(data, pseudonym_key, seen_studies)
                if isinstance(row, Refusal):
                    result.refuse(verdict, i, row.reason, _describe(path, data))
                    continue
                rows.append(row | {"source": verdict.source, "batch_id": verdict.batch.batch_id})
                if row["preamble"]:
                    preambles[row["preamble"]] = preambles.get(row["preamble"], 0) + 1
                modalities[row["modality"]] = modalities.get(row["modality"], 0) + 1
            result.accepted += len(rows)
            writer.write_table(pa.Table.from_pylist(rows, schema=STUDY_SCHEMA))
    result.profile = {
        "rows": result.accepted,
        "modality_shares": {m: n / max(result.accepted, 1) for m, n in sorted(modalities.items())},
        "preambles_neutralised": preambles,
    }
    return result


def _study_row(data: bytes, key: bytes, seen: set[str]) -> dict | Refusal:
    neutralised = neutralise_preamble(data)
    if isinstance(neutralised, Refusal):
        return neutralised
    study = validate_dicom(neutralised.data)
    if isinstance(study, Refusal):
        return study
    if study.study_uid in seen:
        return Refusal("duplicate: study already received in this window")
    seen.add(study.study_uid)
    clean = deidentify(study.dataset, pseudonym_key=key)
    output = to_bytes(clean)
    leaked = _leaks(phi_values(study.dataset, pseudonym_key=key), output)
    if leaked:
        return Refusal(f"phi leak: {len(leaked)} identifying values survived de-identification")
    return {
        "study_uid": str(clean.StudyInstanceUID),
        "series_uid": str(clean.SeriesInstanceUID),
        "sop_uid": str(clean.SOPInstanceUID),
        "patient_pseudonym": str(clean.PatientID),
        "modality": study.modality,
        "rows": study.rows,
        "columns": study.columns,
        "pixel_spacing": first_number(clean, "PixelSpacing") or first_number(clean, "ImagerPixelSpacing"),
        "window_center": first_number(clean, "WindowCenter"),
        "window_width": first_number(clean, "WindowWidth"),
        "preamble": neutralised.preamble_kind or "",
        "dicom": output,
    }


def _labels(folder: Path) -> dict[str, int] | str:
    """The batch's coded labels by original study UID, or why they cannot be read."""
    path = folder / LABELS_FILE
    if not path.is_file():
        return "missing labels: the batch has no labels.csv"
    if path.stat().st_size > MAX_LABELS_BYTES:
        return f"too large: labels.csv over {MAX_LABELS_BYTES} bytes"
    labels = {}
    try:
        for row in csv.DictReader(io.StringIO(path.read_text("utf-8"))):
            label = int(row["label"])
            if label not in (0, 1):
                raise ValueError(f"label {label} is not 0 or 1")
            labels[row["study_uid"]] = label
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        return f"malformed labels: {error}"
    return labels


def collect_notes(
    registry: SourceRegistry,
    landing: Path,
    dest: Path,
    pseudonym_key: bytes,
    *,
    replays: ReplayGuard | None = None,
    on_batch: OnBatch | None = None,
) -> IntakeResult:
    """Parse, de-identify and label-check every landed note into the Parquet file `dest`."""
    result = IntakeResult()
    unconfirmed = 0
    per_patient: dict[str, list[int]] = {}  # pseudonym -> [studies, lesion studies]
    with pq.ParquetWriter(dest, NOTE_SCHEMA) as writer:
        batches = _authenticated(
            registry,
            landing,
            NOTES_TOPIC,
            result,
            replays or ReplayGuard(),
            on_batch,
            lambda n: n.endswith(".xml"),
        )
        for verdict, files in batches:
            labels = _labels(verdict.batch.data_path)
            rows = []
            for i, path in enumerate(files):
                data = path.read_bytes()
                row = labels if isinstance(labels, str) else _note_row(data, labels, pseudonym_key)
                if isinstance(row, str | Refusal):
                    reason = row if isinstance(row, str) else row.reason
                    result.refuse(verdict, i, reason, _describe(path, data))
                    continue
                rows.append(row | {"source": verdict.source, "batch_id": verdict.batch.batch_id})
                counts = per_patient.setdefault(row["patient_pseudonym"], [0, 0])
                counts[0] += 1
                counts[1] += row["label"]
                unconfirmed += row["note_label"] is None
            result.accepted += len(rows)
            writer.write_table(pa.Table.from_pylist(rows, schema=NOTE_SCHEMA))
    sizes, positives = np.array(list(per_patient.values()) or [[0, 0]]).T
    result.profile = {
        "positive_share": int(positives.sum()) / max(result.accepted, 1),
        "patients": len(per_patient),
        "design_effect": design_effect(sizes, positives),
        "unconfirmed_share": unconfirmed / max(result.accepted, 1),
        "label_mismatch_share": result.reasons().get("label mismatch", 0) / max(result.received, 1),
    }
    return result


def _note_row(data: bytes, labels: dict[str, int], key: bytes) -> dict | Refusal:
    note = parse_note(data)
    if isinstance(note, Refusal):
        return note
    label = labels.get(note.study_uid)
    if label is None:
        return Refusal("unlabelled: labels.csv has no label for this study")
    clean = deidentify_note(note, key)
    if isinstance(clean, Refusal):
        return clean
    supported = note_label(clean)
    if supported is not None and not consistency(supported, label):
        return Refusal(f"label mismatch: the report says {supported}, labels.csv says {label}")
    record = clean.as_record()
    leaked = _leaks(note_phi_values(note), "\n".join(str(v) for v in record.values()).encode())
    if leaked:
        return Refusal(f"phi leak: {len(leaked)} identifying values survived de-identification")
    return record | {"note_label": supported, "label": label}
