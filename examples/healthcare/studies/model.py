"""The records a simulated imaging study is made of, and the random streams they are drawn from.

`CohortConfig` fixes the seed, the number of studies per period and the
window that opens period 0; `Patient`, `Device`, `Ellipse`, `Lesion`,
`Finding` and `Study` are the frozen records the planner fills in and the
image, DICOM and report writers read; `random_stream` names an independent
numpy stream by its parts, so everything drawn from one configuration is the
same on every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

MODALITIES = ("CT", "CR", "MR")


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
        return f"{given}{middle} {title_case(self.family)}"

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
    frames: int = 1  # > 1: the archive exports a slab whose middle frame is the study's image

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


def random_stream(*parts: object) -> np.random.Generator:
    """An independent random stream named by `parts` (stable across Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def title_case(name: str) -> str:
    """An upper-case name as prose writes it: "SMITH" -> "Smith", "O'BRIEN" -> "O'Brien"."""
    return " ".join(part[:1] + part[1:].lower() if "'" not in part else part.title() for part in name.split())
