"""The studies of one period: who is imaged when, on which scanner, what it shows and what is reported.

`plan_studies` draws each period's studies from the fixed population in
acquisition order: the modality, hospital and scanner, the image geometry and
anatomy, whether a lesion shows (and how subtle it is), what the radiologist
reports (rarely missing a subtle lesion or overcalling a normal study) and
the label the records system codes, with rare coding errors of its own, plus
the deterministic DICOM UIDs and the staff involved.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from examples.healthcare.studies.dicom import UID_ROOT
from examples.healthcare.studies.model import (
    CohortConfig,
    Device,
    Ellipse,
    Finding,
    Lesion,
    Patient,
    Study,
    random_stream,
)
from examples.healthcare.studies.population import INSTITUTION_SHARE, build_patients

# Rates of the natural errors of the clinical process (ground truth is `Study.lesion`).
MISS_RATE_SUBTLE = 0.12  # a lesion with relative contrast below SUBTLE_FRACTION is missed this often
MISS_RATE = 0.01  # any other lesion
SUBTLE_FRACTION = 0.15
OVERCALL_RATE = 0.008  # a normal study reported as a lesion
CODING_ERROR_RATE = 0.006  # labels.csv disagrees with the report

# Lesion contrast: the organ's contrast with soft tissue (HU for CT, detector units for CR,
# FLAIR signal of the brain for MR), and the median fraction of it a lesion shows.
TISSUE_CONTRAST = {"CT": 900.0, "CR": 1250.0, "MR": 520.0}
LESION_FRACTION = {"CT": 0.36, "CR": 0.27, "MR": 0.36}

# fmt: off
# institution, modality, manufacturer, model, station, serial, software, bits stored, scale, implicit VR
_DEVICE_TABLE = (
    (0, "CT", "SIEMENS", "SOMATOM Definition AS", "RGHCT01", "64512", "syngo CT VA48A", 12, 1, False),
    (1, "CT", "GE MEDICAL SYSTEMS", "Revolution CT", "SCMCCT1", "RCT3301", "rev_ct.21", 16, 1, False),
    (2, "CT", "Canon Medical Systems", "Aquilion Prime SP", "LCHCT", "2AB1811", "V10.8", 12, 1, False),
    (0, "CR", "FUJIFILM Corporation", "FCR PROFECT CS", "RGHCR02", "37018", "A08", 12, 1, False),
    (1, "CR", "Carestream Health", "DirectView CR 975", "SCMCXR", "CR975-118", "5.7", 12, 1, False),
    (2, "CR", "Agfa", "CR 30-X", "LCHXR1", "1304", "NX 3.0", 12, 1, True),
    (0, "MR", "SIEMENS", "MAGNETOM Skyra", "RGHMR01", "45120", "syngo MR E11", 16, 1, False),
    (1, "MR", "GE MEDICAL SYSTEMS", "SIGNA Premier", "SCMCMR3", "MR7720", "29.1", 16, 4, False),
    (2, "MR", "Philips", "Ingenia", "LCHMR", "42311", "5.7.1", 16, 2.5, False),
)
# fmt: on
DEVICES = {(row[0], row[1]): Device(*row[1:]) for row in _DEVICE_TABLE}
RANDOM_IMPLICIT_VR = 0.03  # share of other exports that still arrive Implicit VR (archive re-sends)

# What each hospital's archive sends instead of Explicit VR Little Endian, by share of its
# (non-implicit) exports: lossless compression only. Lossy files (JPEG baseline and extended,
# JPEG-LS near-lossless, JPEG 2000) are in the varied corpus (`corpus.py`) and decoded by the
# same intake, but not in the simulated windows: the small worlds' CNN is sensitive enough that
# the 1.4% of lossy images a realistic mix brought (errors under 2% of the window) moved the
# 900-study world's AUC from 0.89 to 0.69, and the lifecycle tests would measure that, not the pipeline.
ARCHIVE_SYNTAXES: dict[int, tuple[tuple[str, float], ...]] = {
    0: (
        (JPEGLSLossless, 0.22),
        (JPEGLosslessSV1, 0.08),
        (RLELossless, 0.04),
        (DeflatedExplicitVRLittleEndian, 0.02),
    ),
    1: (
        (JPEG2000Lossless, 0.25),
        (JPEGLossless, 0.05),
        (RLELossless, 0.04),
        (ExplicitVRBigEndian, 0.03),
    ),
    2: (
        (RLELossless, 0.12),
        (JPEGLosslessSV1, 0.1),
        (DeflatedExplicitVRLittleEndian, 0.02),
        (ExplicitVRBigEndian, 0.02),
    ),
}
MULTI_FRAME_SHARE = 0.04  # CT and MR studies exported as a short multi-frame slab
SLAB_FRAMES = (3, 5)

# fmt: off
REFERRING = (
    "WHITMORE^ALAN^^DR", "OKONKWO^CHIDI^^DR", "BERGSTROM^LENA^^DR", "PATEL^ANIL^^DR", "DUBOIS^CLAIRE^^DR",
    "HARTMAN^GREGORY^^DR", "SATO^YUKI^^DR", "MORALES^ISABEL^^DR", "FISCHER^KARL^^DR", "NAKAMURA^KEN^^DR",
    "O'CONNOR^SIOBHAN^^DR", "ADEYEMI^TUNDE^^DR",
)
RADIOLOGISTS = (
    "LINDQVIST^ERIK^^DR", "HOLLOWAY^MARGARET^^DR", "RAMANATHAN^SURESH^^DR", "CASTILLO^ELENA^^DR",
    "BRENNAN^PATRICK^^DR", "YAMAMOTO^AIKO^^DR",
)
TECHNOLOGISTS = (
    "KOWALCZYK^ANNA", "BROOKS^TYLER", "NGUYEN^LINH", "FOSTER^DANA", "REYES^MARCO", "SINGH^HARPREET",
    "LARSEN^NILS", "EVANS^KAYLA",
)
CHEST_INDICATIONS = (
    "chronic cough", "shortness of breath", "follow-up of a pulmonary nodule", "smoking history, screening",
    "hemoptysis", "chest pain", "weight loss", "abnormal chest radiograph",
)
NEURO_INDICATIONS = (
    "headache", "dizziness", "new-onset seizure", "memory loss", "visual disturbance",
    "follow-up of a brain lesion", "numbness of the left arm", "confusion",
)
# fmt: on


def plan_studies(cfg: CohortConfig, period: int) -> list[Study]:
    """The `cfg.studies` studies of `period`, in order of acquisition time."""
    patients = build_patients(cfg)
    rng = random_stream(cfg.seed, cfg.studies, "plan", period)
    weights = np.array([p.visit_weight for p in patients])
    chosen = rng.choice(len(patients), size=cfg.studies, p=weights / weights.sum())
    day = rng.integers(0, cfg.days, cfg.studies)
    hour = np.where(
        rng.random(cfg.studies) < 0.85,
        np.clip(rng.normal(12.5, 3.0, cfg.studies), 7, 19.5),
        rng.uniform(0, 24, cfg.studies),
    )
    neuro = np.array([patients[int(i)].indication == "neuro" for i in chosen], dtype=bool)
    hour = np.where(neuro, np.clip(hour, 7, 19.5), hour)  # brain MR runs in the daytime only
    start = cfg.window_start(period)
    times = [start + timedelta(days=int(d), seconds=int(h * 3600)) for d, h in zip(day, hour, strict=True)]
    order = sorted(range(cfg.studies), key=lambda i: (times[i], i))
    last_seen: dict[int, date] = {}
    daily: dict[date, int] = {}
    studies = []
    for index, slot in enumerate(order):
        patient = patients[int(chosen[slot])]
        moment = times[slot]
        daily[moment.date()] = daily.get(moment.date(), 0) + 1
        study = _plan_study(
            cfg, period, index, patient, moment, daily[moment.date()], last_seen.get(patient.index)
        )
        last_seen[patient.index] = moment.date()
        studies.append(study)
    return studies


def _plan_study(
    cfg: CohortConfig,
    period: int,
    index: int,
    patient: Patient,
    moment: datetime,
    seq: int,
    prior: date | None,
) -> Study:
    rng = random_stream(cfg.seed, cfg.studies, "study", period, index)
    if patient.indication == "chest":
        modality = "CT" if rng.random() < 0.55 else "CR"
    else:
        modality = "MR"
    institution = patient.institution if rng.random() < 0.85 else int(rng.choice(3, p=INSTITUTION_SHARE))
    device = DEVICES[(institution, modality)]
    implicit = device.implicit_vr or rng.random() < RANDOM_IMPLICIT_VR
    rows = int(
        rng.choice(
            [64, 80, 96, 112, 128],
            p={
                "CT": [0.1, 0.1, 0.2, 0.2, 0.4],
                "CR": [0.1, 0.1, 0.2, 0.2, 0.4],
                "MR": [0.2, 0.2, 0.3, 0.1, 0.2],
            }[modality],
        )
    )
    half_w = patient.half_width_mm * rng.normal(1, 0.02)
    half_d = patient.half_depth_mm * rng.normal(1, 0.02)
    fov = 2 * half_w * rng.uniform(1.12, 1.3) if modality != "CR" else rng.uniform(380, 430)
    spacing = round(fov / rows, 4)
    shift = rng.normal(0, 0.02 * rows, 2)
    body, organs = _anatomy(modality, rows, spacing, half_w, half_d, shift)
    noise = float({"CT": rng.uniform(15, 45), "CR": rng.uniform(25, 60), "MR": rng.uniform(10, 24)}[modality])

    has_lesion = rng.random() < (0.86 if patient.diseased else 0.05)
    lesion = _lesion(rng, patient, modality, organs, spacing) if has_lesion else None
    if lesion is not None:
        missed = rng.random() < (MISS_RATE_SUBTLE if lesion.fraction < SUBTLE_FRACTION else MISS_RATE)
        finding = None if missed else Finding(lesion.side, lesion.site, lesion.diameter_mm, lesion.character)
    else:
        finding = overcall(rng, modality) if rng.random() < OVERCALL_RATE else None
    label = int(finding is not None)
    if rng.random() < CODING_ERROR_RATE:
        label = 1 - label
    if prior is None and rng.random() < 0.25:
        prior = (moment - timedelta(days=int(rng.integers(60, 900)))).date()

    def uid(kind: str) -> str:
        return generate_uid(
            UID_ROOT, entropy_srcs=["rvhs", str(cfg.seed), str(cfg.studies), str(period), str(index), kind]
        )

    description = {
        "CT": str(
            rng.choice(["CT CHEST WITHOUT CONTRAST", "CT CHEST WITH CONTRAST", "CT CHEST LOW DOSE SCREENING"])
        ),
        "CR": str(rng.choice(["XR CHEST PA", "XR CHEST 2 VIEWS", "CHEST PA/LAT"])),
        "MR": str(rng.choice(["MRI BRAIN WITHOUT CONTRAST", "MRI BRAIN WITH AND WITHOUT CONTRAST"])),
    }[modality]
    indications = CHEST_INDICATIONS if modality != "MR" else NEURO_INDICATIONS
    return Study(
        period=period,
        index=index,
        patient=patient,
        modality=modality,
        body_part="HEAD" if modality == "MR" else "CHEST",
        description=description,
        institution=institution,
        device=device,
        study_uid=uid("study"),
        series_uid=uid("series"),
        sop_uid=uid("instance"),
        frame_uid=uid("frame"),
        accession=f"{moment:%y%m%d}{seq:05d}",
        study_id=str(int(rng.integers(1000, 99999))),
        time=moment,
        report_time=moment + timedelta(minutes=int(np.clip(rng.lognormal(math.log(180), 0.8), 20, 2880))),
        rows=rows,
        spacing_mm=spacing,
        referring=REFERRING[rng.integers(len(REFERRING))],
        radiologist=RADIOLOGISTS[rng.integers(len(RADIOLOGISTS))],
        operator=TECHNOLOGISTS[rng.integers(len(TECHNOLOGISTS))],
        indication=str(indications[rng.integers(len(indications))]),
        noise=noise,
        body=body,
        organs=organs,
        lesion=lesion,
        finding=finding,
        label=label,
        prior=prior,
        seed=int(rng.integers(2**62)),
        **_export(cfg, period, index, institution, modality, implicit),
    )


def _export(
    cfg: CohortConfig,
    period: int,
    index: int,
    institution: int,
    modality: str,
    implicit: bool,
) -> dict:
    """How the archive exports a study: its transfer syntax and number of frames.

    Drawn from a stream of its own, so the rest of the study is the same
    whatever the archives' export policy.
    """
    rng = random_stream(cfg.seed, cfg.studies, "export", period, index)
    draw, syntax = rng.random(), ExplicitVRLittleEndian
    for candidate, share in ARCHIVE_SYNTAXES[institution]:
        if draw < share:
            syntax = candidate
            break
        draw -= share
    multi = modality != "CR" and rng.random() < MULTI_FRAME_SHARE
    return {
        "transfer_syntax": ImplicitVRLittleEndian if implicit else syntax,
        "frames": int(rng.choice(SLAB_FRAMES)) if multi else 1,
    }


def _anatomy(
    modality: str, n: int, spacing: float, half_w: float, half_d: float, shift: np.ndarray
) -> tuple[Ellipse, tuple[Ellipse, ...]]:
    """The body (or head) outline and the organs a lesion may sit in, in pixels."""
    ax, ay = half_w / spacing, half_d / spacing
    cy, cx = n / 2 + shift[0], n / 2 + shift[1]
    if modality == "CT":  # axial chest: wide, shallow; two lungs either side of the mediastinum
        body = Ellipse(cy, cx, ay, ax)
        lungs = (
            Ellipse(cy - 0.08 * ay, cx - 0.47 * ax, 0.62 * ay, 0.36 * ax),  # patient's right = image left
            Ellipse(cy - 0.08 * ay, cx + 0.5 * ax, 0.6 * ay, 0.33 * ax),
        )
        return body, lungs
    if modality == "CR":  # PA chest: a tall thorax, lungs with the heart between
        body = Ellipse(cy + 0.1 * n, cx, 1.45 * ax, ax)
        lungs = (
            Ellipse(cy - 0.02 * n, cx - 0.46 * ax, 0.75 * ax, 0.36 * ax),
            Ellipse(cy - 0.02 * n, cx + 0.48 * ax, 0.72 * ax, 0.33 * ax),
        )
        return body, lungs
    head = Ellipse(cy, cx, ay, ax)  # axial brain
    inner = 12.0 / spacing  # scalp and skull
    return head, (Ellipse(cy, cx, ay - inner, ax - inner),)


def _lesion(
    rng: np.random.Generator, patient: Patient, modality: str, organs: tuple, spacing: float
) -> Lesion:
    side = patient.lesion_side
    organ = organs[0] if modality == "MR" or side == "right" else organs[1]
    theta = patient.lesion_theta + rng.normal(0, 0.15)
    rho = float(np.clip(patient.lesion_rho + rng.normal(0, 0.05), 0, 0.65))
    row = organ.cy + rho * organ.ay * math.sin(theta)
    col = organ.cx + rho * organ.ax * math.cos(theta)
    if modality == "MR":  # the head's side comes from where the lesion is (radiological convention)
        side = "right" if col < organ.cx else "left"
    cap = max(3.0, min(12.0, 0.6 * min(organ.ay, organ.ax)))
    radius = float(np.clip(3 + patient.lesion_scale * (cap - 3) + rng.normal(0, 0.4), 3, cap))
    fraction = float(np.clip(rng.lognormal(math.log(LESION_FRACTION[modality]), 0.55), 0.05, 0.95))
    v = (row - (organ.cy - organ.ay)) / (2 * organ.ay)  # 0 at the top of the organ
    if modality == "CT":
        site = patient.lesion_lobe
        character = "solid" if fraction > 0.45 else "part-solid" if fraction > 0.2 else "ground-glass"
    elif modality == "CR":
        site = "upper" if v < 1 / 3 else "mid" if v < 2 / 3 else "lower"
        character = "rounded" if fraction > 0.2 else "faint"
    else:
        lateral = abs(col - organ.cx) / organ.ax
        site = (
            "frontal"
            if v < 0.38
            else "occipital"
            if v > 0.72
            else "temporal"
            if lateral > 0.55
            else "parietal"
        )
        character = "enhancing" if fraction > 0.5 else "FLAIR hyperintense"
    return Lesion(
        row=float(row),
        col=float(col),
        radius_px=radius,
        fraction=fraction,
        contrast=fraction * TISSUE_CONTRAST[modality],
        edge_px=float(rng.uniform(0.3, 1.8)),
        lobulation=float(rng.uniform(0, 0.22)),
        lobes=int(rng.integers(3, 7)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        side=side,
        site=site,
        diameter_mm=max(3, round(2 * radius * spacing)),
        character=character,
    )


def overcall(rng: np.random.Generator, modality: str) -> Finding:
    """A lesion the radiologist reports on a normal image: small, faint."""
    side = "right" if rng.random() < 0.5 else "left"
    site = {
        "CT": str(rng.choice(["upper", "lower"])),
        "CR": str(rng.choice(["upper", "mid", "lower"])),
        "MR": str(rng.choice(["frontal", "parietal"])),
    }[modality]
    character = {"CT": "ground-glass", "CR": "faint", "MR": "FLAIR hyperintense"}[modality]
    return Finding(side, site, int(rng.integers(5, 12)), character)
