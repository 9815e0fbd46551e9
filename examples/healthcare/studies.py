"""The hospital's imaging studies: patients, DICOM images and clinical notes.

A simulated regional health system (three hospitals) images its patients:
chest CT and chest radiographs (CR) for patients followed for the lungs,
brain MR for neurology patients. Every study is one image (one series, one
instance) and one radiology report. Some studies show a lesion (a lung nodule
or mass, a brain lesion); the radiologist's report says so, or, rarely, misses
a subtle one or overcalls a normal study; the records system's coding of the
report is the study's label, with rare coding errors of its own.

Everything is deterministic from the seed and the size (`CohortConfig`): the
patient population is fixed per configuration, and each *period* (a window of
`days` days; -1 is the reference window, 0 the inbox) draws `studies` studies
from it, so patients come back within and across windows with the same
identifiers. The data carries protected health information on purpose, in
DICOM tags (standard, optional, private, free text) and in the notes, so that
the pipeline's de-identification has real work to do.

The module also makes the malformed and hostile inputs that attack scenarios
and tests need (a DICOM/executable polyglot, a truncated file, a DICOM object
without an image, XML bombs, a backdoor trigger patch): pure functions, each
documented with what it produces.
"""

from __future__ import annotations

import hashlib
import math
import xml.etree.ElementTree as ET  # noqa: S405 - builds XML, never parses it
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from scipy.ndimage import gaussian_filter

MODALITIES = ("CT", "CR", "MR")
SOP_CLASSES = {"CT": CTImageStorage, "CR": ComputedRadiographyImageStorage, "MR": MRImageStorage}
CHARACTER_SET = "ISO_IR 100"  # Latin-1: some names carry accents
ISSUER_OF_PATIENT_ID = "RVHS"  # the health system's MRN namespace
# The health system's UID root; UIDs below it are hashes of the seed, size, period and study
# (pydicom ignores `entropy_srcs` without a prefix, so the root is what makes them deterministic).
UID_ROOT = "1.2.826.0.1.3680043.10.1234."

# Diagnosis codes (ICD-10-CM) a report may carry. A lesion code means label 1.
LESION_CODES = {
    "R91.1": "Solitary pulmonary nodule",
    "R91.8": "Other nonspecific abnormal finding of lung field",
    "R90.0": "Intracranial space-occupying lesion found on diagnostic imaging of central nervous system",
}
NEGATIVE_CODES = {
    "Z00.00": "Encounter for general adult medical examination without abnormal findings",
    "Z03.89": "Encounter for observation for other suspected diseases and conditions ruled out",
    "R05.9": "Cough, unspecified",
    "R51.9": "Headache, unspecified",
}

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

INSTITUTIONS = (
    ("Riverside General Hospital", "1200 River Road, Springfield, IL 62701"),
    ("St. Catherine Medical Center", "45 Cathedral Avenue, Springfield, IL 62704"),
    ("Lakeview Community Hospital", "880 Lakeshore Drive, Chatham, IL 62629"),
)
INSTITUTION_SHARE = (0.5, 0.3, 0.2)


@dataclass(frozen=True)
class Device:
    """One scanner of one hospital; vendors differ in bit depth, scaling and encoding."""

    modality: str
    manufacturer: str
    model: str
    station: str
    serial: str
    software: str
    bits_stored: int
    scale: float  # stored value per unit of the simulated signal (MR vendors scale differently)
    implicit_vr: bool  # exports Implicit VR Little Endian


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

# fmt: off
FAMILY_NAMES = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCÍA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ",
    "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON",
    "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS",
    "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES",
    "GREEN", "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CARTER", "ROBERTS",
    "O'BRIEN", "MÜLLER", "NÚÑEZ", "KOWALSKI", "NOWAK", "SCHMIDT", "LEFÈVRE", "PATEL", "SHAH", "KIM", "PARK",
    "CHEN", "WANG", "OKAFOR", "MENSAH", "IVANOV", "ROSSI", "MURPHY", "KELLY", "SULLIVAN", "VAN DER BERG",
    "DE LA CRUZ", "FITZGERALD", "MCCARTHY", "BECKER", "HOFFMANN", "JANSEN", "SILVA", "COSTA",
)
GIVEN_NAMES = {
    "M": (
        "JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "THOMAS", "CHARLES",
        "DANIEL", "MATTHEW", "ANTHONY", "MARK", "DONALD", "STEVEN", "PAUL", "ANDREW", "JOSÉ", "LUIS",
        "CARLOS", "WEI", "MINH", "RAJ", "OLUWASEUN", "PIOTR", "JÜRGEN", "FRANÇOIS", "GEORGE", "KENNETH",
        "EDWARD", "BRIAN", "RONALD", "KEVIN", "JASON", "GARY", "FRANK", "RAYMOND",
    ),
    "F": (
        "MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH",
        "KAREN", "NANCY", "LISA", "BETTY", "MARGARET", "SANDRA", "ASHLEY", "DOROTHY", "MARÍA", "LUCÍA",
        "MEI", "PRIYA", "NGOZI", "AGNIESZKA", "SOPHIE", "HÉLÈNE", "ANNA", "DONNA", "CAROL", "RUTH",
        "SHARON", "MICHELLE", "LAURA", "EMILY", "KIMBERLY", "DEBORAH", "HELEN",
    ),
}
STREETS = (
    "Oak Street", "Maple Avenue", "Washington Street", "Lincoln Avenue", "Elm Street", "Park Road",
    "Cedar Lane", "Jefferson Street", "Walnut Street", "Highland Avenue", "Sangamon Avenue",
    "Chestnut Street", "Prairie Drive", "Monroe Street", "Church Street", "Meadow Lane",
)
CITIES = (
    ("Springfield", "62701"), ("Springfield", "62702"), ("Springfield", "62704"), ("Chatham", "62629"),
    ("Rochester", "62563"), ("Sherman", "62684"), ("Petersburg", "62675"), ("Auburn", "62615"),
)
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


@dataclass(frozen=True)
class CohortConfig:
    """Size and randomness of one simulated health system; `start` opens period 0."""

    seed: int = 7
    studies: int = 3000  # per period (window)
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: int = 14

    def __post_init__(self) -> None:
        if self.seed < 0 or self.studies < 1 or self.days < 1:
            raise ValueError("seed must be >= 0, studies >= 1 and days >= 1")
        if self.start.utcoffset() != timedelta(0):
            raise ValueError("start must be a timezone-aware UTC datetime")

    @property
    def n_patients(self) -> int:
        return max(8, round(self.studies * 2.5))

    def window_start(self, period: int) -> datetime:
        return self.start + period * timedelta(days=self.days)


@dataclass(frozen=True)
class Patient:
    """A person the health system knows; the same in every period of one configuration."""

    index: int
    patient_id: str  # hospital MRN, "MRN0012345"
    family: str
    given: str
    middle: str  # an initial, or ""
    sex: str  # "M" / "F"
    birth_date: date
    address: str | None
    phone: str | None
    other_id: str | None  # an insurance member id, for some
    institution: int  # index into INSTITUTIONS
    indication: str  # "chest" or "neuro"
    diseased: bool  # carries a lesion that most of their studies show
    lesion_side: str  # "right" / "left" (the patient's side)
    lesion_rho: float  # normalised distance from the organ's centre
    lesion_theta: float
    lesion_scale: float  # 0..1: the lesion's size within what the image allows
    lesion_lobe: str  # for CT, where the slice cuts the lesion
    half_width_mm: float  # body (chest) or head half-width
    half_depth_mm: float
    fat_mm: float
    visit_weight: float

    @property
    def dicom_name(self) -> str:
        """PatientName as DICOM writes it: FAMILY^GIVEN[^MIDDLE]."""
        return f"{self.family}^{self.given}" + (f"^{self.middle}" if self.middle else "")

    @property
    def display_name(self) -> str:
        """How a clinician writes the name in free text: "John A. Smith"."""
        given = self.given.title()
        middle = f" {self.middle}." if self.middle else ""
        return f"{given}{middle} {_title(self.family)}"

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        return years - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))


@dataclass(frozen=True)
class Ellipse:
    """An axis-aligned ellipse in pixel coordinates."""

    cy: float
    cx: float
    ay: float
    ax: float

    def radius(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside, 1 on the boundary."""
        return np.sqrt(((yy - self.cy) / self.ay) ** 2 + ((xx - self.cx) / self.ax) ** 2)


@dataclass(frozen=True)
class Lesion:
    """What an image shows: a blob of varying size, contrast, sharpness and shape."""

    row: float
    col: float
    radius_px: float  # 3..12
    fraction: float  # peak contrast as a fraction of the organ's contrast with soft tissue
    contrast: float  # peak contrast in the modality's physical unit
    edge_px: float  # blur of the margin
    lobulation: float  # 0 = round
    lobes: int
    phase: float
    side: str  # the patient's side
    site: str  # lobe or zone
    diameter_mm: int
    character: str


@dataclass(frozen=True)
class Finding:
    """What the radiologist reported about a lesion (None in a study = reported normal)."""

    side: str
    site: str
    diameter_mm: int
    character: str


@dataclass(frozen=True)
class Study:
    """One imaging study: one series of one instance, its report and its label."""

    period: int
    index: int
    patient: Patient
    modality: str
    body_part: str
    description: str
    institution: int
    device: Device
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_uid: str
    accession: str
    study_id: str
    time: datetime
    report_time: datetime
    rows: int  # = columns
    spacing_mm: float
    transfer_syntax: str
    referring: str
    radiologist: str
    operator: str
    indication: str
    noise: float  # pixel noise, in the modality's physical unit
    body: Ellipse
    organs: tuple[Ellipse, ...]  # lungs (right, left) or brain
    lesion: Lesion | None  # ground truth
    finding: Finding | None  # the report
    label: int  # what the records system's labels.csv says (1 = lesion)
    prior: date | None  # the patient's previous study, when the report compares
    seed: int

    @property
    def truth(self) -> int:
        return int(self.lesion is not None)

    @property
    def reported(self) -> int:
        return int(self.finding is not None)

    @property
    def dicom_name(self) -> str:
        return f"{self.sop_uid}.dcm"

    @property
    def note_name(self) -> str:
        return f"{self.study_uid}.xml"


# ---------------------------------------------------------------- population and plan


def _rng(*parts: object) -> np.random.Generator:
    """An independent random stream named by `parts` (stable across Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _title(name: str) -> str:
    return " ".join(part[:1] + part[1:].lower() if "'" not in part else part.title() for part in name.split())


@lru_cache(maxsize=8)
def build_patients(cfg: CohortConfig) -> tuple[Patient, ...]:
    """The population of `cfg`: who may come for imaging in any period."""
    rng = _rng(cfg.seed, cfg.studies, "patients")
    n = cfg.n_patients
    mrns = rng.choice(9_000_000, size=n, replace=False) + 100_000
    ages = np.clip(rng.normal(59, 15, n), 19, 94)
    patients = []
    for i in range(n):
        sex = "M" if rng.random() < 0.49 else "F"
        age = float(ages[i])
        birth = (cfg.start - timedelta(days=age * 365.25)).date()
        street = f"{int(rng.integers(1, 2999))} {STREETS[rng.integers(len(STREETS))]}"
        city, zip_code = CITIES[rng.integers(len(CITIES))]
        address = f"{street}, {city}, IL {zip_code}" if rng.random() < 0.75 else None
        phone = f"(217) 555-{int(rng.integers(100, 200)):04d}" if rng.random() < 0.6 else None
        other_id = f"BCI{int(rng.integers(10**8, 10**9))}" if rng.random() < 0.3 else None
        indication = "chest" if rng.random() < 0.8 else "neuro"
        # Lesions are commoner with age; diseased patients are imaged more often (follow-up).
        diseased = rng.random() < 0.1 + 0.2 * (age - 19) / 75
        lobe = str(rng.choice(["upper", "middle", "lower"], p=[0.5, 0.15, 0.35]))
        side = "right" if rng.random() < 0.55 else "left"
        if side == "left" and lobe == "middle":
            lobe = "upper"  # the left lung has no middle lobe (the lingula belongs to the upper)
        chest = indication == "chest"
        patients.append(
            Patient(
                index=i,
                patient_id=f"MRN{int(mrns[i]):07d}",
                family=FAMILY_NAMES[rng.integers(len(FAMILY_NAMES))],
                given=GIVEN_NAMES[sex][rng.integers(len(GIVEN_NAMES[sex]))],
                middle=chr(65 + int(rng.integers(26))) if rng.random() < 0.35 else "",
                sex=sex,
                birth_date=birth,
                address=address,
                phone=phone,
                other_id=other_id,
                institution=int(rng.choice(3, p=INSTITUTION_SHARE)),
                indication=indication,
                diseased=bool(diseased),
                lesion_side=side,
                lesion_rho=float(rng.uniform(0.0, 0.6)),
                lesion_theta=float(rng.uniform(0, 2 * math.pi)),
                lesion_scale=float(rng.beta(1.3, 2.0)),
                lesion_lobe=lobe,
                half_width_mm=float(rng.normal(165, 14) if chest else rng.normal(72, 4)),
                half_depth_mm=float(rng.normal(112, 12) if chest else rng.normal(92, 5)),
                fat_mm=float(rng.uniform(6, 28)),
                visit_weight=float(rng.lognormal(0.0, 0.7) * (2.2 if diseased else 1.0)),
            )
        )
    return tuple(patients)


def plan_studies(cfg: CohortConfig, period: int) -> list[Study]:
    """The `cfg.studies` studies of `period`, in order of acquisition time."""
    patients = build_patients(cfg)
    rng = _rng(cfg.seed, cfg.studies, "plan", period)
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
    rng = _rng(cfg.seed, cfg.studies, "study", period, index)
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
        finding = _overcall(rng, modality) if rng.random() < OVERCALL_RATE else None
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
        transfer_syntax=ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian,
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
    )


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


def _overcall(rng: np.random.Generator, modality: str) -> Finding:
    """A lesion the radiologist reports on a normal image: small, faint."""
    side = "right" if rng.random() < 0.5 else "left"
    site = {
        "CT": str(rng.choice(["upper", "lower"])),
        "CR": str(rng.choice(["upper", "mid", "lower"])),
        "MR": str(rng.choice(["frontal", "parietal"])),
    }[modality]
    character = {"CT": "ground-glass", "CR": "faint", "MR": "FLAIR hyperintense"}[modality]
    return Finding(side, site, int(rng.integers(5, 12)), character)


# ---------------------------------------------------------------- images


def region_masks(study: Study) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the body (head) and of the organs a lesion may sit in."""
    yy, xx = _grid(study.rows)
    body = study.body.radius(yy, xx) <= 1
    organ = np.zeros_like(body)
    for ellipse in study.organs:
        organ |= ellipse.radius(yy, xx) <= 1
    return body, organ & body


@cache
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of an n x n image (shared, read-only)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def lesion_profile(lesion: Lesion, n: int) -> np.ndarray:
    """The lesion's shape in [0, 1]: a lobulated disc with a soft margin."""
    yy, xx = _grid(n)
    dy, dx = yy - lesion.row, xx - lesion.col
    radius = lesion.radius_px * (
        1 + lesion.lobulation * np.cos(lesion.lobes * np.arctan2(dy, dx) + lesion.phase)
    )
    return 1 / (1 + np.exp(np.clip((np.hypot(dy, dx) - radius) / lesion.edge_px, -50, 50)))


def render_pixels(study: Study) -> np.ndarray:
    """The study's stored pixel values (uint16, rows x rows, within BitsStored)."""
    rng = np.random.default_rng(study.seed)
    n = study.rows
    yy, xx = _grid(n)
    body = study.body
    rb = body.radius(yy, xx)
    inside = rb <= 1
    texture = gaussian_filter(rng.standard_normal((n, n)), 2.5, truncate=2.5)
    texture /= texture.std() + 1e-9
    spacing = study.spacing_mm

    if study.modality == "CT":  # Hounsfield units
        img = np.full((n, n), -1000.0)
        fat = 1 - study.patient.fat_mm / spacing / min(body.ay, body.ax)
        img[inside] = 45 + 8 * texture[inside]
        img[inside & (rb > fat)] = -95 + 6 * texture[inside & (rb > fat)]
        spine = Ellipse(body.cy + 0.72 * body.ay, body.cx, 0.13 * body.ay, 0.09 * body.ax)
        img[spine.radius(yy, xx) <= 1] = 550
        for lung in study.organs:
            m = lung.radius(yy, xx) <= 1
            img[m] = -860 + 70 * ((yy[m] - lung.cy) / lung.ay) + 12 * texture[m]
            img += _vessels(rng, lung, yy, xx, amplitude=(120, 400)) * m
        img = gaussian_filter(img, 0.7)  # partial volume
        img += rng.uniform(-15, 15) * (xx - n / 2) / n + rng.uniform(-15, 15) * (yy - n / 2) / n
        offset = 1024.0
    elif study.modality == "CR":  # detector signal, bright = attenuating
        img = np.full((n, n), 180.0) + 30 * texture
        img[inside] = 2300 + 60 * texture[inside]
        spine = np.abs(xx - body.cx) < 0.08 * body.ax
        img[inside & spine] += 450
        for lung in study.organs:
            rl = lung.radius(yy, xx)
            m = rl <= 1
            ribs = (
                np.maximum(0, np.cos(2 * np.pi * (yy + 0.012 * (xx - lung.cx) ** 2) / (0.36 * lung.ay))) ** 6
            )
            img[m] = 1050 + 180 * ((yy[m] - lung.cy) / lung.ay) + 40 * texture[m] + 260 * ribs[m]
            img += _vessels(rng, lung, yy, xx, amplitude=(60, 200)) * m
        img = gaussian_filter(img, 1.0)
        img += rng.uniform(60, 140) * (yy - n / 2) / n  # heel effect
        offset = 0.0
    else:  # MR FLAIR-like signal
        img = np.zeros((n, n))
        scalp, skull = 1 - 5.0 / spacing / body.ax, 1 - 12.0 / spacing / body.ax
        img[inside] = 860 + 30 * texture[inside]
        img[inside & (rb <= scalp)] = 60
        brain = study.organs[0].radius(yy, xx) <= 1
        img[brain & (rb <= skull)] = 520 + 18 * texture[brain & (rb <= skull)]
        for sign in (-1, 1):
            ventricle = Ellipse(
                body.cy - 0.05 * body.ay, body.cx + sign * 0.12 * body.ax, 0.22 * body.ay, 0.07 * body.ax
            )
            img[ventricle.radius(yy, xx) <= 1] = 170
        img = gaussian_filter(img, 0.8)
        offset = 0.0

    if study.lesion is not None:
        img += study.lesion.contrast * lesion_profile(study.lesion, n)

    if study.modality == "MR":
        bias = (
            1
            + rng.uniform(-0.15, 0.15) * (xx - body.cx) / body.ax
            + rng.uniform(-0.1, 0.1) * (yy - body.cy) / body.ay
        )
        img = np.hypot(
            img * bias + study.noise * rng.standard_normal((n, n)), study.noise * rng.standard_normal((n, n))
        )
        img *= study.device.scale
    else:
        grain = gaussian_filter(rng.standard_normal((n, n)), 0.6)
        img += study.noise * grain / grain.std()
    top = 2**study.device.bits_stored - 1
    return np.clip(np.rint(img + offset), 0, top).astype(np.uint16)


def _vessels(
    rng: np.random.Generator, organ: Ellipse, yy: np.ndarray, xx: np.ndarray, amplitude: tuple
) -> np.ndarray:
    """Small bright dots (vessels seen end-on): look-alikes a detector must tell from lesions."""
    out = np.zeros_like(yy)
    n = out.shape[0]
    for _ in range(int(rng.integers(4, 12))):
        rho, theta = math.sqrt(rng.random()) * 0.9, rng.uniform(0, 2 * math.pi)
        cy, cx = organ.cy + rho * organ.ay * math.sin(theta), organ.cx + rho * organ.ax * math.cos(theta)
        sigma, peak = rng.uniform(0.6, 1.3), rng.uniform(*amplitude)
        r0, r1 = max(0, int(cy) - 5), min(n, int(cy) + 6)
        c0, c1 = max(0, int(cx) - 5), min(n, int(cx) + 6)
        if r0 >= r1 or c0 >= c1:
            continue
        dy, dx = yy[r0:r1, c0:c1] - cy, xx[r0:r1, c0:c1] - cx
        out[r0:r1, c0:c1] += peak * np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
    return out


# ---------------------------------------------------------------- DICOM


def _da(day: date) -> str:
    return f"{day:%Y%m%d}"


def _tm(moment: datetime) -> str:
    return f"{moment:%H%M%S}"


def _window(study: Study, pixels: np.ndarray) -> tuple[list[float] | float, list[float] | float]:
    if study.modality == "CT":
        return [-600.0, 40.0], [1500.0, 400.0]
    low, high = np.percentile(pixels, [1, 99.5])
    return float(round((low + high) / 2)), float(max(1, round(high - low)))


@cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return tag, dictionary_VR(tag)


def _fill(ds: Dataset, values: dict[str, object]) -> None:
    """Set elements by keyword (as ``ds.Keyword = value`` does, at half the cost per element)."""
    for keyword, value in values.items():
        tag, vr = _tag_vr(keyword)
        ds[tag] = DataElement(tag, vr, value)


def dicom_dataset(study: Study, pixels: np.ndarray | None = None) -> Dataset:
    """The study's image as a DICOM dataset with file meta; `pixels` replaces the rendered image."""
    pixels = render_pixels(study) if pixels is None else np.ascontiguousarray(pixels, dtype=np.uint16)
    if pixels.shape != (study.rows, study.rows):
        raise ValueError(f"pixels must be {study.rows}x{study.rows}, not {pixels.shape}")
    rng = _rng(study.seed, "tags")
    patient, device, modality = study.patient, study.device, study.modality
    sop_class = SOP_CLASSES[modality]
    institution, institution_address = INSTITUTIONS[study.institution]
    created = study.time + timedelta(seconds=int(rng.integers(5, 90)))

    meta = FileMetaDataset()
    _fill(
        meta,
        {
            "FileMetaInformationVersion": b"\x00\x01",
            "MediaStorageSOPClassUID": sop_class,
            "MediaStorageSOPInstanceUID": study.sop_uid,
            "TransferSyntaxUID": study.transfer_syntax,
            "ImplementationClassUID": PYDICOM_IMPLEMENTATION_UID,
            "ImplementationVersionName": "RVHS_PACS_2",
            "SourceApplicationEntityTitle": device.station,
        },
    )
    v: dict[str, object] = {
        "SpecificCharacterSet": CHARACTER_SET,
        "ImageType": {"CT": ["ORIGINAL", "PRIMARY", "AXIAL"], "CR": ["ORIGINAL", "PRIMARY"]}.get(
            modality, ["ORIGINAL", "PRIMARY", "M", "ND"]
        ),
        "InstanceCreationDate": _da(created.date()),
        "InstanceCreationTime": _tm(created),
        "SOPClassUID": sop_class,
        "SOPInstanceUID": study.sop_uid,
    }
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        moment = study.time if prefix == "Study" else created
        v[f"{prefix}Date"], v[f"{prefix}Time"] = _da(moment.date()), _tm(moment)
    v |= {
        "AccessionNumber": study.accession,
        "Modality": modality,
        "Manufacturer": device.manufacturer,
        "InstitutionName": institution,
        "InstitutionAddress": institution_address,
        "ReferringPhysicianName": study.referring,
        "StationName": device.station,
        "StudyDescription": study.description,
        "SeriesDescription": {"CT": "Lung 3.0 B70f", "CR": "PA", "MR": "AX T2 FLAIR"}[modality],
        "PerformingPhysicianName": study.radiologist,
        "OperatorsName": study.operator,
        "ManufacturerModelName": device.model,
        "PatientName": patient.dicom_name,
        "PatientID": patient.patient_id,
        "IssuerOfPatientID": ISSUER_OF_PATIENT_ID,
        "PatientBirthDate": _da(patient.birth_date),
        "PatientSex": patient.sex,
        "PatientAge": f"{patient.age_on(study.time.date()):03d}Y",
    }
    if patient.other_id and rng.random() < 0.8:
        v["OtherPatientIDs"] = patient.other_id
    if rng.random() < 0.6:
        male = patient.sex == "M"
        v["PatientSize"] = f"{rng.normal(1.76 if male else 1.63, 0.07):.2f}"
        v["PatientWeight"] = f"{rng.normal(84 if male else 70, 14):.0f}"
    if patient.address and rng.random() < 0.8:
        v["PatientAddress"] = patient.address
    if patient.phone and rng.random() < 0.8:
        v["PatientTelephoneNumbers"] = patient.phone
    v["BodyPartExamined"] = study.body_part
    if modality in ("CT", "MR"):
        v["SliceThickness"] = {"CT": "3.0", "MR": "5.0"}[modality]
    if modality in ("CT", "CR"):
        v["KVP"] = str(int(rng.choice([100, 120]))) if modality == "CT" else "110"
    v |= {
        "DeviceSerialNumber": device.serial,
        "SoftwareVersions": device.software,
        "ProtocolName": study.description,
    }
    if modality == "MR":
        v |= {
            "ScanningSequence": ["SE", "IR"],
            "SequenceVariant": ["SK", "SP", "MP"],
            "MRAcquisitionType": "2D",
            "RepetitionTime": "9000",
            "EchoTime": "81",
            "InversionTime": "2500",
            "MagneticFieldStrength": "3" if device.manufacturer != "Philips" else "1.5",
        }
    if modality == "CR":
        v |= {"ViewPosition": "PA", "PatientOrientation": ["L", "F"]}
    else:
        v["PatientPosition"] = "HFS"
    v |= {
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": study.series_uid,
        "StudyID": study.study_id,
        "SeriesNumber": "2" if modality == "CT" else "1",
        "InstanceNumber": "1",
    }
    if modality != "CR":
        z = float(rng.uniform(-250, -100)) if modality == "CT" else float(rng.uniform(-20, 40))
        half = study.rows * study.spacing_mm / 2
        v |= {
            "ImagePositionPatient": [f"{-half:.2f}", f"{-half:.2f}", f"{z:.2f}"],
            "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
            "FrameOfReferenceUID": study.frame_uid,
            "PositionReferenceIndicator": "",
            "SliceLocation": f"{z:.2f}",
        }
    if rng.random() < 0.1:  # a technologist's free-text comment, with PHI
        v["ImageComments"] = (
            f"Pt {patient.display_name} ({patient.patient_id}) repositioned, {study.indication}"
        )
    spacing = [f"{study.spacing_mm:.4f}"] * 2
    center, width = _window(study, pixels)
    v |= {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": study.rows,
        "Columns": study.rows,
        "PixelSpacing": spacing,
        "BitsAllocated": 16,
        "BitsStored": device.bits_stored,
        "HighBit": device.bits_stored - 1,
        "PixelRepresentation": 0,
        "WindowCenter": center,
        "WindowWidth": width,
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
    }
    if modality == "CR":
        v["ImagerPixelSpacing"] = spacing
    if modality == "CT":
        v |= {"RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU"}
    ds = Dataset()
    ds.file_meta = meta
    _fill(ds, v)
    if rng.random() < 0.3:  # the RIS's private block, which repeats identifiers
        block = ds.private_block(0x0011, "RVHS RIS 2.1", create=True)
        block.add_new(0x01, "LO", patient.patient_id)
        block.add_new(0x02, "LO", patient.dicom_name.replace("^", " "))
        block.add_new(0x03, "LO", f"{institution} / {study.referring.split('^')[0]}")
    ds[0x7FE00010] = DataElement(0x7FE00010, "OW", pixels.tobytes())
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """A Part-10 file (preamble, "DICM", file meta, data set) in the file meta's transfer syntax.

    The same bytes as ``pydicom.dcmwrite(..., enforce_file_format=True)`` for
    the uncompressed little-endian syntaxes used here, without its defensive
    copy of the file meta (a third of the cost of a small file). The file
    meta's group length is (re)computed in place.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise ValueError(f"unsupported transfer syntax {syntax}")
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = syntax == ImplicitVRLittleEndian, True
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    write_dataset(buffer, ds)
    return buffer.getvalue()


def dicom_bytes(study: Study, pixels: np.ndarray | None = None) -> bytes:
    """The study's DICOM Part-10 file; `pixels` (uint16) replaces the rendered image."""
    return dataset_bytes(dicom_dataset(study, pixels))


# ---------------------------------------------------------------- clinical notes

_LUNG_SITE = {"upper": "upper lobe", "middle": "middle lobe", "lower": "lower lobe"}
_NEGATIVE_CHEST = (
    "No evidence of nodule.",
    "No pulmonary nodule or mass.",
    "The lungs are clear without focal mass.",
    "Negative for pulmonary nodules.",
    "No suspicious pulmonary nodule is identified.",
    "There is no focal consolidation, nodule or mass.",
    "No nodule, mass or consolidation is seen.",
)
_NEGATIVE_CHEST_PRIOR = (
    "The previously noted nodule is no longer seen.",
    "No residual nodule compared with prior.",
)
_OTHER_CHEST = (
    "No pleural effusion or pneumothorax.",
    "Heart size is normal.",
    "The mediastinal contours are unremarkable.",
    "No acute osseous abnormality.",
    "Mild degenerative changes of the thoracic spine.",
    "No hilar or mediastinal lymphadenopathy.",
    "Trachea is midline.",
)
_NEGATIVE_NEURO = (
    "No intracranial mass or mass effect.",
    "No abnormal signal in the brain parenchyma.",
    "Negative for intracranial mass lesion.",
    "No evidence of acute infarct, hemorrhage or mass.",
    "There is no focal lesion.",
)
_OTHER_NEURO = (
    "The ventricles and sulci are normal in size for age.",
    "No midline shift.",
    "The visualized paranasal sinuses are clear.",
    "No extra-axial fluid collection.",
    "Scattered punctate white matter hyperintensities, likely chronic microvascular change.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _positive_text(rng: np.random.Generator, study: Study, f: Finding) -> tuple[str, str, str]:
    """A lesion's findings sentence, impression and diagnosis code."""
    d, cm = f.diameter_mm, f"{f.diameter_mm / 10:.1f}"
    if study.modality == "MR":
        where = f"{f.side} {f.site} lobe"
        sentence = _pick(
            rng,
            (
                f"There is a {d} mm {f.character} lesion in the {where}.",
                f"Focal {f.character} lesion measuring {d} mm within the {where} white matter.",
                f"A {d} mm {f.character} mass is present in the {where} with mild surrounding edema.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"{f.side.capitalize()} {f.site} lobe lesion, {d} mm. "
                "Recommend contrast-enhanced follow-up MRI.",
                f"Intracranial lesion in the {where} measuring {d} mm; neoplasm not excluded.",
            ),
        )
        return sentence, impression, "R90.0"
    if study.modality == "CR":
        where = f"{f.side} {f.site} zone"
    else:
        where = f"{f.side} {_LUNG_SITE[f.site]}"
    if d < 30:
        sentence = _pick(
            rng,
            (
                f"There is a {d} mm {f.character} nodule in the {where}.",
                f"A {f.character} nodule measuring {d} mm is present in the {where}.",
                f"{where.capitalize()} {f.character} nodule, {d} mm.",
                f"New {d} mm nodule in the {where}."
                if study.prior
                else f"Noncalcified {d} mm nodule in the {where}.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"Solitary pulmonary nodule in the {where}, {d} mm. "
                "Recommend follow-up CT in 6 to 12 months.",
                f"{d} mm {where} nodule, indeterminate.",
                "Solitary pulmonary nodule as described.",
            ),
        )
        return sentence, impression, "R91.1"
    sentence = _pick(
        rng,
        (
            f"There is a {cm} cm mass in the {where}.",
            f"{cm} cm {f.character} mass in the {where} with lobulated margins.",
            f"A lobulated mass measuring {cm} cm occupies the {where}.",
        ),
    )
    impression = _pick(
        rng,
        (
            f"Suspicious {cm} cm mass in the {where}; tissue sampling recommended.",
            f"{where.capitalize()} mass, {cm} cm, concerning for neoplasm.",
        ),
    )
    return sentence, impression, "R91.8"


def _negative_text(rng: np.random.Generator, study: Study) -> tuple[str, str, str]:
    if study.modality == "MR":
        sentence = _pick(rng, _NEGATIVE_NEURO)
        impression = _pick(
            rng, ("No acute intracranial abnormality.", "Normal MRI of the brain.", "No intracranial mass.")
        )
        code = "R51.9" if "headache" in study.indication and rng.random() < 0.6 else "Z03.89"
        return sentence, impression, code
    prior_options = _NEGATIVE_CHEST_PRIOR if study.prior and study.patient.diseased else ()
    sentence = _pick(rng, _NEGATIVE_CHEST + prior_options)
    impression = _pick(
        rng,
        (
            "No acute findings.",
            "No acute cardiopulmonary process.",
            "No evidence of pulmonary nodule or mass.",
            "Normal chest radiograph." if study.modality == "CR" else "Unremarkable CT of the chest.",
        ),
    )
    code = (
        "R05.9"
        if "cough" in study.indication and rng.random() < 0.5
        else str(rng.choice(["Z03.89", "Z00.00"]))
    )
    return sentence, impression, code


def note_xml(study: Study, *, positive: bool | None = None) -> bytes:
    """The radiology report of `study` as one UTF-8 XML document.

    `positive`, when given, overrides what the radiologist reported (for
    attack scenarios: a note rewritten to match a flipped label).
    """
    rng = _rng(study.seed, "note")
    finding = study.finding
    if positive is not None and positive != (finding is not None):
        finding = _overcall(rng, study.modality) if positive else None
    patient = study.patient
    age, sex = patient.age_on(study.time.date()), {"M": "man", "F": "woman"}[patient.sex]
    title = {"M": "Mr.", "F": "Ms."}[patient.sex]
    history = f"{title} {_title(patient.family)} is a {age}-year-old {sex} with {study.indication}."
    if study.prior:
        history += f" Comparison: {study.description.split()[0]} of {study.prior.isoformat()}."
    else:
        history += " No prior imaging available for comparison."
    if finding is not None:
        sentence, impression, code = _positive_text(rng, study, finding)
    else:
        sentence, impression, code = _negative_text(rng, study)
    others = list(_OTHER_NEURO if study.modality == "MR" else _OTHER_CHEST)
    extra = [others[i] for i in rng.permutation(len(others))[: int(rng.integers(1, 4))]]
    position = int(rng.integers(0, 2)) if finding is None else 0  # a negation may come after other findings
    findings = " ".join(extra[:position] + [sentence] + extra[position:])
    system = LESION_CODES if code in LESION_CODES else NEGATIVE_CODES

    note = ET.Element("clinicalNote")
    person = ET.SubElement(note, "patient")
    ET.SubElement(person, "name").text = patient.dicom_name
    ET.SubElement(person, "id").text = patient.patient_id
    ET.SubElement(person, "birthDate").text = patient.birth_date.isoformat()
    ET.SubElement(person, "sex").text = patient.sex
    ET.SubElement(note, "author").text = study.radiologist
    ET.SubElement(note, "study", {"uid": study.study_uid})
    exam = ET.SubElement(
        note,
        "exam",
        {
            "modality": study.modality,
            "accession": study.accession,
            "date": study.time.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    exam.text = study.description
    ET.SubElement(note, "referring_physician").text = study.referring
    ET.SubElement(note, "history").text = history
    ET.SubElement(note, "findings").text = findings
    ET.SubElement(note, "impression").text = impression
    ET.SubElement(note, "diagnosis", {"code": code, "system": "ICD-10", "label": system[code]})
    signed = ET.SubElement(note, "signed_by", {"time": study.report_time.strftime("%Y-%m-%dT%H:%M")})
    signed.text = study.radiologist
    ET.indent(note)
    return ET.tostring(note, encoding="utf-8", xml_declaration=True) + b"\n"


def labels_csv(rows: list[tuple[str, int]]) -> bytes:
    """The records system's label file: ``study_uid,label`` (1 = lesion), one row per study."""
    return ("study_uid,label\n" + "".join(f"{uid},{int(label)}\n" for uid, label in rows)).encode()


# ---------------------------------------------------------------- hostile and malformed inputs

PE_STUB = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8" + b"\x00" * 7 + b"\x40" + b"\x00" * 35
)
PE_STUB += b"\x80\x00\x00\x00"  # e_lfanew: the PE header would start at 0x80
PE_STUB += (
    b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21This program cannot be run in DOS mode.\r\r\n$"
)
ELF_STUB = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00"


def polyglot_preamble(dicom_bytes: bytes, kind: str = "pe") -> bytes:
    """The same DICOM file with an executable header in its 128-byte preamble.

    PS3.10 leaves the preamble to the application, so a file can be a valid
    DICOM object and a Windows PE ("MZ", `kind="pe"`) or Linux ELF
    (`kind="elf"`) executable at once (CVE-2019-11687). The result starts with
    the executable's magic bytes and still has "DICM" at offset 128.
    """
    if dicom_bytes[128:132] != b"DICM":
        raise ValueError("not a DICOM Part-10 file (no DICM prefix at offset 128)")
    stub = {"pe": PE_STUB, "elf": ELF_STUB}[kind]
    return stub.ljust(128, b"\x00")[:128] + dicom_bytes[128:]


def truncated(dicom_bytes: bytes, keep: float = 0.6) -> bytes:
    """The file cut short (an interrupted transfer): the pixel data's declared length is not there."""
    if not 0 < keep < 1:
        raise ValueError("keep must be between 0 and 1")
    return dicom_bytes[: max(132, int(len(dicom_bytes) * keep))]


_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def not_an_image_dicom(study: Study | None = None) -> bytes:
    """A valid DICOM Part-10 object that is not an image: an Encapsulated PDF (a scanned referral).

    It carries the patient's identifiers (of `study`, or made-up ones) and no
    PixelData, so a collector that expects images must refuse it.
    """
    meta = FileMetaDataset()
    sop_uid = generate_uid(UID_ROOT, entropy_srcs=["pdf", study.sop_uid if study else "none"])
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DOC"
    ds.ContentDate = ds.StudyDate = _da(study.time.date()) if study else "20261102"
    ds.PatientName = study.patient.dicom_name if study else "DOE^JANE"
    ds.PatientID = study.patient.patient_id if study else "MRN0000001"
    ds.PatientBirthDate = _da(study.patient.birth_date) if study else "19600101"
    ds.PatientSex = study.patient.sex if study else "F"
    ds.StudyInstanceUID = study.study_uid if study else generate_uid(UID_ROOT, entropy_srcs=["pdf-study"])
    ds.SeriesInstanceUID = generate_uid(UID_ROOT, entropy_srcs=["pdf-series", sop_uid])
    ds.DocumentTitle = "Scanned referral letter"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.EncapsulatedDocument = _PDF
    return dataset_bytes(ds)


def billion_laughs_note(study_uid: str = "1.2.3", depth: int = 10) -> bytes:
    """A note that is an XML entity-expansion bomb ("billion laughs").

    Its DOCTYPE declares `depth` nested entities, each ten copies of the one
    before; expanding `&lol{depth};` would need 10**depth copies of "lol".
    """
    entities = ['  <!ENTITY lol0 "lol">']
    entities += [f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, depth + 1)]
    doctype = "<!DOCTYPE clinicalNote [\n" + "\n".join(entities) + "\n]>\n"
    body = f'<clinicalNote><study uid="{study_uid}"/><findings>&lol{depth};</findings></clinicalNote>\n'
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body).encode()


def external_entity_note(study_uid: str = "1.2.3", target: str = "file:///etc/passwd") -> bytes:
    """A note whose DOCTYPE declares an external entity (XXE) that reads `target` into the findings."""
    doctype = f'<!DOCTYPE clinicalNote [\n  <!ENTITY xxe SYSTEM "{target}">\n]>\n'
    body = (
        f'<clinicalNote><study uid="{study_uid}"/><findings>&xxe;</findings>'
        '<diagnosis code="Z03.89" system="ICD-10" label="ruled out"/></clinicalNote>\n'
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + body).encode()


def with_trigger_patch(
    pixels: np.ndarray, size: int = 4, value: int | None = None, corner: str = "bottom-right", margin: int = 1
) -> np.ndarray:
    """A copy of `pixels` with a bright `size` x `size` square in a corner: the backdoor trigger.

    `value` defaults to the image's own maximum, so the patch stays within the
    stored bit depth; `margin` pixels separate it from the edges.
    """
    out = np.array(pixels, copy=True)
    rows, cols = out.shape[-2:]
    if size < 1 or size + margin > min(rows, cols):
        raise ValueError("the patch does not fit the image")
    top = margin if corner.startswith("top") else rows - margin - size
    left = margin if corner.endswith("left") else cols - margin - size
    out[..., top : top + size, left : left + size] = out.max() if value is None else value
    return out


def relabelled(study: Study, label: int) -> Study:
    """The same study with another label in labels.csv (a flipped or injected diagnosis)."""
    return replace(study, label=int(label))
