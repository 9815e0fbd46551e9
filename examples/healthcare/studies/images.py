"""The pixels of a study's image: anatomy, texture, vessels, the lesion and the scanner's noise.

`render_pixels` draws a study's stored values (CT in Hounsfield units, CR
detector signal, MR FLAIR-like magnitude) from the study's own seed, with
vessel look-alikes and, when the study has one, the lesion's lobulated,
soft-margined profile (`lesion_profile`); `region_masks` gives the body and
the organs a lesion may sit in, for checks on where an image is bright.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy.ndimage import gaussian_filter

from examples.healthcare.studies.model import Ellipse, Lesion, Study


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
