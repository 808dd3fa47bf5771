"""The frame index: every SDSS frame's band, WCS and footprint as HEALPix cells, built once from the headers and
cached as Parquet beside the store (:func:`survey_mass.paths.frame_index_file`).

A rerun reads only the headers of frames added or changed since (by name, size and modification time) and drops
the rows of frames gone, so that a survey directory of 938,046 fields x 5 bands is scanned once. Planning then
needs no FITS file: a candidate's cutout reaches the frames whose cells meet the cells of its disc
(:func:`frames_reaching`), and each partition task reads only those frames' pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: HEALPix order of the frames' footprints: cells of 3.4', a quarter of an SDSS field's short side
INDEX_ORDER = 10


@dataclass(frozen=True)
class IndexedFrame:
    """One row of the index: what a partition task needs to read a frame (its WCS travels as header text)."""

    path: Path
    band: str
    shape: tuple[int, int]  # (ny, nx)
    wcs_header: str
    centre: np.ndarray  # unit vector of the frame's centre
    radius_deg: float
    #: name, size and modification time: what a partition built from this frame records
    stamp: str = ""

    def frame(self):
        """The :class:`~survey_mass.store.ingest.Frame` (WCS rebuilt from the header text, no file read)."""
        import warnings

        from astropy.io import fits
        from astropy.wcs import WCS, FITSFixedWarning

        from .ingest import Frame

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(fits.Header.fromstring(self.wcs_header), naxis=2)
        return Frame(self.path, self.band, wcs, self.shape, self.centre, self.radius_deg)


@dataclass
class FrameIndex:
    frames: list[IndexedFrame]
    #: frame id -> its HEALPix cells at :data:`INDEX_ORDER`
    cells: list[np.ndarray]
    path: Path
    #: headers read by this call, and rows reused from the cached index
    read: int
    reused: int


def _cells(frame) -> np.ndarray:
    """Nested HEALPix cells at :data:`INDEX_ORDER` that the frame's footprint (its four corners) covers."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from mocpy import MOC

    ny, nx = frame.shape
    corners = frame.wcs.all_pix2world(np.array([[0, 0], [nx - 1, 0], [nx - 1, ny - 1], [0, ny - 1]]), 0)
    moc = MOC.from_polygon_skycoord(
        SkyCoord(corners[:, 0] * u.deg, corners[:, 1] * u.deg), max_depth=INDEX_ORDER
    )
    return np.asarray(moc.flatten(), np.int64)


def _row(path: Path, stat: os.stat_result) -> dict:
    from .ingest import read_frame_header

    f = read_frame_header(path)
    return {
        "name": path.name,
        "size": int(stat.st_size),
        "mtime_ns": int(stat.st_mtime_ns),
        "band": f.band,
        "ny": int(f.shape[0]),
        "nx": int(f.shape[1]),
        "wcs_header": f.wcs.to_header_string(relax=True),
        "cx": float(f.centre[0]),
        "cy": float(f.centre[1]),
        "cz": float(f.centre[2]),
        "radius_deg": float(f.radius_deg),
        "cells": _cells(f),
    }


def frame_index(frames_dir: str | Path, store: str | Path, *, progress: bool = True) -> FrameIndex:
    """The index of ``frames_dir``: the cached one beside ``store``, refreshed for frames added, changed or
    removed, written back atomically when anything changed."""
    import io

    import pandas as pd

    from ..paths import frame_index_file, frame_temp_file
    from ..progress import bar
    from ..storage import write_bytes
    from .ingest import frame_files

    d = Path(frames_dir)
    files = frame_files(d)
    stats = {p.name: p.stat() for p in files}
    target = frame_index_file(store)
    old = pd.read_parquet(io.BytesIO(target.read_bytes())) if target.is_file() else None
    keep = [
        r
        for r in ([] if old is None else old.to_dict("records"))
        if r["name"] in stats
        and stats[r["name"]].st_size == r["size"]
        and stats[r["name"]].st_mtime_ns == r["mtime_ns"]
    ]
    have = {r["name"] for r in keep}
    new = [p for p in files if p.name not in have]
    rows = list(keep)
    # a bar only where reading headers takes a while (a survey directory, not a handful of frames)
    b = bar(len(new), "frame index", enabled=progress and len(new) >= 100, unit="frame")
    for p in new:
        rows.append(_row(p, stats[p.name]))
        b.update(1)
    b.close()
    rows.sort(key=lambda r: r["name"])
    if new or old is None or len(keep) != len(old):
        table = pd.DataFrame(rows)
        table["cells"] = table["cells"].map(lambda c: np.asarray(c, np.int64))
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        write_bytes(target, buf.getvalue(), temp=frame_temp_file(target))  # a temporary renamed, or one PUT
    frames = [
        IndexedFrame(
            path=d / r["name"],
            band=r["band"],
            shape=(int(r["ny"]), int(r["nx"])),
            wcs_header=r["wcs_header"],
            centre=np.array([r["cx"], r["cy"], r["cz"]]),
            radius_deg=float(r["radius_deg"]),
            stamp=f"{r['name']}:{int(r['size'])}:{int(r['mtime_ns'])}",
        )
        for r in rows
    ]
    cells = [np.asarray(r["cells"], np.int64) for r in rows]
    return FrameIndex(frames, cells, target, read=len(new), reused=len(keep))


def frames_reaching(index: FrameIndex, ra: np.ndarray, dec: np.ndarray, reach_deg: float) -> list[set[int]]:
    """For each position, the ids of the frames whose cells meet the cells of a disc of ``reach_deg`` (plus one
    cell's diagonal, so that a frame's partly covered edge cells are never missed) around it."""
    import healpy as hp

    by_cell: dict[int, list[int]] = {}
    for j, cs in enumerate(index.cells):
        for c in cs.tolist():
            by_cell.setdefault(c, []).append(j)
    nside = 2**INDEX_ORDER
    pad = np.radians(reach_deg) + 2 * hp.nside2resol(nside)
    vec = hp.ang2vec(np.asarray(ra, float), np.asarray(dec, float), lonlat=True).reshape(-1, 3)
    out = []
    for v in vec:
        found: set[int] = set()
        for c in hp.query_disc(nside, v, pad, inclusive=True, nest=True).tolist():
            found.update(by_cell.get(c, ()))
        out.append(found)
    return out
