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
    #: attribution summaries were not computed for this row (attribution sampled or off)
    NO_ATTRIBUTION = 64
    #: the cutout's inputs lie far outside the training pool (|z-score| > 10, e.g. a very bright star);
    #: inputs are soft-clipped at 10 sigma (MassModel) and the mass is less trustworthy
    OUT_OF_DISTRIBUTION = 128


def describe(bits: int) -> str:
    """Names of the bits set, e.g. ``'NAN_PIXELS|EDGE'``; ``'OK'`` for zero."""
    names = [q.name for q in Quality if q and (int(bits) & q)]
    return "|".join(names) if names else "OK"


def image_quality(images) -> int:
    """Quality bits a (5, H, W) cutout earns from its pixels alone."""
    import numpy as np

    bits = 0
    nan = ~np.isfinite(images)
    if nan.any():
        bits |= Quality.NAN_PIXELS
    if nan.reshape(images.shape[0], -1).all(axis=1).any():
        bits |= Quality.MISSING_BAND
    flat = np.nan_to_num(images).reshape(images.shape[0], -1)
    if (~nan.reshape(images.shape[0], -1).all(axis=1) & (flat == 0).all(axis=1)).any():
        bits |= Quality.ZERO_BAND
    return int(bits)
