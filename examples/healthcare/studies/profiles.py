"""Studies from acquisition profiles the health system's model was never trained on.

Each profile takes the planned studies of a period (`plan_studies`) and
changes what a different scanner, protocol or department would: the image
geometry, the body part, the modality. Pixels are rendered and files written
by the simulator's own functions (`render_pixels`, `dicom_dataset`), so
everything but the changed acquisition is what the hospital's scanners make.

- ``high_resolution``: chest CT reconstructed on a 256 x 256 matrix (same
  field of view, finer pixels).
- ``double_spacing``: scanners recalibrated to twice the pixel spacing (the
  retraining-exploitation scenario's fleet), the anatomy rendered at half size.
- ``abdomen``: CT of the abdomen (soft tissue and spine, no lungs).
- ``mammography``: digital mammography (MG, BREAST) from the radiography units.
"""

from __future__ import annotations

from dataclasses import replace

from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian

from examples.healthcare.studies.dicom import dataset_bytes, dicom_dataset
from examples.healthcare.studies.model import CohortConfig, Ellipse, Study
from examples.healthcare.studies.plan import plan_studies

PROFILES = ("high_resolution", "double_spacing", "abdomen", "mammography")
HIGH_RESOLUTION_ROWS = 256


def _rescaled(ellipse: Ellipse, old_rows: int, new_rows: int, ratio: float) -> Ellipse:
    """`ellipse` on a new matrix: positions about the image centre and sizes scaled by `ratio`."""
    return Ellipse(
        new_rows / 2 + (ellipse.cy - old_rows / 2) * ratio,
        new_rows / 2 + (ellipse.cx - old_rows / 2) * ratio,
        ellipse.ay * ratio,
        ellipse.ax * ratio,
    )


def regeometry(study: Study, rows: int, spacing_mm: float) -> Study:
    """`study` acquired on a `rows` x `rows` matrix at `spacing_mm`: the same anatomy, in new pixels."""
    ratio = study.spacing_mm / spacing_mm  # new pixels per old pixel
    lesion = study.lesion
    if lesion is not None:
        lesion = replace(
            lesion,
            row=rows / 2 + (lesion.row - study.rows / 2) * ratio,
            col=rows / 2 + (lesion.col - study.rows / 2) * ratio,
            radius_px=lesion.radius_px * ratio,
            edge_px=lesion.edge_px * ratio,
        )
    return replace(
        study,
        rows=rows,
        spacing_mm=round(spacing_mm, 4),
        body=_rescaled(study.body, study.rows, rows, ratio),
        organs=tuple(_rescaled(o, study.rows, rows, ratio) for o in study.organs),
        lesion=lesion,
    )


def uncompressed(study: Study) -> Study:
    """`study` exported Explicit VR Little Endian (a profile changes the acquisition, not the encoding)."""
    return replace(study, transfer_syntax=ExplicitVRLittleEndian)


def profile_studies(profile: str, cfg: CohortConfig, period: int = 0) -> list[Study]:
    """The studies of `period` as `profile` acquires them (those of the modality it changes), uncompressed."""
    studies = [uncompressed(study) for study in plan_studies(cfg, period)]
    if profile == "high_resolution":
        return [
            regeometry(s, HIGH_RESOLUTION_ROWS, s.spacing_mm * s.rows / HIGH_RESOLUTION_ROWS)
            for s in studies
            if s.modality == "CT"
        ]
    if profile == "double_spacing":
        return [regeometry(s, s.rows, 2 * s.spacing_mm) for s in studies]
    if profile == "abdomen":
        return [
            replace(
                s,
                body_part="ABDOMEN",
                description="CT ABDOMEN WITH CONTRAST",
                organs=(),
                lesion=None,
                finding=None,
                label=0,
            )  # fmt: skip
            for s in studies
            if s.modality == "CT"
        ]
    if profile == "mammography":
        return [
            replace(s, body_part="BREAST", description="MAMMOGRAPHY SCREENING")
            for s in studies
            if s.modality == "CR"
        ]
    raise ValueError(f"unknown profile {profile!r}; one of {PROFILES}")


def profile_dicom(profile: str, study: Study) -> bytes:
    """The Part-10 file of a study of `profile` (mammograms are written as MG, not CR)."""
    ds = dicom_dataset(study)
    if profile == "mammography":
        ds.Modality = "MG"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
            DigitalMammographyXRayImageStorageForPresentation
        )
        ds.ViewPosition = "CC"
        ds.SeriesDescription = "L CC"
    return dataset_bytes(ds)


def profile_dicoms(profile: str, cfg: CohortConfig, period: int = 0) -> list[bytes]:
    """The DICOM files of `profile_studies`."""
    return [profile_dicom(profile, study) for study in profile_studies(profile, cfg, period)]
