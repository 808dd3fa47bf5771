"""Real-data ingest: SDSS corrected frames + a candidate catalog -> a cutout store.

SDSS corrected frames (``frame-{band}-{run}-{camcol}-{field}.fits[.bz2]``) hold one band of one field in
nanomaggies per pixel (``BUNIT = 'nanomaggy'``) with a TAN WCS in the primary header. For every candidate we
build a north-up, east-left TAN grid of ``cutout_size`` pixels of ``pixel_scale`` arcsec centred on it, and
resample each band onto it *flux-conservingly*: every native 0.396" pixel is mapped through the frame's WCS
onto the cutout grid and its flux summed into the cutout pixel its centre falls in. Frames overlap (SDSS fields
share 128 rows): each cutout pixel takes the frame that covers most of it, so a candidate near a frame edge is
mosaicked from its neighbours. Cutout pixels that
no frame covers well (fewer than half the expected native pixels) are NaN and the cutout's quality gets the
``EDGE`` / ``NAN_PIXELS`` bits; a band with no frame at all is ``MISSING_BAND``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import IngestError
from ..photometry import BANDS
from ..quality import Quality, images_quality

if TYPE_CHECKING:
    from .frame_index import IndexedFrame

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


def _primary_header(path: Path):
    """The primary header, read block by block from the start of the (``.bz2``/``.gz`` compressed) file: only its
    first few kB are decompressed (astropy would decompress the whole frame, ~1 s for an SDSS frame)."""
    import bz2
    import gzip

    from astropy.io import fits

    name = path.name.lower()
    opener = bz2.open if name.endswith(".bz2") else gzip.open if name.endswith(".gz") else open
    blocks = []
    with opener(path, "rb") as fh:
        while True:
            block = fh.read(2880)
            if len(block) < 2880:
                raise OSError("the file ends inside its primary header")
            blocks.append(block)
            cards = [block[i : i + 80] for i in range(0, 2880, 80)]
            if any(c.startswith(b"END") and not c[3:].strip() for c in cards):
                break
            if len(blocks) > 200:
                raise OSError("no END card in the first 576 kB")
    return fits.Header.fromstring(b"".join(blocks).decode("ascii"))


def read_frame_header(path: Path) -> Frame:
    """Band, WCS and extent of one frame; a one-line IngestError for a frame that breaks the conventions."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    try:
        hdr = _primary_header(path)
        naxis = [int(hdr.get(f"NAXIS{i}", 0)) for i in (2, 1)] if hdr.get("NAXIS", 0) == 2 else []
        shape = tuple(naxis) if naxis and all(naxis) else None
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


def frame_files(directory: str | Path) -> list[Path]:
    """The FITS frames of a directory, sorted by name; IngestError when it is not a directory or holds none."""
    d = Path(directory)
    if not d.is_dir():
        raise IngestError(f"frames {str(d)!r}: not a directory")
    files = sorted(
        p for p in d.iterdir() if p.name.lower().endswith((".fits", ".fits.bz2", ".fits.gz", ".fit"))
    )
    if not files:
        raise IngestError(f"frames {str(d)!r}: no FITS frames found")
    seen: dict[str, Path] = {}
    for p in files:  # frame-r-001234-3-0100.fits and .fits.bz2: which holds the pixels is not ours to guess
        m = FRAME_RE.search(p.name.lower())
        if m is None:
            continue
        key = "-".join(m.groups()[:4])
        if key in seen:
            raise IngestError(
                f"frames {str(d)!r}: {seen[key].name} and {p.name} are two copies of one frame; keep one"
            )
        seen[key] = p
    return files


def scan_frames(directory: str | Path) -> list[Frame]:
    """Every frame's header (:func:`read_frame_header`), all five bands required."""
    frames = [read_frame_header(p) for p in frame_files(directory)]
    check_bands({f.band for f in frames}, directory)
    return frames


def check_bands(have: set[str], directory) -> None:
    missing = [b for b in BANDS if b not in have]
    if missing:
        raise IngestError(
            f"frames {str(directory)!r}: no frame for band(s) {', '.join(missing)}; SDSS cutouts need all of ugriz"
        )


def cutout_wcs(ra: float, dec: float, size: int, pixel_scale: float):
    """North-up, east-left TAN WCS of a cutout centred on (ra, dec)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2.0, (size + 1) / 2.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    return w


def read_frame_data(path: Path) -> np.ndarray:
    """A frame's pixels (float32), decompressing ``.bz2``/``.gz`` once; IngestError naming the file if unreadable."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)
    except Exception as exc:
        raise IngestError(
            f"frame {str(path)!r}: cannot read its pixels ({str(exc).splitlines()[0]})"
        ) from None


#: largest error (cutout pixels) allowed of the affine map from frame to cutout pixels; beyond it every pixel is
#: mapped through both WCSs
AFFINE_TOLERANCE = 1e-3


def frame_to_cutout(frame_wcs, target, x: np.ndarray, y: np.ndarray, box: tuple[int, int, int, int]):
    """Cutout pixel coordinates of frame pixels (x, y) inside ``box`` (x0, x1, y0, y1).

    Over a cutout's few arcminutes both TAN projections are affine to far below a pixel, so the map is fitted on
    a 5 x 5 grid of the box through the two WCSs and applied to every pixel (about 100 times faster than mapping
    each native pixel through astropy); where the fit misses the grid by more than :data:`AFFINE_TOLERANCE`
    (a frame with strong distortion terms), every pixel goes through the WCSs."""
    x0, x1, y0, y1 = box
    gx, gy = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    gx, gy = gx.ravel(), gy.ravel()
    wra, wdec = frame_wcs.all_pix2world(gx, gy, 0)
    gtx, gty = target.all_world2pix(wra, wdec, 0)
    design = np.stack([np.ones_like(gx), gx, gy], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack([gtx, gty], axis=1), rcond=None)
    if np.abs(design @ coef - np.stack([gtx, gty], axis=1)).max() > AFFINE_TOLERANCE:
        wra, wdec = frame_wcs.all_pix2world(x, y, 0)
        return target.all_world2pix(wra, wdec, 0)
    return coef[0, 0] + coef[1, 0] * x + coef[2, 0] * y, coef[0, 1] + coef[1, 1] * x + coef[2, 1] * y


class CutoutSums:
    """Flux sums and native-pixel counts of N cutouts x 5 bands, accumulated frame by frame, so that each frame is
    read (and decompressed) once for all the cutouts it reaches. Each cutout pixel keeps the frame that covers
    most of it; :meth:`images` scales its flux by the expected over the mapped native pixel count."""

    def __init__(self, n: int, size: int, pixel_scale: float):
        self.size, self.pixel_scale = size, pixel_scale
        self.flux = np.zeros((n, len(BANDS), size, size))
        self.count = np.zeros((n, len(BANDS), size, size))
        self.native_area = np.full(len(BANDS), np.nan)
        self.touched = np.zeros((n, len(BANDS)), bool)

    def add(self, k: int, frame: Frame, data: np.ndarray, ra: float, dec: float) -> None:
        """Map the native pixels of ``frame`` that can reach cutout ``k`` (centred on ra, dec) onto its grid."""
        b = BANDS.index(frame.band)
        size, ps = self.size, self.pixel_scale
        scale = float(np.sqrt(abs(np.linalg.det(frame.wcs.pixel_scale_matrix)))) * 3600.0
        self.native_area[b] = scale**2
        self.touched[k, b] = True
        target = cutout_wcs(ra, dec, size, ps)
        # the native pixels that can land on the cutout: the bounding box of its corners in the frame
        edge = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
        cra, cdec = target.all_pix2world(edge[:, 0], edge[:, 1], 0)
        fx, fy = frame.wcs.all_world2pix(cra, cdec, 0)
        x0, x1 = int(max(np.floor(fx.min()), 0)), int(min(np.ceil(fx.max()), frame.shape[1] - 1))
        y0, y1 = int(max(np.floor(fy.min()), 0)), int(min(np.ceil(fy.max()), frame.shape[0] - 1))
        if x0 > x1 or y0 > y1:
            return
        pix = data[y0 : y1 + 1, x0 : x1 + 1].ravel()
        yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        tx, ty = frame_to_cutout(frame.wcs, target, xx.ravel(), yy.ravel(), (x0, x1, y0, y1))
        ix, iy = np.rint(tx).astype(int), np.rint(ty).astype(int)
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size) & np.isfinite(pix)
        cell = iy[ok] * size + ix[ok]
        flux = np.bincount(cell, weights=pix[ok], minlength=size * size).reshape(size, size)
        count = np.bincount(cell, minlength=size * size).reshape(size, size).astype(float)
        # where frames overlap, each cutout pixel keeps the frame that covers most of it: a pixel cut by a
        # frame's edge would otherwise mix a whole source from one frame with part of the area of another
        better = count > self.count[k, b]
        self.flux[k, b][better] = flux[better]
        self.count[k, b][better] = count[better]

    def images(self) -> np.ndarray:
        """(N, 5, H, W) float32 nanomaggies per cutout pixel; NaN where no frame covers half the native pixels."""
        expected = (self.pixel_scale**2 / self.native_area)[None, :, None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.flux / self.count * expected
        out[~(self.count >= MIN_COVERAGE * expected)] = np.nan
        return out.astype(np.float32)


def resample(frames: list[Frame], ra: float, dec: float, size: int, pixel_scale: float) -> np.ndarray:
    """One band's cutout (H, W) from the frames that overlap it; NaN where no frame covers enough."""
    sums = CutoutSums(1, size, pixel_scale)
    for f in frames:
        sums.add(0, f, read_frame_data(f.path), ra, dec)
    b = BANDS.index(frames[0].band) if frames else 0
    return sums.images()[0, b] if frames else np.full((size, size), np.nan, np.float32)


def _near(centres: np.ndarray, radius: np.ndarray, pos: np.ndarray, reach: float) -> np.ndarray:
    """(n_positions, n_frames) mask: the frame (centre unit vectors, radii in degrees) can reach a cutout centred on
    each position."""
    out = np.zeros((len(pos), len(centres)), bool)
    if not len(centres):
        return out
    for s in range(0, len(pos), 4096):  # bounded memory for big candidate lists
        ang = np.degrees(np.arccos(np.clip(pos[s : s + 4096] @ centres.T, -1, 1)))
        out[s : s + 4096] = ang < radius + reach
    return out


def _candidate_columns(sub, quality: np.ndarray) -> dict[str, np.ndarray]:
    cols = {
        "id": sub["id"].to_numpy(),
        "name": sub["name"].to_numpy(),
        "ra": sub["ra"].to_numpy(),
        "dec": sub["dec"].to_numpy(),
        "z": sub["z"].to_numpy(),
        "quality": quality,
    }
    for opt in ("richness", "bcg_mag_i"):
        if opt in sub:
            cols[opt] = sub[opt].to_numpy()
    cols["log10_m500_label"] = (
        sub["log10_m500_label"].to_numpy(float) if "log10_m500_label" in sub else np.full(len(sub), np.nan)
    )
    for extra in ("log10_m500_true",):
        if extra in sub:
            cols[extra] = sub[extra].to_numpy(float)
    return cols


def frames_digest(frames: list[IndexedFrame], candidates) -> str:
    """What a partition is built from: its frames (name, size, modification time) and its candidates' rows
    (every column the store takes from them: a corrected redshift or position at the same id is another
    source)."""
    import hashlib

    rows = candidates.sort_values("id")
    key = "|".join(sorted(f.stamp for f in frames)) + "#" + rows.to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _ingest_partition(
    out: str, pixel: int, cands, frames: list[IndexedFrame], cutout_size: int, pixel_scale: float
) -> dict:
    """Cut one partition's candidates from the frames that reach them and write the partition atomically (what
    every worker runs). Frame by frame: each is read and decompressed once, its pixels added to every cutout it
    reaches, and dropped; memory holds the partition's cutouts and one frame."""
    from . import write_partition

    n = len(cands)
    ra, dec = cands["ra"].to_numpy(float), cands["dec"].to_numpy(float)
    reach = cutout_size * pixel_scale / 3600.0 / np.sqrt(2)
    centres = np.stack([f.centre for f in frames]) if frames else np.zeros((0, 3))
    near = _near(centres, np.array([f.radius_deg for f in frames]), _unit(ra, dec), reach)
    sums = CutoutSums(n, cutout_size, pixel_scale)
    for j, rec in enumerate(frames):
        rows = np.flatnonzero(near[:, j])
        if not rows.size:
            continue
        frame, data = rec.frame(), read_frame_data(rec.path)
        for k in rows:
            sums.add(int(k), frame, data, float(ra[k]), float(dec[k]))
        del data
    images = sums.images()
    keep = np.flatnonzero(sums.touched.any(axis=1) & ~np.isnan(images).reshape(n, -1).all(axis=1))
    quality = images_quality(images[keep])
    quality = np.where(quality & Quality.NAN_PIXELS, quality | Quality.EDGE, quality).astype(np.int32)
    if keep.size:
        sub = cands.iloc[keep].reset_index(drop=True)
        digest = frames_digest(frames, cands)
        write_partition(
            out, int(pixel), images[keep], _candidate_columns(sub, quality), attrs={"frames_digest": digest}
        )
    return {"pixel": int(pixel), "cutouts": int(keep.size), "flagged": int((quality != 0).sum())}


def model_geometry(model: str | Path | None = None) -> tuple[int, float]:
    """(cutout_size, pixel_scale_arcsec) a model takes (its card's ``input``; the shipped model by default)."""
    from ..models.bundle import read_model_card
    from ..resources import model_dir

    card = read_model_card(Path(model) if model else model_dir())
    return int(card.input.cutout_size), float(card.input.pixel_scale_arcsec)


def store_geometry(
    model: str | Path | None, cutout_size: int | None, pixel_scale: float | None
) -> tuple[int, float]:
    """The store's geometry: the model's, and a given size or scale must equal it (IngestError naming both)."""
    size, scale = model_geometry(model)
    which = f"model {str(model)!r}" if model else "the shipped model"
    if cutout_size is not None and int(cutout_size) != size:
        raise IngestError(
            f"cutout size {cutout_size} px does not match {which}'s {size} px; the store's geometry comes from "
            "the model that will run on it (leave --cutout-size out, or give --model)"
        )
    if pixel_scale is not None and abs(float(pixel_scale) - scale) > 1e-6:
        raise IngestError(
            f"pixel scale {pixel_scale}\" does not match {which}'s {scale}\"; the store's geometry comes from "
            "the model that will run on it (leave --pixel-scale out, or give --model)"
        )
    return size, scale


def ingest_frames(
    frames_dir: str | Path,
    candidates: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    cutout_size: int | None = None,
    pixel_scale: float | None = None,
    order: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    scheduler: str | None = None,
    client=None,
) -> dict:
    """Cut every candidate covered by the frames into the store ``out``; returns a summary.

    1. The frame index (:func:`~survey_mass.store.frame_index.frame_index`): every frame's header and HEALPix
       cells, cached as Parquet beside the store and refreshed for frames added or changed since.
    2. The plan: the candidates some frame reaches, by partition, each partition with the frames its cutouts
       touch (through the cells).
    3. One task per partition (:func:`survey_mass.engine.fan_out`): in this process by default, on a Dask cluster
       with ``workers > 1``, a ``scheduler`` or a ``client``. Partitions are written atomically; a rerun skips
       those in the store, and the temporaries of a killed run are removed.

    The geometry is the model's (:func:`store_geometry`).
    """
    from ..candidates import read_candidates
    from ..engine import Task, fan_out
    from ..footprint import partition_of
    from ..storage import as_path, display
    from . import create_store, open_store
    from .cutouts import remove_temporaries, write_manifest
    from .frame_index import frame_index, frames_reaching

    t0 = time.perf_counter()
    cutout_size, pixel_scale = store_geometry(model, cutout_size, pixel_scale)
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
            "frames_dir": display(frames_dir),
            "candidates": display(candidates),
        },
        overwrite=overwrite,
    )
    named = [FRAME_RE.search(p.name) for p in frame_files(frames_dir)]
    if all(named):  # SDSS names tell the bands before any header is read
        check_bands({m.group(1) for m in named}, frames_dir)
    index = frame_index(frames_dir, out, progress=progress)
    check_bands({f.band for f in index.frames}, frames_dir)
    reach = cutout_size * pixel_scale / 3600.0 / np.sqrt(2)
    per_cand = frames_reaching(index, cands["ra"].to_numpy(float), cands["dec"].to_numpy(float), reach)
    touched = np.array([bool(f) for f in per_cand])
    sel = cands[touched]
    parts = partition_of(sel["ra"].to_numpy(), sel["dec"].to_numpy(), order) if len(sel) else np.zeros(0, int)
    used = [per_cand[i] for i in np.flatnonzero(touched)]
    tasks = []
    for p in np.unique(parts):
        m = np.flatnonzero(parts == p)
        ids = sorted(set().union(*(used[i] for i in m)))
        recs = [index.frames[i] for i in ids]
        tasks.append(
            Task(int(p), int(m.size), (as_path(out), int(p), sel.iloc[m], recs, cutout_size, pixel_scale))
        )
    store = open_store(out)
    done = set(store.partitions)
    digests = {t.pixel: frames_digest(t.args[3], t.args[2]) for t in tasks}

    def is_done(p: int) -> bool:
        # a partition is done when it was built from the same frames and candidates: added, replaced or
        # removed frames (or candidates) make it be cut again
        return p in done and store.partition_attrs(p).get("frames_digest") == digests[p]

    res = fan_out(
        tasks,
        _ingest_partition,
        is_done=is_done,
        workers=workers,
        scheduler=scheduler,
        client=client,
        device="cpu",
        progress=progress,
        desc="ingest",
        unit="part",
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
        "frames": len(index.frames),
        "frames_indexed": index.read,
        "frame_index_reused": index.reused,
        "cutouts": int(n_cut),
        "partitions": int(sum(c > 0 for c, _ in counts.values())),
        "partitions_skipped": len(res.skipped),
        "flagged": int(sum(f for _, f in counts.values())),
        "outside": int(len(cands) - n_cut),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
