"""A varied corpus of DICOM files, each with the outcome collection must give it, for tests.

``varied_corpus(seed)`` returns a list of :class:`CorpusFile` (``name``,
``data``, ``outcome``, ``note``). ``outcome`` is ``"accepted"`` or the
refusal category :func:`domain.healthcare.dicom.validate_dicom` must return
with its default arguments (``"pixel data"``, ``"transfer syntax"``, ...).
Every file is a simulated hospital study (PHI included), deterministic from
the seed:

- ``syntax-<name>.dcm``: one accepted file per transfer syntax in
  :data:`domain.healthcare.dicom.ALLOWED_TRANSFER_SYNTAXES`;
- ``multi-frame-*.dcm``: slabs of 3 and 5 frames (native and compressed);
- ``vendor-private.dcm``: a scanner vendor's private block ("0.000000", product text);
- ``person-names.dcm``: person names with several ``^`` components, other
  names, referring / performing / reading physicians, operators;
- ``burned-in-annotation.dcm``: ``BurnedInAnnotation = YES`` (refused ``phi``);
- malformed: a truncated compressed stream (no end marker), one that does
  not decode, garbage after the last fragment,
  a codestream declaring a huge image (a decompression bomb), a header
  declaring a huge image, a deflate bomb, a syntax nothing here decodes and
  one that is decodable but not allowed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000MC,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLSLossless,
)

from domain.healthcare.dicom import ALLOWED_TRANSFER_SYNTAXES, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXEL_BYTES
from examples.healthcare.studies.dicom import dataset_bytes, dicom_dataset
from examples.healthcare.studies.model import CohortConfig, Study
from examples.healthcare.studies.plan import plan_studies

ACCEPTED = "accepted"
BOMB_SIZE = 60000  # rows and columns a malformed file declares
DEFLATE_BOMB_BYTES = DEFAULT_MAX_BYTES + DEFAULT_MAX_PIXEL_BYTES + 1024  # more than collection inflates
_STUDIES = 60  # planned studies the corpus is drawn from (each accepted file takes its own)


@dataclass(frozen=True)
class CorpusFile:
    """One corpus file: ``outcome`` is ``"accepted"`` or the expected refusal category."""

    name: str
    data: bytes
    outcome: str
    note: str


def _slug(syntax: str) -> str:
    name = UID(syntax).name.lower()
    keep = "".join(c if c.isalnum() else "-" for c in name)
    return "-".join(part for part in keep.split("-") if part)[:60]


def _exported(study: Study, syntax: str, frames: int = 1) -> Dataset:
    """The study's dataset as the archive would export it in `syntax` with `frames` frames."""
    if syntax == JPEGExtended12Bit and study.device.bits_stored > 12:
        raise ValueError("JPEG Extended holds at most 12 bits")
    return dicom_dataset(replace(study, transfer_syntax=syntax, frames=frames))


def _with_pixel_data(ds: Dataset, value: bytes) -> Dataset:
    """`ds` with its encapsulated Pixel Data value replaced by `value`."""
    ds.PixelData = value
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _first_frame(ds: Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def _jls_declaring(frame: bytes, rows: int, columns: int) -> bytes:
    """A JPEG-LS codestream whose frame header (SOF55) declares `rows` x `columns`."""
    at = frame.index(b"\xff\xf7")
    return frame[: at + 5] + struct.pack(">2H", rows, columns) + frame[at + 9 :]


class _Studies:
    """Hands out each planned study once, so no two accepted corpus files are the same study."""

    def __init__(self, studies: list[Study]):
        self._left = list(studies)

    def take(self, wanted: Callable[[Study], bool] = lambda _: True) -> Study:
        study = next(s for s in self._left if wanted(s))
        self._left.remove(study)
        return study


def _syntax_files(studies: _Studies) -> list[CorpusFile]:
    files = []
    for syntax in ALLOWED_TRANSFER_SYNTAXES:
        twelve_bit = syntax == JPEGExtended12Bit
        study = studies.take(lambda s, twelve_bit=twelve_bit: not twelve_bit or s.device.bits_stored <= 12)
        data = dataset_bytes(_exported(study, syntax))
        files.append(
            CorpusFile(f"syntax-{_slug(syntax)}.dcm", data, ACCEPTED, f"{UID(syntax).name} ({syntax})")
        )
    return files


def _person_names(study: Study) -> Dataset:
    ds = _exported(study, ExplicitVRLittleEndian)
    ds.PatientName = f"{study.patient.dicom_name}^MR^JR" if study.patient.middle else "DOE^JANE^Q^MRS^PHD"
    ds.OtherPatientNames = ["SMITH^JANE^^^", "VAN DER BERG^ANNA^M"]
    ds.PatientBirthName = "OLDNAME^JANE"
    ds.PatientMotherBirthName = "MAIDEN^MARY"
    ds.ReferringPhysicianName = "WHITMORE^ALAN^J^DR^MD"
    ds.PerformingPhysicianName = ["LINDQVIST^ERIK^^DR", "CASTILLO^ELENA^M^DR^PHD"]
    ds.NameOfPhysiciansReadingStudy = ["HOLLOWAY^MARGARET^^DR"]
    ds.OperatorsName = ["KOWALCZYK^ANNA", "BROOKS^TYLER^J"]
    ds.RequestingPhysician = "PATEL^ANIL^^DR"
    return ds


def _malformed(studies: list[Study]) -> list[CorpusFile]:
    study = studies[0]
    files = []

    ds = _exported(study, JPEGLSLossless)
    frame = _first_frame(ds)
    cut = _with_pixel_data(ds, encapsulate([frame[: len(frame) // 3]]))
    files.append(
        CorpusFile("truncated-stream.dcm", dataset_bytes(cut), "pixel data", "JPEG-LS stream cut short")
    )

    ds = _exported(study, JPEG2000Lossless)
    frame = _first_frame(ds)
    corrupt = _with_pixel_data(ds, encapsulate([frame[: len(frame) // 3] + b"\xff\xd9"]))
    note = "JPEG 2000 stream cut short, end marker kept: the decoder fails"
    files.append(CorpusFile("corrupt-stream.dcm", dataset_bytes(corrupt), "pixel data", note))

    ds = _exported(study, JPEGLSLossless)
    garbage = _with_pixel_data(ds, ds.PixelData + b"\x00\x01MZ\x90\x00" * 8)
    files.append(
        CorpusFile("fragment-garbage.dcm", dataset_bytes(garbage), "pixel data", "bytes after the last item")
    )

    ds = _exported(study, JPEGLSLossless)
    bomb = _with_pixel_data(ds, encapsulate([_jls_declaring(_first_frame(ds), BOMB_SIZE, BOMB_SIZE)]))
    note = f"a small codestream declaring {BOMB_SIZE}x{BOMB_SIZE} (a decompression bomb)"
    files.append(CorpusFile("codestream-bomb.dcm", dataset_bytes(bomb), "pixel data", note))

    ds = _exported(study, JPEGLSLossless)
    ds.Rows = ds.Columns = BOMB_SIZE
    files.append(CorpusFile("header-bomb.dcm", dataset_bytes(ds), "shape", "header declaring a huge image"))

    ds = _exported(study, DeflatedExplicitVRLittleEndian)
    ds.add_new(0x00191099, "OB", bytes(DEFLATE_BOMB_BYTES))  # zeros deflate a thousandfold
    files.append(
        CorpusFile(
            "deflate-bomb.dcm", dataset_bytes(ds), "too large", "deflated data set inflating past the bound"
        )
    )

    for syntax in (JPEG2000MC, HTJ2KLossless):
        ds = _exported(study, JPEG2000Lossless)
        ds.file_meta.TransferSyntaxUID = syntax
        files.append(
            CorpusFile(
                f"unsupported-{_slug(syntax)}.dcm", dataset_bytes(ds), "transfer syntax", UID(syntax).name
            )
        )
    return files


def varied_corpus(seed: int = 7) -> list[CorpusFile]:
    """The corpus (see the module docstring), the same bytes for the same seed.

    Every accepted file is a different study (a study sent twice is refused as
    a duplicate); the malformed files are copies of the first planned study.
    """
    planned = plan_studies(CohortConfig(seed=seed, studies=_STUDIES), 0)
    malformed = _malformed(planned)
    studies = _Studies(planned[1:])
    files = _syntax_files(studies)
    chest = studies.take(lambda s: s.modality == "CT")
    brain = studies.take(lambda s: s.modality in ("MR", "CT"))
    files += [
        CorpusFile(
            "multi-frame-3.dcm",
            dataset_bytes(_exported(chest, ExplicitVRLittleEndian, 3)),
            ACCEPTED,
            "3 frames",
        ),
        CorpusFile(
            "multi-frame-5-j2k.dcm",
            dataset_bytes(_exported(brain, JPEG2000Lossless, 5)),
            ACCEPTED,
            "5 frames",
        ),
    ]
    vendor = studies.take(lambda s: s.device.manufacturer in ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips"))
    files.append(
        CorpusFile(
            "vendor-private.dcm",
            dataset_bytes(_exported(vendor, ExplicitVRLittleEndian)),
            ACCEPTED,
            vendor.device.manufacturer,
        )
    )
    names = _person_names(studies.take())
    files.append(CorpusFile("person-names.dcm", dataset_bytes(names), ACCEPTED, "multi-component names"))
    burned = _exported(studies.take(), ExplicitVRLittleEndian)
    burned.BurnedInAnnotation = "YES"
    files.append(
        CorpusFile("burned-in-annotation.dcm", dataset_bytes(burned), "phi", "BurnedInAnnotation YES")
    )
    return files + malformed
