"""Footprints: regions of sky as MOCs, and the HEALPix partitions that tile them.

A footprint is a multi-order coverage map (MOC, via mocpy). The *partition* is a nested HEALPix pixel at a fixed
order (:data:`DEFAULT_PARTITION_ORDER`); it is the unit of storage, of work, of output files and of resume.

``--footprint`` accepts, everywhere:

* a name: ``dr12`` (the SDSS DR12 imaging footprint shipped as a MOC in package data);
* a path to a MOC FITS file;
* ``box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX`` in degrees (RA_MIN > RA_MAX wraps through RA = 0).

Examples
--------
>>> fp = parse_footprint("box:150,160,0,10")  # 99.5 deg^2; the MOC keeps the order-10 cells on its edge
>>> round(fp.area_deg2)
101
>>> bool(fp.contains(155.0, 5.0)[0]), bool(fp.contains(170.0, 5.0)[0])
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import FootprintError
from .resources import data_path

#: Partition order. 26,350 redMaPPer clusters over ~10,000 deg^2 give ~440 clusters per order-2 pixel (53.7
#: deg^2) and ~60 partitions: hundreds of cutouts per partition and many more partitions than workers.
DEFAULT_PARTITION_ORDER = 2
#: Resolution of the MOCs we build from boxes (order 10 cells are 3.4 arcmin across).
BOX_MOC_ORDER = 10
NAMED = {"dr12": "dr12_imaging_moc.fits"}
FULL_SKY_DEG2 = 4 * np.pi * (180 / np.pi) ** 2


@dataclass(frozen=True)
class Footprint:
    """A sky region and the partitions that tile it.

    Parameters
    ----------
    name : str
        Short name for messages and metadata (``dr12``, the MOC file name, or the box spec).
    moc : mocpy.MOC
        The region.
    order : int
        HEALPix order of the partitions.
    """

    name: str
    moc: object
    order: int = DEFAULT_PARTITION_ORDER

    @cached_property
    def area_deg2(self) -> float:
        """Area in square degrees."""
        return float(self.moc.sky_fraction * FULL_SKY_DEG2)

    @cached_property
    def digest(self) -> str:
        """A hash of the region itself (its MOC at full resolution), not of its name: two MOC files of one name
        but other cells differ here."""
        import hashlib

        ranges = np.ascontiguousarray(np.asarray(self.moc.to_depth29_ranges, dtype="<u8"))
        return hashlib.sha256(ranges.tobytes()).hexdigest()[:16]

    @cached_property
    def partitions(self) -> np.ndarray:
        """Nested HEALPix pixels at :attr:`order` that intersect the footprint, sorted."""
        return np.sort(np.asarray(self.moc.degrade_to_order(self.order).flatten(), dtype=np.int64))

    def contains(self, ra, dec) -> np.ndarray:
        """Boolean array: which (ra, dec) positions in degrees lie inside."""
        import astropy.units as u

        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        return np.asarray(self.moc.contains_lonlat(ra * u.deg, dec * u.deg), dtype=bool)

    def to_dict(self) -> dict:
        """The ``survey-mass footprint --json`` document."""
        return {
            "name": self.name,
            "area_deg2": round(self.area_deg2, 3),
            "order": self.order,
            "n_partitions": int(self.partitions.size),
            "partitions": [int(p) for p in self.partitions],
        }


def _parse_box(spec: str):
    from astropy.coordinates import Latitude, Longitude, SkyCoord  # noqa: F401
    from mocpy import MOC

    body = spec.split(":", 1)[1]
    try:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in body.split(","))
    except ValueError:
        raise FootprintError(
            f"footprint {spec!r}: a box is box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX with four numbers in degrees"
        ) from None
    for v, lo, hi, what in (
        (ra_min, 0, 360, "RA_MIN"),
        (ra_max, 0, 360, "RA_MAX"),
        (dec_min, -90, 90, "DEC_MIN"),
        (dec_max, -90, 90, "DEC_MAX"),
    ):
        if not (lo <= v <= hi) or not np.isfinite(v):
            raise FootprintError(f"footprint {spec!r}: {what}={v:g} is outside [{lo}, {hi}] degrees")
    if dec_min >= dec_max:
        raise FootprintError(f"footprint {spec!r}: DEC_MIN must be below DEC_MAX")
    if ra_min == ra_max:
        raise FootprintError(f"footprint {spec!r}: the box is empty (RA_MIN == RA_MAX)")
    import astropy.units as u

    spans = [(ra_min, ra_max)] if ra_min < ra_max else [(ra_min, 360.0), (0.0, ra_max)]
    moc = None
    for a, b in spans:
        part = MOC.from_zone(SkyCoord([[a, dec_min], [b, dec_max]], unit=u.deg), max_depth=BOX_MOC_ORDER)
        moc = part if moc is None else moc.union(part)
    return moc


def _load_moc_file(path: Path):
    from mocpy import MOC

    if not path.is_file():
        raise FootprintError(
            f"footprint {str(path)!r}: no such file, and not a known name ({', '.join(NAMED)})"
        )
    try:
        moc = MOC.from_fits(str(path))
    except Exception as exc:  # mocpy raises many types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FootprintError(f"footprint {str(path)!r}: not a MOC FITS file ({reason})") from None
    return moc


def parse_footprint(spec: str, *, order: int = DEFAULT_PARTITION_ORDER) -> Footprint:
    """Turn a ``--footprint`` value into a :class:`Footprint`.

    ``NAME-box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX`` is footprint NAME without the box (a region held out).

    Raises
    ------
    FootprintError
        With a one-line message for an unknown name, an unreadable or empty MOC, or a bad box.
    """
    spec = str(spec).strip()
    if not spec:
        raise FootprintError("footprint: empty specification")
    if "-box:" in spec.lower():  # A-box:...: footprint A without a box (e.g. a region held out of training)
        k = spec.lower().rindex("-box:")
        base = parse_footprint(spec[:k], order=order)
        cut = _parse_box(spec[k + 1 :])
        fp = Footprint(name=spec, moc=base.moc.difference(cut), order=order)
        if fp.moc.sky_fraction <= 0:
            raise FootprintError(f"footprint {spec!r}: the region is empty")
        return fp
    if spec.lower().startswith("box:"):
        name, moc = spec, _parse_box(spec)
    elif spec.lower() in NAMED:
        name, moc = spec.lower(), _load_moc_file(data_path(NAMED[spec.lower()]))
    elif spec.lower().endswith((".fits", ".fit", ".fits.gz")) or Path(spec).exists():
        name, moc = Path(spec).name, _load_moc_file(Path(spec))
    else:
        raise FootprintError(
            f"footprint {spec!r}: unknown name; use one of {', '.join(NAMED)}, a MOC FITS file, "
            "or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX"
        )
    if not (0 <= order <= 12):
        raise FootprintError(f"footprint {spec!r}: partition order {order} is outside 0..12")
    fp = Footprint(name=name, moc=moc, order=order)
    if fp.moc.sky_fraction <= 0:
        raise FootprintError(f"footprint {spec!r}: the region is empty")
    return fp


def partition_of(ra, dec, order: int = DEFAULT_PARTITION_ORDER) -> np.ndarray:
    """Nested HEALPix pixel at ``order`` of each position (degrees)."""
    import healpy as hp

    return np.asarray(hp.ang2pix(2**order, np.asarray(ra), np.asarray(dec), nest=True, lonlat=True), np.int64)
