"""The per-cutout (and per-catalog-row) quality bitmask. Zero means clean."""

from __future__ import annotations

from enum import IntFlag


class Quality(IntFlag):
    """Bits of the ``quality`` column of the store and of the catalog."""

    OK = 0
    #: some pixels are NaN (masked, or outside every frame)
    NAN_PIXELS = 1
    #: the cutout runs off the edge of the available frames
    EDGE = 2
    #: a whole band is missing (all NaN)
    MISSING_BAND = 4
    #: a band is identically zero (dead data)
    ZERO_BAND = 8
    #: the candidate has no usable redshift
    NO_REDSHIFT = 16
    #: the cutout could not be read at inference (corrupt chunk); mass is NaN
    UNREADABLE = 32
    # 64 is retired (catalogue schema 3): whether a row was attributed is the ``attributed`` column, not a
    # quality problem, so ``quality == 0`` selects every clean row
    #: the cutout's inputs lie far outside the training pool (|z-score| > 10, e.g. a very bright star);
    #: inputs are soft-clipped at 10 sigma (MassModel) and the mass is less trustworthy
    OUT_OF_DISTRIBUTION = 128
    #: the pixels show no cluster at the candidate's redshift: no red-sequence overdensity above the field
    #: (:func:`survey_mass.models.richness.no_cluster`)
    NO_CLUSTER = 256
    #: the redshift lies outside the range the model was trained on; no mass is given (:func:`redshift_quality`)
    OUTSIDE_Z_RANGE = 512


def describe(bits: int) -> str:
    """Names of the bits set, e.g. ``'NAN_PIXELS|EDGE'``; ``'OK'`` for zero."""
    names = [q.name for q in Quality if q and (int(bits) & q)]
    return "|".join(names) if names else "OK"


def images_quality(images):
    """Quality bits (N,) int64 that each of (N, 5, H, W) cutouts earns from its pixels alone: NaN pixels, a band
    with no finite pixel, a band of finite zeros. Vectorised over the cutouts (the per-cutout loop was a third of
    the CPU's work per cutout once the sky moved to the device).

    >>> import numpy as np
    >>> x = np.ones((3, 5, 4, 4), np.float32); x[1, 0, 0, 0] = np.nan; x[2, 3] = 0
    >>> images_quality(x).tolist() == [0, int(Quality.NAN_PIXELS), int(Quality.ZERO_BAND)]
    True
    >>> images_quality(x[:0]).tolist()
    []
    """
    import numpy as np

    images = np.asarray(images)
    n, c = images.shape[:2]
    if n == 0:  # an empty partition (the store's contract allows one)
        return np.zeros(0, np.int64)
    nan = ~np.isfinite(images).reshape(n, c, -1)
    empty = nan.all(axis=2)
    flat = images.reshape(n, c, -1)
    zero = ~empty & (np.isnan(flat) | (flat == 0)).all(axis=2)  # (an infinite pixel is not a zero)
    bits = np.where(nan.any(axis=(1, 2)), int(Quality.NAN_PIXELS), 0)
    bits |= np.where(empty.any(axis=1), int(Quality.MISSING_BAND), 0)
    bits |= np.where(zero.any(axis=1), int(Quality.ZERO_BAND), 0)
    return bits.astype(np.int64)


def redshift_quality(z, z_range: tuple[float, float]):
    """Quality bits each row earns from its redshift alone: :attr:`Quality.OUTSIDE_Z_RANGE` where ``z`` is finite
    but outside the closed interval ``z_range`` = (lo, hi) the model was trained on, else 0.

    A NaN redshift earns nothing here (that is :attr:`Quality.NO_REDSHIFT`'s business). Returns an int32 array
    shaped like ``z``.

    >>> redshift_quality([0.05, 0.1, 0.3, 0.55, 0.9, float("nan")], (0.1, 0.55)).tolist()
    [512, 0, 0, 0, 512, 0]
    """
    import numpy as np

    lo, hi = (float(v) for v in z_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"z_range must be finite with lo <= hi, got {z_range!r}")
    z = np.asarray(z, dtype=np.float64)
    outside = np.isfinite(z) & ((z < lo) | (z > hi))
    return np.where(outside, np.int32(Quality.OUTSIDE_Z_RANGE), np.int32(0)).astype(np.int32)
