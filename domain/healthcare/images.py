"""Image normalisation: a validated DICOM data set to the CNN's input, the same in training and serving.

Stored values go through the modality LUT (rescale slope and intercept:
Hounsfield units for CT), then the first VOI window the file carries
(window centre and width, as a radiologist would view it), are scaled to
[0, 1] (MONOCHROME1 inverted so that bright is always dense) and resized to
a square with Pillow. A file without a window is scaled between its 1st and
99.5th percentiles.

A multi-frame image (``(frames, rows, columns)``) becomes one image, its
middle frame (index ``frames // 2``, :func:`middle_frame`): deterministic,
and in a slab or cine series the frame the acquisition is centred on.
Compressed pixel data needs nothing here: pydicom decodes it (with the
installed plugins) before it reaches these functions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

IMAGE_SIZE = 64
FALLBACK_PERCENTILES = (1.0, 99.5)


def first_number(ds: Dataset, keyword: str) -> float | None:
    """The first value of a numeric attribute (window centre, spacing); None if absent or not a number."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float):  # a multi-valued attribute
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _window(ds: Dataset, values: np.ndarray) -> tuple[float, float]:
    centre, width = first_number(ds, "WindowCenter"), first_number(ds, "WindowWidth")
    if centre is not None and width is not None and width > 0:
        return centre - width / 2, centre + width / 2
    low, high = np.percentile(values, FALLBACK_PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def middle_frame(pixels: np.ndarray) -> np.ndarray:
    """The one 2-D image of `pixels`: itself, or the middle frame (index ``frames // 2``) of a stack."""
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim != 3 or not len(pixels):
        raise ValueError(f"expected (rows, columns) or (frames, rows, columns) pixels, not {pixels.shape}")
    return pixels[len(pixels) // 2]


def normalise(ds: Dataset, pixels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """`pixels` (stored values of `ds`, one frame or many) windowed to float32 ``[size, size]`` in [0, 1]."""
    values = np.asarray(apply_modality_lut(middle_frame(pixels), ds), dtype=np.float64)
    low, high = _window(ds, values)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    if scaled.shape != (size, size):
        resized = Image.fromarray(scaled.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
        scaled = np.asarray(resized)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def to_blob(image: np.ndarray) -> bytes:
    """A normalised image as little-endian float32 bytes (how the image table stores it)."""
    return np.ascontiguousarray(image, dtype="<f4").tobytes()


def from_blobs(blobs: list[bytes], size: int = IMAGE_SIZE) -> np.ndarray:
    """Stored image blobs as the CNN's input, float32 ``[n, 1, size, size]``."""
    expected = size * size * 4
    wrong = [i for i, blob in enumerate(blobs) if len(blob) != expected]
    if wrong:
        raise ValueError(f"image blobs {wrong[:5]} are not {size}x{size} float32 ({expected} bytes)")
    flat = np.frombuffer(b"".join(blobs), dtype="<f4")
    return flat.reshape(len(blobs), 1, size, size).astype(np.float32)
