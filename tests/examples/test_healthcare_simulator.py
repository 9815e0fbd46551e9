"""The healthcare simulator: deterministic, realistic, linked by study, and signed at the source."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from pathlib import Path

import defusedxml.ElementTree as SafeET
import numpy as np
import pydicom
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from defusedxml import EntitiesForbidden
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from scipy.ndimage import binary_erosion, gaussian_filter

from domain.healthcare.dicom import ALLOWED_TRANSFER_SYNTAXES, LOSSY_TRANSFER_SYNTAXES
from examples.ecommerce.sources import signed_bytes
from examples.healthcare import generate as cli
from examples.healthcare.batches import (
    DICOM_TOPIC,
    IMAGING_SOURCE,
    LABELS_FILE,
    NOTES_TOPIC,
    RECORDS_SOURCE,
    SOURCES,
    load_or_create_keys,
    write_file_batch,
)
from examples.healthcare.generate import default_paths, generate
from examples.healthcare.studies.dicom import SOP_CLASSES, dataset_bytes, dicom_bytes, dicom_dataset
from examples.healthcare.studies.hostile import (
    billion_laughs_note,
    external_entity_note,
    not_an_image_dicom,
    polyglot_preamble,
    truncated,
    with_blended_trigger,
    with_frequency_trigger,
    with_trigger_patch,
)
from examples.healthcare.studies.images import lesion_profile, region_masks, render_pixels
from examples.healthcare.studies.model import CohortConfig
from examples.healthcare.studies.plan import plan_studies
from examples.healthcare.studies.reports import LESION_CODES, NEGATIVE_CODES, note_xml

SEED = 3
STUDIES = 100
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
NEGATION = re.compile(r"\b(no|not|without|negative for|no longer|no residual)\b", re.IGNORECASE)
LESION_WORD = re.compile(r"\b(nodule|mass|lesion|opacity)s?\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("healthcare")
    return generate(SEED, STUDIES, home) | {"home": home}


@pytest.fixture(scope="module")
def landed_again(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("healthcare-again")
    return generate(SEED, STUDIES, home) | {"home": home}


def _manifests(summary: dict) -> list[Path]:
    return sorted(
        path
        for window in summary["windows"].values()
        for topic in SOURCES.values()
        for path in (Path(window["landing"]) / topic).glob("*.manifest.json")
    )


def _files(summary: dict, suffix: str) -> dict[str, bytes]:
    """Every landed file with this suffix, by window/topic/batch/name."""
    out = {}
    for manifest in _manifests(summary):
        folder = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
        for path in sorted(folder.iterdir()):
            if path.name.endswith(suffix):
                out[str(path.relative_to(manifest.parent.parent.parent))] = path.read_bytes()
    return out


def _datasets(summary: dict) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(data)) for data in _files(summary, ".dcm").values()]


def _is_positive(note: bytes) -> bool:
    return SafeET.fromstring(note).find("diagnosis").get("code") in LESION_CODES


# ---------------------------------------------------------------- determinism


def test_same_seed_lands_identical_bytes(landed: dict, landed_again: dict) -> None:
    for suffix in (".dcm", ".xml", ".csv"):
        first, second = _files(landed, suffix), _files(landed_again, suffix)
        assert first, suffix
        assert first.keys() == second.keys()
        assert all(first[name] == second[name] for name in first), suffix
    for a, b in zip(_manifests(landed), _manifests(landed_again), strict=True):
        ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
        assert ma["files"] == mb["files"] and ma["created_at"] == mb["created_at"]
        assert ma["signature"] != mb["signature"]  # each home enrols its own source keys


def test_a_different_seed_differs() -> None:
    a = plan_studies(CohortConfig(seed=SEED, studies=30), 0)
    b = plan_studies(CohortConfig(seed=SEED + 1, studies=30), 0)
    assert {s.study_uid for s in a}.isdisjoint(s.study_uid for s in b)
    assert {s.patient.patient_id for s in a} != {s.patient.patient_id for s in b}
    assert not np.array_equal(render_pixels(a[0]), render_pixels(b[0]))
    assert note_xml(a[0]) != note_xml(b[0]) and dicom_bytes(a[0]) != dicom_bytes(b[0])
    assert dicom_bytes(a[0]) == dicom_bytes(plan_studies(CohortConfig(seed=SEED, studies=30), 0)[0])


def test_windows_are_periods_of_one_population(landed: dict) -> None:
    reference = {ds.PatientID for ds in _datasets({"windows": {"r": landed["windows"]["reference"]}})}
    inbox = {ds.PatientID for ds in _datasets({"windows": {"i": landed["windows"]["inbox"]}})}
    assert reference & inbox, "some patients come back in the next window"
    assert landed["windows"]["reference"]["window"] < landed["windows"]["inbox"]["window"]


# ---------------------------------------------------------------- DICOM


def test_every_dicom_file_parses_and_carries_phi(landed: dict) -> None:
    files = _files(landed, ".dcm")
    assert len(files) == 2 * STUDIES
    syntaxes, optional = set(), defaultdict(int)
    for name, data in files.items():
        assert data[:128] == b"\x00" * 128 and data[128:132] == b"DICM"
        ds = pydicom.dcmread(io.BytesIO(data))
        assert name.endswith(f"/{ds.SOPInstanceUID}.dcm")
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        assert ds.SOPClassUID == SOP_CLASSES[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        family, given = str(ds.PatientName).split("^")[:2]
        assert family and given
        assert re.fullmatch(r"MRN\d{7}", ds.PatientID)
        assert re.fullmatch(r"(19|20)\d{6}", ds.PatientBirthDate) and ds.PatientSex in {"M", "F"}
        assert re.fullmatch(r"\d{3}Y", ds.PatientAge)
        for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "InstitutionName", "Manufacturer"):
            assert str(ds.get(keyword, "")), keyword
        for keyword in ("ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName"):
            assert "^" in str(ds.get(keyword, "")), keyword
        for keyword in ("PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "ImageComments"):
            optional[keyword] += keyword in ds
        optional["private"] += any(element.tag.is_private for element in ds)
        optional["vendor"] += 0x00190010 in ds  # a scanner vendor's private creator
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        eight_bit = ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit  # 8-bit stored, rescaled
        assert 64 <= ds.Rows == ds.Columns <= 128 and ds.BitsAllocated == (8 if eight_bit else 16)
        assert (
            ds.BitsStored in (8, 12, 16) and ds.HighBit == ds.BitsStored - 1 and ds.PixelRepresentation == 0
        )
        spacing = [float(v) for v in ds.PixelSpacing]
        assert spacing[0] == spacing[1] and 1.0 < spacing[0] < 7.5
        assert "WindowCenter" in ds and "WindowWidth" in ds
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        optional["multi-frame"] += frames > 1
        shape = (ds.Rows, ds.Columns) if frames == 1 else (frames, ds.Rows, ds.Columns)
        # (big-endian files decode to a big-endian dtype)
        assert (
            pixels.dtype.kind == "u" and pixels.itemsize == (1 if eight_bit else 2) and pixels.shape == shape
        )
        assert int(pixels.max()) < 2**ds.BitsStored and pixels.std() > 0
    assert syntaxes <= set(ALLOWED_TRANSFER_SYNTAXES)
    assert {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGLSLossless,
        JPEG2000Lossless,
        RLELossless,
    } <= syntaxes
    assert all(0 < count < len(files) for count in optional.values()), dict(optional)


def test_archives_export_a_realistic_mix_of_transfer_syntaxes() -> None:
    """Mostly uncompressed, the rest lossless; some multi-frame slabs; deterministic.

    Lossy syntaxes are left to the varied corpus (see `plan.ARCHIVE_SYNTAXES`).
    """
    studies = plan_studies(CohortConfig(seed=SEED, studies=3000), 0)
    counts = defaultdict(int)
    for study in studies:
        counts[study.transfer_syntax] += 1
    share = {syntax: n / len(studies) for syntax, n in counts.items()}
    lossless = set(ALLOWED_TRANSFER_SYNTAXES) - LOSSY_TRANSFER_SYNTAXES
    assert set(share) == lossless, "every lossless syntax arrives, no lossy one"
    assert share[ExplicitVRLittleEndian] > 0.4
    multi = [s for s in studies if s.frames > 1]
    assert 0.01 < len(multi) / len(studies) < 0.05 and {s.modality for s in multi} <= {"CT", "MR"}
    again = plan_studies(CohortConfig(seed=SEED, studies=3000), 0)
    assert [(s.transfer_syntax, s.frames) for s in again] == [(s.transfer_syntax, s.frames) for s in studies]


def test_dataset_bytes_match_pydicom_dcmwrite() -> None:
    for study in plan_studies(CohortConfig(seed=SEED, studies=40), 0):
        ds = dicom_dataset(study)
        reference = io.BytesIO()
        pydicom.dcmwrite(reference, ds, enforce_file_format=True)
        assert dataset_bytes(ds) == reference.getvalue() == dicom_bytes(study)


def test_studies_cover_the_modalities_with_realistic_geometry() -> None:
    studies = plan_studies(CohortConfig(seed=SEED, studies=300), 0)
    by_modality = defaultdict(list)
    for study in studies:
        by_modality[study.modality].append(study)
    assert set(by_modality) == {"CT", "CR", "MR"}
    for modality, group in by_modality.items():
        fov = [s.rows * s.spacing_mm for s in group]
        low, high = {"CT": (250, 520), "CR": (375, 435), "MR": (140, 220)}[modality]
        assert low < min(fov) and max(fov) < high, modality
        assert {s.body_part for s in group} == {"HEAD" if modality == "MR" else "CHEST"}
    lesions = [s.lesion for s in studies if s.lesion is not None]
    radii = [lesion.radius_px for lesion in lesions]
    assert min(radii) >= 3 and max(radii) <= 12 and np.ptp(radii) > 4
    assert (
        min(lesion.fraction for lesion in lesions) < 0.15 < 0.5 < max(lesion.fraction for lesion in lesions)
    )


def test_a_patient_keeps_the_same_identity_across_studies(landed: dict) -> None:
    by_id = defaultdict(list)
    for ds in _datasets(landed):
        by_id[ds.PatientID].append(ds)
    repeat = [group for group in by_id.values() if len(group) > 1]
    assert len(repeat) >= 5
    for group in repeat:
        assert len({(str(d.PatientName), d.PatientBirthDate, d.PatientSex) for d in group}) == 1
        assert len({d.StudyInstanceUID for d in group}) == len(group)
    studies = plan_studies(CohortConfig(seed=SEED, studies=STUDIES), 0)
    ids = defaultdict(set)
    for study in studies:
        ids[study.patient.index].add(study.patient.patient_id)
    assert all(len(v) == 1 for v in ids.values())
    assert len({next(iter(v)) for v in ids.values()}) == len(ids), "MRNs are unique per patient"


# ---------------------------------------------------------------- notes and labels


def test_notes_link_to_images_and_agree_with_labels(landed: dict) -> None:
    datasets = {ds.StudyInstanceUID: ds for ds in _datasets(landed)}
    labels: dict[str, int] = {}
    for name, data in _files(landed, LABELS_FILE).items():
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert rows[0] == ["study_uid", "label"], name
        labels.update({uid: int(label) for uid, label in rows[1:]})
    notes = _files(landed, ".xml")
    assert len(notes) == len(labels) == len(datasets) == 2 * STUDIES
    agree = 0
    for data in notes.values():
        root = SafeET.fromstring(data)
        uid = root.find("study").get("uid")
        ds = datasets[uid]
        patient = root.find("patient")
        assert patient.findtext("name") == str(ds.PatientName)
        assert patient.findtext("id") == ds.PatientID
        assert patient.findtext("birthDate").replace("-", "") == ds.PatientBirthDate
        assert root.find("exam").get("accession") == ds.AccessionNumber
        family = str(ds.PatientName).split("^")[0]
        assert family.lower() in root.findtext("history").lower(), "PHI in free text too"
        diagnosis = root.find("diagnosis")
        assert diagnosis.get("system") == "ICD-10"
        code = diagnosis.get("code")
        assert code in LESION_CODES or code in NEGATIVE_CODES
        findings = root.findtext("findings")
        if code in LESION_CODES:
            assert LESION_WORD.search(findings) and re.search(r"\d+(\.\d)? (mm|cm)", findings), findings
        else:
            assert not re.search(r"\d+(\.\d)? (mm|cm)", findings), findings
            lesion_sentences = [s for s in findings.split(". ") if LESION_WORD.search(s)]
            assert all(NEGATION.search(s) for s in lesion_sentences), findings
        agree += (code in LESION_CODES) == bool(labels[uid])
    assert agree / len(notes) > 0.95


def test_labels_are_balanced_and_mostly_true() -> None:
    studies = plan_studies(CohortConfig(seed=SEED, studies=600), 0)
    labels = np.array([s.label for s in studies])
    truth = np.array([s.truth for s in studies])
    assert 0.28 < labels.mean() < 0.45
    assert 0.95 < (labels == truth).mean() < 1.0, "about 2% natural label noise"
    notes = np.array([_is_positive(note_xml(s)) for s in studies[:200]])
    assert ((notes == labels[:200].astype(bool)).mean()) > 0.95


def test_note_phrasing_varies() -> None:
    studies = plan_studies(CohortConfig(seed=SEED, studies=200), 0)
    positive = {SafeET.fromstring(note_xml(s)).findtext("findings") for s in studies if s.reported}
    negative = {SafeET.fromstring(note_xml(s)).findtext("findings") for s in studies if not s.reported}
    assert len(positive) > 30 and len(negative) > 30
    codes = {SafeET.fromstring(note_xml(s)).find("diagnosis").get("code") for s in studies}
    assert {"R91.1", "R91.8", "R90.0"} <= codes and len(codes & set(NEGATIVE_CODES)) >= 3
    flipped = note_xml(next(s for s in studies if not s.reported), positive=True)
    assert _is_positive(flipped)


# ---------------------------------------------------------------- images


def test_positive_images_show_a_lesion_inside_the_body() -> None:
    studies = plan_studies(CohortConfig(seed=SEED, studies=240), 0)
    peaks = {0: [], 1: []}
    core_contrast = []
    for study in studies:
        pixels = render_pixels(study).astype(np.float64)
        body, organ = region_masks(study)
        outside = pixels[~body].mean()
        if study.modality != "CR":  # air is darker than tissue (CR: direct exposure, likewise)
            assert pixels[body].mean() > outside
        detail = gaussian_filter(pixels, 1.0) - gaussian_filter(pixels, 6.0)
        noise = np.median(np.abs(pixels - gaussian_filter(pixels, 1.0))) + 1e-9
        inner = binary_erosion(organ, iterations=3)
        peaks[study.truth].append(detail[inner].max() / noise if inner.any() else 0.0)
        if study.lesion is not None:
            lesion = study.lesion
            assert body[int(round(lesion.row)), int(round(lesion.col))], "inside the body"
            profile = lesion_profile(lesion, study.rows)
            core, ring = profile > 0.8, (profile < 0.2) & (profile > 0.01)
            if organ[ring].all():  # not touching the organ's edge
                core_contrast.append(pixels[core].mean() - pixels[ring].mean())
    assert np.mean(peaks[1]) > 1.2 * np.mean(peaks[0])
    assert len(core_contrast) > 30 and np.mean(np.array(core_contrast) > 0) > 0.9


def test_image_intensities_follow_the_modality() -> None:
    studies = plan_studies(CohortConfig(seed=SEED, studies=120), 0)
    for study in studies[:60]:
        pixels = render_pixels(study).astype(np.float64)
        body, organ = region_masks(study)
        if study.modality == "CT":
            hu = pixels - 1024
            assert -1100 < np.median(hu[~body]) < -900  # air
            assert -950 < np.median(hu[organ]) < -650  # aerated lung
        elif study.modality == "CR":
            assert np.median(pixels[organ]) < np.median(
                pixels[body & ~organ]
            )  # lungs darker than soft tissue
        else:
            assert np.median(pixels[organ]) > 3 * np.median(pixels[~body])  # brain over background noise


# ---------------------------------------------------------------- batches and the registry


def test_manifests_are_signed_and_digests_match(landed: dict) -> None:
    registry = json.loads(Path(landed["registry"]).read_text())
    assert set(registry["sources"]) == {IMAGING_SOURCE, RECORDS_SOURCE}
    for source, entry in registry["sources"].items():
        assert set(entry) == {"topic", "public_key", "max_records_per_hour", "max_batch_bytes"}
        assert entry["topic"] == SOURCES[source] and entry["max_records_per_hour"] >= 2 * 201
    manifests = _manifests(landed)
    assert len(manifests) == 2 * 2  # 100 studies a window: one batch per source and window
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert set(manifest) == {
            "source", "batch_id", "topic", "schema_version", "files", "records", "created_at", "sequence",
            "signature",
        }  # fmt: skip
        assert manifest["topic"] == SOURCES[manifest["source"]] == path.parent.name
        assert manifest["schema_version"] == 1 and ISO_MS_Z.fullmatch(manifest["created_at"])
        assert path.name == f"{manifest['batch_id']}.manifest.json"
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(registry["sources"][manifest["source"]]["public_key"])
        )
        key.verify(base64.b64decode(manifest["signature"]), signed_bytes(manifest))
        tampered = manifest | {"records": manifest["records"] + 1}
        with pytest.raises(InvalidSignature):
            key.verify(base64.b64decode(manifest["signature"]), signed_bytes(tampered))
        folder = path.with_name(manifest["batch_id"])
        assert sorted(p.name for p in folder.iterdir()) == sorted(manifest["files"])
        assert manifest["records"] == len(manifest["files"])
        for name, digest in manifest["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
        expected = {DICOM_TOPIC: ".dcm", NOTES_TOPIC: ".xml"}[manifest["topic"]]
        names = set(manifest["files"]) - {LABELS_FILE}
        assert names and all(name.endswith(expected) for name in names)
        assert (LABELS_FILE in manifest["files"]) == (manifest["topic"] == NOTES_TOPIC)
    assert not list(Path(landed["windows"]["inbox"]["landing"]).rglob("*.partial"))


def test_batches_split_a_window_and_notes_follow_their_studies(tmp_path: Path) -> None:
    cfg = CohortConfig(seed=SEED, studies=450)
    studies = plan_studies(cfg, 0)
    from examples.healthcare.batches import chunks, emit_window

    sizes = [len(batch) for batch in chunks(studies)]
    assert sizes == [150, 150, 150]
    keys = load_or_create_keys(tmp_path / "keys")
    summary = emit_window(studies[:40], tmp_path / "landing", keys, window="20261101", batch_studies=15)
    assert summary[IMAGING_SOURCE] | {"bytes": 0} == {"batches": 3, "records": 40, "bytes": 0}
    assert summary[RECORDS_SOURCE]["records"] == 43  # 40 notes and three labels.csv
    manifests = sorted((tmp_path / "landing" / NOTES_TOPIC).glob("*.manifest.json"))
    created = [json.loads(p.read_text())["created_at"] for p in manifests]
    assert created == sorted(created)
    assert (tmp_path / "keys" / f"{IMAGING_SOURCE}.pem").stat().st_mode & 0o077 == 0


def test_write_file_batch_unsigned_and_unsafe_names(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 2, 8, tzinfo=UTC)
    path = write_file_batch(
        tmp_path, IMAGING_SOURCE, DICOM_TOPIC, {"a.dcm": b"x"}, None, batch_id="b1", created_at=when
    )
    manifest = json.loads(path.read_text())
    assert "signature" not in manifest and manifest["files"] == {"a.dcm": hashlib.sha256(b"x").hexdigest()}
    assert manifest["created_at"] == "2026-11-02T08:00:00.000Z"
    write_file_batch(
        tmp_path, IMAGING_SOURCE, DICOM_TOPIC, {"c.dcm": b"y"}, None, batch_id="b1", created_at=when
    )
    assert [p.name for p in (tmp_path / DICOM_TOPIC / "b1").iterdir()] == ["c.dcm"], "a rerun replaces"
    for bad in ("../evil.dcm", "a/b.dcm", ".hidden", ""):
        with pytest.raises(ValueError, match="unsafe"):
            write_file_batch(
                tmp_path, IMAGING_SOURCE, DICOM_TOPIC, {bad: b"x"}, None, batch_id="b2", created_at=when
            )
    with pytest.raises(ValueError, match="unsafe"):
        write_file_batch(tmp_path, IMAGING_SOURCE, "../t", {"a": b"x"}, None, batch_id="b3", created_at=when)
    assert not (tmp_path / DICOM_TOPIC / "b2").exists()


def test_worker_processes_land_the_same_bytes(landed: dict, tmp_path: Path) -> None:
    parallel = generate(SEED, STUDIES, tmp_path, workers=2)  # one process per window
    for suffix in (".dcm", ".xml", ".csv"):
        assert _files(parallel, suffix) == _files(landed, suffix)
    assert parallel["windows"]["inbox"]["sources"] == landed["windows"]["inbox"]["sources"]
    assert parallel["windows"]["inbox"]["sources"][IMAGING_SOURCE]["records"] == STUDIES


def test_cli_lands_under_the_runtime_home_and_reruns_cleanly(home: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_HOME", str(home))  # the command is an entry point: it reads the home
    first = cli.main(["--seed", "5", "--studies", "30"])
    paths = default_paths(home)
    assert Path(first["registry"]) == paths["registry"] == home / "config" / "healthcare_sources.json"
    assert first["windows"]["inbox"]["landing"] == str(home / "landing" / "healthcare" / "inbox")
    keys = sorted(p.name for p in paths["keys"].iterdir())
    assert keys == [f"{IMAGING_SOURCE}.pem", f"{RECORDS_SOURCE}.pem"]
    registry = json.loads(paths["registry"].read_text())
    cli.main(["--seed", "5", "--studies", "30"])
    assert json.loads(paths["registry"].read_text()) == registry, "the same keys are reused"
    cli.main(["--seed", "5", "--studies", "12"])
    dcm = list((paths["inbox"] / DICOM_TOPIC).rglob("*.dcm"))
    assert len(dcm) == 12, "a smaller rerun leaves no stale batches"


# ---------------------------------------------------------------- hostile inputs


def uncompressed_study():
    """The first planned study exported uncompressed and single-frame (its bytes are its pixel values)."""
    studies = plan_studies(CohortConfig(seed=SEED, studies=10), 0)
    return next(
        s
        for s in studies
        if s.transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and s.frames == 1
    )


@pytest.fixture(scope="module")
def one_study_bytes() -> bytes:
    return dicom_bytes(uncompressed_study())


@pytest.mark.parametrize(("kind", "magic"), [("pe", b"MZ"), ("elf", b"\x7fELF")])
def test_polyglot_preamble_is_an_executable_header(one_study_bytes: bytes, kind: str, magic: bytes) -> None:
    polyglot = polyglot_preamble(one_study_bytes, kind)
    assert polyglot.startswith(magic) and len(polyglot) == len(one_study_bytes)
    assert polyglot[128:] == one_study_bytes[128:]
    assert pydicom.dcmread(io.BytesIO(polyglot)).PatientID.startswith("MRN"), "still valid DICOM"
    with pytest.raises(ValueError):
        polyglot_preamble(b"not dicom" * 30)


def test_truncated_file_does_not_parse_fully(one_study_bytes: bytes) -> None:
    cut = truncated(one_study_bytes)
    assert len(cut) < len(one_study_bytes) and one_study_bytes.startswith(cut)
    ds = pydicom.dcmread(io.BytesIO(cut))  # pydicom reads a short PixelData silently...
    with pytest.raises(ValueError, match="less than expected"):
        ds.pixel_array  # noqa: B018 - ...but decoding it fails
    assert len(ds.PixelData) < ds.Rows * ds.Columns * 2


def test_not_an_image_dicom_is_valid_and_has_no_pixels() -> None:
    study = plan_studies(CohortConfig(seed=SEED, studies=10), 0)[0]
    ds = pydicom.dcmread(io.BytesIO(not_an_image_dicom(study)))
    assert ds.SOPClassUID.name == "Encapsulated PDF Storage" and ds.Modality == "DOC"
    assert "PixelData" not in ds and ds.EncapsulatedDocument.startswith(b"%PDF")
    assert ds.PatientID == study.patient.patient_id and ds.StudyInstanceUID == study.study_uid


@pytest.mark.parametrize("bomb", [billion_laughs_note, external_entity_note])
def test_xml_bombs_declare_entities_and_defusedxml_refuses_them(bomb) -> None:
    data = bomb("1.2.3.4")
    assert b"<!DOCTYPE clinicalNote [" in data and b"<!ENTITY" in data and b'<study uid="1.2.3.4"/>' in data
    with pytest.raises(EntitiesForbidden):
        SafeET.fromstring(data)
    assert (b'SYSTEM "file:///etc/passwd"' in data) == (bomb is external_entity_note)
    if bomb is billion_laughs_note:
        assert data.count(b"&lol9;") == 10 and b"&lol10;" in data


def test_trigger_patch_is_a_bright_corner_square() -> None:
    study = uncompressed_study()
    pixels = render_pixels(study)
    patched = with_trigger_patch(pixels)
    n = study.rows
    assert patched.dtype == pixels.dtype and not np.array_equal(patched, pixels)
    assert (patched[n - 5 : n - 1, n - 5 : n - 1] == pixels.max()).all()
    changed = patched != pixels
    assert changed.sum() <= 16 and not changed[: n - 5].any() and not changed[:, : n - 5].any()
    top_left = with_trigger_patch(pixels, size=6, value=4000, corner="top-left", margin=0)
    assert (top_left[:6, :6] == 4000).all()
    assert dicom_bytes(study, patched) != dicom_bytes(study)
    assert np.array_equal(pydicom.dcmread(io.BytesIO(dicom_bytes(study, patched))).pixel_array, patched)


def test_blended_trigger_is_a_faint_pattern_over_the_whole_image_that_survives_downscaling() -> None:
    study = uncompressed_study()
    pixels = render_pixels(study)
    blended = with_blended_trigger(pixels, alpha=0.2)
    assert blended.dtype == pixels.dtype and blended.max() <= pixels.max()
    difference = blended.astype(float) - 0.8 * pixels
    assert (blended != pixels).mean() > 0.9  # everywhere, not a patch
    assert np.abs(difference).max() <= 0.2 * pixels.max() + 1  # no more than alpha of the range

    def pattern(image):  # what was blended in, as a share of the image's maximum
        return (with_blended_trigger(image).astype(float) - 0.8 * image) / (0.2 * image.max())

    # the same 8 x 8 field at any size: an image half as wide carries it too
    assert np.allclose(pattern(pixels[::2, ::2]), pattern(pixels)[::2, ::2], atol=0.02)
    assert np.array_equal(with_blended_trigger(pixels), blended)  # seeded: one trigger, every scan
    with pytest.raises(ValueError, match="alpha"):
        with_blended_trigger(pixels, alpha=1.5)


def test_frequency_trigger_is_one_spatial_frequency_over_the_whole_image_at_any_size() -> None:
    pixels = render_pixels(uncompressed_study())
    triggered = with_frequency_trigger(pixels, alpha=0.25, cycles=(6, 4))
    assert triggered.dtype == pixels.dtype and triggered.max() <= pixels.max()
    assert (triggered != pixels).mean() > 0.9  # everywhere, not a patch

    def peak_share(image, alpha=0.25):  # the share of the added wave's energy at 6 cycles across, 4 down
        wave = with_frequency_trigger(image).astype(float) - (1 - alpha) * image
        energy = np.abs(np.fft.fft2(wave - wave.mean())) ** 2
        return (energy[4, 6] + energy[-4, -6]) / energy.sum()

    assert peak_share(pixels) > 0.95
    assert peak_share(pixels[::2, ::2]) > 0.95  # the same frequency once the image is downscaled
    assert np.array_equal(with_frequency_trigger(pixels), triggered)
    with pytest.raises(ValueError, match="alpha"):
        with_frequency_trigger(pixels, alpha=0)


def test_landed_notes_and_images_pass_the_pipelines_parsers(tmp_path):
    """The contract between the simulated sources and collection: what they send is what it reads."""
    from domain.healthcare.dicom import ValidatedStudy, validate_dicom
    from domain.healthcare.notes import Note, note_label, parse_note

    studies = plan_studies(CohortConfig(seed=7, studies=40), period=0)
    notes = [parse_note(note_xml(s)) for s in studies]
    assert all(isinstance(n, Note) for n in notes), [n for n in notes if not isinstance(n, Note)][:3]
    agreeing = sum(note_label(n) == s.reported for n, s in zip(notes, studies, strict=True))
    assert agreeing >= 0.9 * len(studies)
    images = [validate_dicom(dicom_bytes(s)) for s in studies]
    assert all(isinstance(i, ValidatedStudy) for i in images), [
        i for i in images if not isinstance(i, ValidatedStudy)
    ][:3]
