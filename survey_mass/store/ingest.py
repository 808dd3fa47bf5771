"""Real-data ingest: SDSS corrected frames + a candidate catalog -> a cutout store.

SDSS corrected frames (``frame-{band}-{run}-{camcol}-{field}.fits[.bz2]``) hold one band of one field in
nanomaggies per pixel (``BUNIT = 'nanomaggy'``) with a TAN WCS in the primary header. For every candidate we
build a north-up, east-left TAN grid of ``cutout_size`` pixels of ``pixel_scale`` arcsec centred on it, and
resample each band onto it *flux-conservingly*: every native 0.396" pixel is mapped through the frame's WCS
onto the cutout grid and its flux summed into the cutout pixel its centre falls in. Frames overlap (SDSS fields
share 128 rows), so each frame's sums and pixel counts are combined as a mean surface brightness times the
cutout pixel's area; a candidate near a frame edge is thus mosaicked from its neighbours. Cutout pixels that
no frame covers well (fewer than half the expected native pixels) are NaN and the cutout's quality gets the
``EDGE`` / ``NAN_PIXELS`` bits; a band with no frame at all is ``MISSING_BAND``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IngestError
from ..photometry import BANDS, SDSS_PIXEL_SCALE
from ..quality import Quality, image_quality

FRAME_RE = re.compile(r"frame-([ugriz])-(\d+)-(\d+)-(\d+)\.fits(\.bz2|\.gz)?$")
MIN_COVERAGE = 0.5


@dataclass
class Frame:
    path: Path
    band: str
    wcs: object
    shape: tuple[int, int]  # (ny, nx)
    centre: np.ndarray  # unit vector of the frame centre
    radius_deg: float


def _unit(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def read_frame_header(path: Path) -> Frame:
    """Band, WCS and extent of one frame; a one-line IngestError for a frame that breaks the conventions."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(path, memmap=False) as hdul:
            hdr = hdul[0].header
            shape = hdul[0].data.shape if hdul[0].data is not None else None
    except Exception as exc:
        raise IngestError(
            f"frame {str(path)!r}: not a readable FITS file ({str(exc).splitlines()[0]})"
        ) from None
    if shape is None or len(shape) != 2:
        raise IngestError(f"frame {str(path)!r}: primary HDU holds no 2-D image")
    m = FRAME_RE.search(path.name)
    band = str(hdr.get("FILTER", m.group(1) if m else "")).strip()
    if band not in BANDS:
        raise IngestError(f"frame {str(path)!r}: band {band!r} (FILTER keyword) is not one of u, g, r, i, z")
    bunit = str(hdr.get("BUNIT", "")).strip().lower()
    if bunit not in ("nanomaggy", "nanomaggies", "nmgy"):
        raise IngestError(
            f"frame {str(path)!r}: BUNIT is {hdr.get('BUNIT')!r}, expected 'nanomaggy' (corrected frames)"
        )
    if "CTYPE1" not in hdr or "CTYPE2" not in hdr:
        raise IngestError(f"frame {str(path)!r}: no WCS (CTYPE1/CTYPE2 missing)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(hdr, naxis=2)
        except Exception as exc:
            raise IngestError(f"frame {str(path)!r}: bad WCS ({str(exc).splitlines()[0]})") from None
    if not wcs.has_celestial:
        raise IngestError(f"frame {str(path)!r}: the WCS is not celestial")
    ny, nx = shape
    corners = wcs.all_pix2world(
        np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1], [nx / 2, ny / 2]]), 0
    )
    vec = _unit(corners[:, 0], corners[:, 1])
    centre = vec[4]
    radius = float(np.degrees(np.arccos(np.clip(vec[:4] @ centre, -1, 1))).max())
    return Frame(path=path, band=band, wcs=wcs, shape=(ny, nx), centre=centre, radius_deg=radius)


def scan_frames(directory: str | Path) -> list[Frame]:
    d = Path(directory)
    if not d.is_dir():
        raise IngestError(f"frames {str(d)!r}: not a directory")
    files = sorted(
        p for p in d.iterdir() if p.name.lower().endswith((".fits", ".fits.bz2", ".fits.gz", ".fit"))
    )
    if not files:
        raise IngestError(f"frames {str(d)!r}: no FITS frames found")
    frames = [read_frame_header(p) for p in files]
    have = {f.band for f in frames}
    missing = [b for b in BANDS if b not in have]
    if missing:
        raise IngestError(
            f"frames {str(d)!r}: no frame for band(s) {', '.join(missing)}; SDSS cutouts need all of ugriz"
        )
    return frames


def cutout_wcs(ra: float, dec: float, size: int, pixel_scale: float):
    """North-up, east-left TAN WCS of a cutout centred on (ra, dec)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    return w


_DATA_CACHE: dict[Path, np.ndarray] = {}


def _frame_data(frame: Frame) -> np.ndarray:
    from astropy.io import fits

    if frame.path not in _DATA_CACHE:
        if len(_DATA_CACHE) > 64:
            _DATA_CACHE.clear()
        with fits.open(frame.path, memmap=False) as hdul:
            _DATA_CACHE[frame.path] = np.asarray(hdul[0].data, dtype=np.float32)
    return _DATA_CACHE[frame.path]


def resample(frames: list[Frame], ra: float, dec: float, size: int, pixel_scale: float) -> np.ndarray:
    """One band's cutout (H, W) from the frames that overlap it; NaN where no frame covers enough."""
    target = cutout_wcs(ra, dec, size, pixel_scale)
    flux = np.zeros((size, size))
    count = np.zeros((size, size))
    native_area = None
    half = size * pixel_scale / 2.0 / 3600.0 * 1.5
    for f in frames:
        # native pixel window that can reach the cutout
        cx, cy = f.wcs.all_world2pix([[ra, dec]], 0)[0]
        scale = float(np.sqrt(abs(np.linalg.det(f.wcs.pixel_scale_matrix)))) * 3600.0
        native_area = scale**2
        r = half * 3600.0 / scale
        x0, x1 = int(max(np.floor(cx - r), 0)), int(min(np.ceil(cx + r), f.shape[1] - 1))
        y0, y1 = int(max(np.floor(cy - r), 0)), int(min(np.ceil(cy + r), f.shape[0] - 1))
        if x0 > x1 or y0 > y1:
            continue
        data = _frame_data(f)[y0 : y1 + 1, x0 : x1 + 1]
        yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        wra, wdec = f.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
        tx, ty = target.all_world2pix(wra, wdec, 0)
        ix, iy = np.rint(tx).astype(int), np.rint(ty).astype(int)
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size) & np.isfinite(data.ravel())
        np.add.at(flux, (iy[ok], ix[ok]), data.ravel()[ok])
        np.add.at(count, (iy[ok], ix[ok]), 1.0)
    if native_area is None:
        return np.full((size, size), np.nan, np.float32)
    expected = pixel_scale**2 / native_area
    with np.errstate(invalid="ignore", divide="ignore"):
        out = flux / count * expected
    out[count < MIN_COVERAGE * expected] = np.nan
    return out.astype(np.float32)


def _near(frames: list[Frame], pos: np.ndarray, reach: float) -> np.ndarray:
    """(n_positions, n_frames) mask: the frame can reach a cutout centred on each position."""
    if not frames:
        return np.zeros((len(pos), 0), bool)
    centres = np.stack([f.centre for f in frames])
    radius = np.array([f.radius_deg for f in frames])
    out = np.zeros((len(pos), len(frames)), bool)
    for s in range(0, len(pos), 4096):  # bounded memory for big candidate lists
        ang = np.degrees(np.arccos(np.clip(pos[s : s + 4096] @ centres.T, -1, 1)))
        out[s : s + 4096] = ang < radius + reach
    return out


def _ingest_partition(
    out: str, pixel: int, cands, by_band: dict[str, list[Frame]], cutout_size: int, pixel_scale: float
) -> dict:
    """Cut one partition's candidates from the frames and write the partition (what every worker runs)."""
    from . import write_partition

    pos = _unit(cands["ra"].to_numpy(), cands["dec"].to_numpy())
    reach = cutout_size * pixel_scale / 3600.0 / np.sqrt(2)
    near = {b: _near(by_band[b], pos, reach) for b in BANDS}
    images, keep, quality = [], [], []
    for k in range(len(cands)):
        ra, dec = float(cands["ra"].iloc[k]), float(cands["dec"].iloc[k])
        stack, touched = [], False
        for b in BANDS:
            fr = [f for f, m in zip(by_band[b], near[b][k], strict=True) if m]
            touched |= bool(fr)
            stack.append(resample(fr, ra, dec, cutout_size, pixel_scale))
        if not touched:
            continue
        img = np.stack(stack)
        q = image_quality(img)
        if q & Quality.NAN_PIXELS:
            q |= Quality.EDGE
        if np.isnan(img).all():
            continue
        images.append(img)
        keep.append(k)
        quality.append(q)
    qual = np.asarray(quality, dtype=np.int32)
    if keep:
        sub = cands.iloc[keep].reset_index(drop=True)
        cols = {
            "id": sub["id"].to_numpy(),
            "name": sub["name"].to_numpy(),
            "ra": sub["ra"].to_numpy(),
            "dec": sub["dec"].to_numpy(),
            "z": sub["z"].to_numpy(),
            "quality": qual,
        }
        if "richness" in sub:
            cols["richness"] = sub["richness"].to_numpy()
        cols["log10_m500_label"] = (
            sub["log10_m500_label"].to_numpy(float)
            if "log10_m500_label" in sub
            else np.full(len(sub), np.nan)
        )
        write_partition(out, int(pixel), np.stack(images), cols)
    return {"pixel": int(pixel), "cutouts": len(keep), "flagged": int((qual != 0).sum())}


def ingest_frames(
    frames_dir: str | Path,
    candidates: str | Path,
    out: str | Path,
    *,
    cutout_size: int = 64,
    pixel_scale: float = 8 * SDSS_PIXEL_SCALE,
    order: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
    client=None,
) -> dict:
    """Cut every candidate covered by the frames into the store ``out``; returns a summary.

    One task per partition (:func:`survey_mass.engine.fan_out`): in this process by default, on a Dask
    cluster with ``workers > 1``, a ``scheduler`` or a ``client``. A rerun skips the partitions in the store.
    """
    from ..candidates import read_candidates
    from ..engine import Task, fan_out
    from ..footprint import partition_of
    from . import create_store, open_store
    from .cutouts import remove_temporaries, write_manifest

    t0 = time.perf_counter()
    frames = scan_frames(frames_dir)
    cands = read_candidates(candidates)
    create_store(
        out,
        cutout_size=cutout_size,
        pixel_scale_arcsec=pixel_scale,
        healpix_order=order,
        survey="SDSS DR12 (frames)",
        kind="ingest",
        footprint="frames",
        provenance={
            "frames_dir": str(Path(frames_dir).resolve()),
            "frames": [f.path.name for f in frames],
            "candidates": str(Path(candidates).resolve()),
        },
        overwrite=overwrite,
    )
    # the plan: candidates that some frame reaches, grouped by partition, each with the frames it needs
    pos = _unit(cands["ra"].to_numpy(), cands["dec"].to_numpy())
    reach = cutout_size * pixel_scale / 3600.0 / np.sqrt(2)
    reached = _near(frames, pos, reach)
    touched = reached.any(axis=1)
    sel = cands[touched]
    parts = partition_of(sel["ra"].to_numpy(), sel["dec"].to_numpy(), order) if len(sel) else np.zeros(0, int)
    reached = reached[touched]
    tasks = []
    for p in np.unique(parts):
        m = parts == p
        used = reached[m].any(axis=0)
        by_band = {b: [f for f, u in zip(frames, used, strict=True) if u and f.band == b] for b in BANDS}
        tasks.append(
            Task(int(p), int(m.sum()), (str(out), int(p), sel[m], by_band, cutout_size, pixel_scale))
        )
    store = open_store(out)
    done = set(store.partitions)
    res = fan_out(
        tasks,
        _ingest_partition,
        is_done=done.__contains__,
        workers=workers,
        scheduler=scheduler,
        client=client,
        device="cpu",
        progress=progress,
        desc="ingest",
        cleanup=lambda: remove_temporaries(out, order),
        key_prefix="ingest-partition",
    )
    counts = {r["pixel"]: (r["cutouts"], r["flagged"]) for r in res}
    for p in res.skipped:  # finished by an earlier run: count what the store holds
        counts[p] = (store.n_cutouts(p), int((np.asarray(store.columns(p)["quality"]) != 0).sum()))
    write_manifest(out)
    n_cut = sum(c for c, _ in counts.values())
    return {
        "store": str(out),
        "frames": len(frames),
        "cutouts": int(n_cut),
        "partitions": int(sum(c > 0 for c, _ in counts.values())),
        "flagged": int(sum(f for _, f in counts.values())),
        "outside": int(len(cands) - n_cut),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
