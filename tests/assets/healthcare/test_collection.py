"""Healthcare collection and processing controls, run through the real Dagster job.

Each attack lands the way the hostile file would arrive (a signed batch from
a registered source, or a forged one) and the healthcare lifecycle runs over
it; clean data passes every check and no PHI reaches the store.
"""

import dataclasses
import io
import json
import re
import tarfile
from collections import Counter
from pathlib import PurePath

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from assets.healthcare.collection import PSEUDONYM_KEY_NAME
from domain.healthcare import transforms
from domain.healthcare.deidentify import deidentified_uid, phi_values
from domain.healthcare.images import IMAGE_SIZE
from domain.healthcare.notes import note_phi_values, parse_note
from examples.attacks.storage import flip_a_byte
from examples.healthcare.attacks.label_flipping import flip_labels
from examples.healthcare.attacks.processing_manipulation import relabelling_prepare_images
from examples.healthcare.attacks.retraining_exploitation import scaled_spacing
from examples.healthcare.batches import IMAGING_SOURCE, RECORDS_SOURCE
from examples.healthcare.clinic import Clinic
from examples.healthcare.studies.corpus import ACCEPTED, varied_corpus
from examples.healthcare.studies.hostile import (
    billion_laughs_note,
    external_entity_note,
    not_an_image_dicom,
    polyglot_preamble,
    truncated,
)
from examples.runs import checks, materialized, metadata
from pipelines import healthcare
from resources.runtime import RuntimeHome
from resources.sources import SourceRegistry

pytestmark = pytest.mark.slow

COLLECTED = ["healthcare/imaging_studies", "healthcare/clinical_notes"]
PROCESSED = ["healthcare/study_images", "healthcare/note_findings"]


@pytest.fixture
def clinic(home) -> Clinic:
    return Clinic(home)


def collect(clinic: Clinic):
    return clinic.run_selection(COLLECTED + PROCESSED)


def failed(result) -> dict[str, bool]:
    return {k: v for k, v in checks(result).items() if not v}


def original_phi(clinic: Clinic) -> set[str]:
    """Every identifying value the sources sent, read from the landed originals (reference and inbox)."""
    values: set[str] = set()
    for path in clinic.home.joinpath("landing", "healthcare").rglob("*.dcm"):
        values |= phi_values(pydicom.dcmread(path))
    for path in clinic.home.joinpath("landing", "healthcare").rglob("*.xml"):
        note = parse_note(path.read_bytes())
        if not hasattr(note, "reason"):
            values |= note_phi_values(note)
    # Left out: single words that are only part of a name (the surname "White" is also the report's
    # "white matter"), the export dates that name the batches (not any patient's), and numbers of
    # under six digits (house numbers, parts of phone numbers), which occur by chance in binary data.
    manifests = clinic.home.joinpath("landing").rglob("*.manifest.json")
    batch_dates = {part for path in manifests for part in path.name.split("-")}
    return {
        v
        for v in values
        if len(v) >= 4 and not v.isalpha() and not (v.isdigit() and len(v) < 6) and v not in batch_dates
    }


PIXEL_DATA = b"\xe0\x7f\x10\x00"
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * 4  # a normalised image blob of `study_images`


TEXT_RUN = re.compile(rb"[\x20-\x7e]{4,}")  # what `strings` prints: printable runs of four or more


def _cell(value: object) -> bytes:
    """A cell's text. A DICOM file's is its header; a normalised image (an image-sized blob of
    float32 pixels, all in [0, 1]) is numbers with no text; any other blob is searched as its
    printable runs, as `strings` reads one. (A run of digits also decodes to floats in [0, 1]:
    the size keeps such text searched.)"""
    if not isinstance(value, bytes):
        return str(value).encode("utf-8")
    if value.startswith(b"DICM", 128):
        return value[: value.rfind(PIXEL_DATA)] if PIXEL_DATA in value else value
    if len(value) == IMAGE_BYTES:
        pixels = np.frombuffer(value, "<f4")
        if np.all((pixels >= 0) & (pixels <= 1)):
            return b""
    return b"\n".join(TEXT_RUN.findall(value))


def stored_plaintexts(clinic: Clinic) -> dict[str, bytes]:
    """Every artifact in the store but the landed originals, decrypted and verified.

    The landed originals (`landed-batch` entries) are what the sources sent,
    PHI included, kept encrypted for audits: they are checked by
    `test_hostile_files_are_quarantined_with_reasons_while_the_batch_goes_on`. Parquet pages are
    compressed, where a short number turns up by chance: tables are searched
    as their decoded cell values instead. A safetensors file is raw float
    weights after a JSON header, where the only text it can carry is: its
    header is searched.
    """
    found = {}
    for entry in clinic.ledger.entries():
        if not entry.path or entry.path in found or entry.kind == "landed-batch":
            continue
        data = clinic.store.read_verified(entry.path, digest=entry.digest, stored_digest=entry.stored_digest)
        if entry.path.endswith(".safetensors"):
            data = data[8 : 8 + int.from_bytes(data[:8], "little")]
        elif entry.path.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            data = b"\n".join(
                _cell(v) for column in table.columns for v in column.to_pylist() if v is not None
            )
        found[entry.path] = data
    return found


TOKEN = re.compile(rb"[A-Z0-9]+(?:\.[A-Z0-9]+)*")  # words, numbers, dates and dotted UIDs


def found_phi(values: set[str], data: bytes) -> list[str]:
    """The values that occur in `data` as whole words, case-insensitively ("MARY" is not in "PRIMARY")."""
    text = data.upper()
    tokens = set(TOKEN.findall(text))
    found = []
    for value in values:
        needle = value.upper().encode("latin-1", "replace")
        parts = TOKEN.findall(needle)
        if not parts or not set(parts) <= tokens:
            continue  # some word of the value is nowhere in the data
        if len(parts) == 1 or re.search(rb"(?<![A-Z0-9])" + re.escape(needle) + rb"(?![A-Z0-9])", text):
            found.append(value)
    return sorted(found)


def dates(ds: pydicom.Dataset) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.VR == "DA" and e.value}


def original_dates(clinic: Clinic) -> dict[str, set[str]]:
    """Each landed study's dates, by the de-identified study UID collection will give it."""
    key = clinic.defs.resources["key_provider"].secret(PSEUDONYM_KEY_NAME)
    found = {}
    for path in clinic.paths["inbox"].rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found[deidentified_uid(str(ds.StudyInstanceUID), key)] = dates(ds)
    return found


def shifted_dates(clinic: Clinic, table: str) -> dict[str, set[str]]:
    """The dates each stored study of `table` carries, by study UID."""
    frame = clinic.stored_table(table)
    rows = zip(frame["study_uid"], frame["dicom"], strict=True)
    return {uid: dates(pydicom.dcmread(io.BytesIO(data))) for uid, data in rows}


def shifted_dates_anywhere(clinic: Clinic) -> set[str]:
    """Every date the stored studies carry: a shifted date can equal another patient's true date
    by chance, which is no leak, so the PHI searches leave these out."""
    tables = ("healthcare/reference_studies", "healthcare/imaging_studies")
    return {d for table in tables for found in shifted_dates(clinic, table).values() for d in found}


def landed_files(clinic: Clinic, window: str = "inbox") -> dict[str, bytes]:
    """Every file in a landing window, by its path below the topic folder (`<batch>/<file>`)."""
    folder = clinic.paths[window]
    return {
        str(PurePath(*p.relative_to(folder).parts[1:])): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
    }


def archived_batches(clinic: Clinic) -> dict[str, bytes]:
    """The landed originals the collection assets archived, decrypted: `<batch>/<file>` -> bytes."""
    archived = {}
    entries = clinic.ledger.entries(kind="landed-batch")
    for entry in [e for e in entries if e.subject.removesuffix("/landed-batch") in COLLECTED]:
        assert b"DICM" not in clinic.store.local_path(entry.path).read_bytes()  # encrypted at rest
        data = clinic.store.read_verified(entry.path, digest=entry.digest, stored_digest=entry.stored_digest)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    archived[member.name] = archive.extractfile(member).read()
    return archived


def test_clean_window_passes_every_check_and_no_phi_is_stored(clinic):
    phi, originals = original_phi(clinic), original_dates(clinic)
    result = collect(clinic)
    assert result.success and not failed(result), failed(result)
    assert {"imaging_studies", "clinical_notes", "study_images", "note_findings"} <= materialized(result)
    studies = metadata(result, "imaging_studies")
    assert studies["received"] == studies["accepted"] + studies["quarantined"] == clinic.studies

    # Every kept date is shifted: none is its own study's true date.
    written = shifted_dates(clinic, "healthcare/imaging_studies")
    assert any(written.values()) and not any(written[uid] & originals[uid] for uid in written)
    phi -= shifted_dates_anywhere(clinic)
    assert len(phi) > 1000  # names, MRNs, birth dates, addresses, physicians, institutions, UIDs
    stored = stored_plaintexts(clinic)
    assert any(path.startswith("collection/healthcare/imaging_studies") for path in stored)
    leaks = {path: found_phi(phi, data) for path, data in stored.items()}
    leaks = {path: found for path, found in leaks.items() if found}
    assert not leaks


def test_hostile_files_are_quarantined_with_reasons_while_the_batch_goes_on(clinic):
    batch = clinic.batch_files("dicom-studies")[0]
    genuine = sorted(batch.glob("*.dcm"))
    extra = {
        "polyglot.dcm": polyglot_preamble(genuine[0].read_bytes(), "pe"),
        "cut.dcm": truncated(genuine[1].read_bytes()),
        "referral.dcm": not_an_image_dicom(),
    }
    clinic.reland(batch, lambda files: {n: d for n, d in files.items() if n != genuine[0].name} | extra)
    notes = clinic.batch_files("clinical-notes")[0]
    bombs = {"bomb.xml": billion_laughs_note("1.2.3.4"), "xxe.xml": external_entity_note("1.2.3.5")}
    clinic.reland(notes, lambda files: files | bombs)
    originals = landed_files(clinic)

    result = collect(clinic)
    studies, reports = metadata(result, "imaging_studies"), metadata(result, "clinical_notes")
    assert studies["quarantine_reasons"] == {"truncated": 1, "not an image": 1}
    assert studies["quarantined"] == 2 and studies["received"] == studies["accepted"] + 2
    assert reports["quarantine_reasons"].get("xml") == 2
    assert studies["intake_report"]["profile"]["preambles_neutralised"] == {"pe": 1}
    # the batch went on: every other study of it was collected and reached processing
    assert result.success, failed(result)
    stored = clinic.stored_table("healthcare/imaging_studies")
    assert len(stored) == clinic.studies and all(not any(d[:128]) for d in stored["dicom"])
    quarantine = clinic.stored_table("healthcare/imaging_studies/quarantine", kind="quarantine")
    assert quarantine["raw"].str.startswith("dcm file of ").all()  # sizes and digests, never content
    # Nothing the sources sent, the polyglot included, stays where they deliver: it is archived encrypted.
    for window in ("reference", "inbox"):
        assert landed_files(clinic, window) == {}
    assert archived_batches(clinic) == originals


def test_a_diagnosis_label_mismatch_is_flagged_and_kept_out_of_training(clinic):
    clinic.reland(clinic.batch_files("clinical-notes")[0], flip_labels(0.0))
    result = collect(clinic)
    assert result.success, failed(result)
    reports = metadata(result, "clinical_notes")
    assert reports["quarantine_reasons"].get("label mismatch", 0) >= 1
    quarantine = clinic.stored_table("healthcare/clinical_notes/quarantine", kind="quarantine")
    assert quarantine["reason"].str.startswith("label mismatch: the report says").any()
    assert len(clinic.stored_table("healthcare/study_images")) == reports["accepted"]


def test_flipped_labels_stop_the_lifecycle_before_processing(clinic):
    for folder in clinic.batch_files("clinical-notes"):
        clinic.reland(folder, flip_labels(0.15))
    result = collect(clinic)
    assert failed(result).keys() >= {"clinical_notes:label_mismatches_within_baseline"}
    assert not {"study_images", "note_findings"} & materialized(result)


def test_forged_and_unsigned_batches_are_refused(clinic):
    batch = clinic.batch_files("dicom-studies")[0]
    files = {p.name: p.read_bytes() for p in sorted(batch.iterdir())[:3]}
    clinic.land(IMAGING_SOURCE, files, batch_id="imaging-archive-forged", signer=Ed25519PrivateKey.generate())
    labels = {"labels.csv": b"study_uid,label\n"}
    clinic.land(RECORDS_SOURCE, labels, batch_id="records-unsigned", signer=None)
    result = collect(clinic)
    assert not checks(result)["imaging_studies:batches_authenticated"]
    assert not checks(result)["clinical_notes:batches_authenticated"]
    assert not {"study_images", "note_findings"} & materialized(result)


def test_new_studies_whose_acquisition_metadata_drifted_do_not_reach_training(clinic):
    assert collect(clinic).success
    clinic.feedback(cycle=1)

    for folder in clinic.batch_files("dicom-studies", window="feedback"):
        clinic.reland(folder, scaled_spacing(1.6), window="feedback")  # a recalibrated scanner
    result = clinic.run("healthcare_feedback")
    assert not checks(result)["metadata_drift:drift_below_error"]
    drifted = metadata(result, "metadata_drift")
    assert drifted["level"] == "error"
    assert "training_set" not in materialized(result) and "feedback_images" not in materialized(result)


def test_preprocessing_altered_to_relabel_a_subgroup_refuses_to_publish(clinic, monkeypatch):
    clinic.baseline()
    monkeypatch.setattr(transforms, "prepare_images", relabelling_prepare_images)
    result = collect(clinic)
    assert {"imaging_studies", "clinical_notes", "note_findings"} <= materialized(result)
    assert "study_images" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure and "study_images" in e.step_key)
    assert "'prepare_images' is not approved" in str(failure.event_specific_data.error)
    assert clinic.ledger.latest("healthcare/study_images") is None  # nothing was published


def test_a_changed_byte_in_a_stored_study_table_is_caught_on_load_and_by_the_audit(clinic):
    assert clinic.run_selection(COLLECTED).success
    flip_a_byte(clinic, "healthcare/imaging_studies")

    result = clinic.run_selection(["healthcare/study_images"])
    assert "study_images" not in materialized(result)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "changed at rest" in str(failure.event_specific_data.error)
    audit = clinic.run("healthcare_audit")
    assert checks(audit)["integrity_audit:store_matches_ledger"] is False


def run_record(clinic: Clinic, result) -> bytes:
    """What a run left outside the store: every event's message and metadata, and the ledger's entries."""
    events = clinic.instance.all_logs(result.run_id)
    texts = [e.message or "" for e in events]
    texts += [str(e.dagster_event.event_specific_data) for e in events if e.dagster_event is not None]
    texts += [json.dumps(dataclasses.asdict(entry), default=str) for entry in clinic.ledger.entries()]
    return "\n".join(texts).encode("utf-8")


def test_a_varied_real_world_corpus_is_accounted_for_and_no_identifier_is_kept_anywhere(clinic):
    """Run with `delete` retention: nothing of what was landed is kept, not even encrypted."""
    kept = clinic.defs.resources["sources"]
    sources = SourceRegistry(name=kept.name, path=kept.path, landing=kept.landing, retention="delete")
    clinic.defs = healthcare.build_definitions(
        RuntimeHome(clinic.home), clinic.trust, diagnostic_settings=clinic.settings, sources=sources
    )
    corpus = varied_corpus(seed=11)  # a seed the corpus was not written against
    files = {f"{i:03d}-{f.name}": f.data for i, f in enumerate(corpus)}
    identifying = set()
    for file in corpus:
        if file.outcome in (ACCEPTED, "phi"):  # the malformed ones are copies of these studies
            identifying |= phi_values(pydicom.dcmread(io.BytesIO(file.data), stop_before_pixels=True))
    phi = original_phi(clinic) | {v for v in identifying if len(v) >= 4 and not v.isalpha()}
    clinic.land(IMAGING_SOURCE, files, batch_id="imaging-archive-real-world")

    result = collect(clinic)
    assert result.success, failed(result)
    studies = metadata(result, "imaging_studies")
    refused = Counter(f.outcome for f in corpus if f.outcome != ACCEPTED)
    assert studies["quarantine_reasons"] == dict(refused)  # no false "phi leak" on any clean file
    assert studies["received"] == clinic.studies + len(corpus) == studies["accepted"] + studies["quarantined"]
    assert landed_files(clinic) == {} and list(clinic.ledger.entries(kind="landed-batch")) == []
    batches = clinic.ledger.entries(kind="batch")
    this_run = [e for e in batches if e.run_id == result.run_id and e.subject.endswith("dicom-studies")]
    assert studies["landing_retention"] == "delete" and studies["batches_retired"] == len(this_run) > 1

    phi -= shifted_dates_anywhere(clinic)
    stored = stored_plaintexts(clinic) | {"run events, metadata and ledger": run_record(clinic, result)}
    leaks = {path: found_phi(phi, data) for path, data in stored.items()}
    assert not {path: found for path, found in leaks.items() if found}
