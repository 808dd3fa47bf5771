"""The richness baseline's source detection, batched in torch: :func:`detect` of :mod:`.richness` for many cutouts at
once, on any torch device, and the baseline's lambda-hat and cluster significance from it (:func:`richness_batch`).

:func:`~.richness.detect` calls sep (Source Extractor as a library) on one cutout at a time (~1.2 ms per 64x64
cutout on one core). :func:`detect_batch` computes the same source list with tensor operations over a batch. What
sep does, step by step, and what this module does instead:

1. **Background and noise.** As :func:`~.richness.detect`: the i band's median and MAD sigma (1.4826 MAD), exactly
   (numpy's median of an even count: the mean of the two middle values).
2. **Filter and threshold.** sep convolves with its default 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]] normalised to sum 1
   (zero beyond the edges). With a scalar ``err`` sep does *not* use its matched filter (that needs a noise array):
   it falls back to plain convolution and thresholds the filtered image at DETECT_SIGMA x sigma of the *unfiltered*
   image. Same here (float32, as sep's PIXTYPE).
3. **Segmentation.** sep's Lutz pass finds the 8-connected groups of pixels above threshold, keeping those of at
   least MIN_AREA pixels. Here every above-threshold pixel climbs (steepest ascent, 3x3) to its local maximum of
   the filtered image, by pointer jumping; the basins so found, joined by the passes between adjacent basins, are
   sep's groups (8-connected).
4. **Deblending.** sep cuts each group at 32 levels spaced exponentially from the threshold to the group's peak,
   builds the tree of branches (connected pieces above each level of at least 3 pixels), and splits a node when
   two or more of its children hold more than deblend_cont = 0.005 of the group's filtered flux above their level;
   the pieces that split and do not split again become objects. Here the tree is computed, not searched: within a
   group, the widest path (max-min closure) between every pair of basins gives the level at which they join, so a
   branch at level t is the set of basins joined above t, and its pixel count and flux come from per-basin tables
   of the pixels above each level. The split and "no split below" rules are evaluated for all levels at once.
   This reproduces sep's deblending exactly (same objects, same positions) up to float rounding.
5. **Gathering.** sep hands each remaining (faint) pixel of a deblended group to one of its objects at random,
   with probability in proportion to each object's Gaussian profile there, drawing from ``rand_r`` seeded 1 for
   every image. Here the same draws are replayed (glibc's ``rand_r`` sequence, in the order sep consumes it:
   groups as Lutz completes them, pixels in list order) in sep's float32 arithmetic. This only feeds step 6:
   positions do not depend on it.
6. **Cleaning.** sep drops an object where a brighter one's extrapolated Moffat-like profile stands above the
   object's "mthresh" (nominally its 4th-highest filtered pixel above threshold; in fact what sep's heap, which
   sifts only one level, leaves on top: see :func:`_mthresh`). sep walks its object list in order and an object
   already eaten eats no more; replayed here pair by pair in that order. The orders are Lutz's: an object's pixel
   list (:func:`_lutz_order`, exact for objects with one segment per row), the groups as Lutz completes them (by
   last row, then where it ends), a deblended group's objects deepest level first.
7. **Positions** are sep's: the filtered-flux-weighted barycentre of the object's pixels (of its branch, for a
   deblended one).
8. **Photometry.** ``sep.sum_circle`` of radius APERTURE_PIX in g, r and i, each band minus its own median, read
   as float32 as sep reads them, with sep's sub-pixel rule (pixels whose centre is within r -/+ 0.7072 of the
   circle's edge are sampled on a 5x5 grid, the others count fully or not at all), the grid counted per sub-row in
   closed form; magnitudes as :func:`~survey_mass.photometry.nmgy_to_mag`.

Steps 1-4, 7 and 8 are exact (up to float rounding); steps 5 and 6 follow sep's orders as far as they can be told
from the pixels, and the few objects where they guess wrong are the only differences. Measured on the 2,464
cutouts of the benchmark mock (``benchmarks/detection_validation.py``, ``benchmarks/results/
detection_validation.md``): before cleaning, every one of sep's 115,635 objects at sep's position (to 1e-6
pixel) and none else; after it, 99.99% of sep's 106,993 sources and 8 fewer (22 cutouts differ), and
lambda-hat is sep's in 2,463 of the 2,464 cutouts. One CPU thread: ~0.8 ms per cutout against sep's ~1.3.

Other differences: sep raises (and :func:`~.richness.detect` returns no sources) on an image it cannot deblend
(more than 1024 sub-objects); here an image with a group of 1024 peaks or more gets no sources, and nothing else
raises. On a GPU, float atomics may reorder sums (last-bit differences).

The pixels are taken as float32 (the store's dtype; sep detects on float32 too); the sky, positions and photometry
are computed in float64. Results on one device do not depend on the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..photometry import ZEROPOINT_NMGY
from .richness import (
    APERTURE_PIX,
    COLOUR_HALF_WIDTH,
    DETECT_DM,
    DETECT_SIGMA,
    DETECT_SIGMA_GR_BLUE,
    DETECT_SIGMA_RI,
    FIELD_RHO1,
    FIELD_RHO2,
    MIN_AREA,
    NO_CLUSTER_Z_MAX,
    Z_GRID,
    Z_SWITCH,
    RichnessBaseline,
    _radial_weight,
    red_sequence_table,
)

#: sep.extract's defaults that :func:`~.richness.detect` keeps: deblending levels and contrast, cleaning parameter
DEBLEND_NTHRESH = 32
DEBLEND_CONT = 0.005
CLEAN_PARAM = 1.0
#: sep's constants: minimum pixels of a branch while deblending (min(minarea, MAXDEBAREA = 3)) and the cleaning
#: zone (CLEAN_ZONE, in units of the two objects' summed semi-major axes)
DEBLEND_MINAREA = min(MIN_AREA, 3)
CLEAN_ZONE = 10.0
#: sep's limit on sub-objects per deblending level (sep.get_sub_object_limit())
SUB_OBJECT_LIMIT = 1024
#: cutouts per internal chunk on the CPU (measured best: small allocations are reused) and on other devices
BATCH_SIZE = {"cpu": 128, "other": 2048}


@dataclass
class Sources:
    """Sources of N cutouts, padded to K = the most sources in one cutout: (N, K) float64 tensors of pixel x, y
    (sep's convention: pixel centres at integers) and aperture magnitudes in g, r, i (NaN without flux), and the
    (N, K) bool mask ``valid`` of real entries (padding is NaN)."""

    x: torch.Tensor
    y: torch.Tensor
    mag_g: torch.Tensor
    mag_r: torch.Tensor
    mag_i: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def row(self, k: int) -> dict[str, np.ndarray]:
        """Cutout ``k``'s sources as :func:`~.richness.detect` gives them (numpy arrays x, y, mag_g, mag_r, mag_i)."""
        v = self.valid[k].cpu().numpy()
        return {
            name: getattr(self, name)[k].cpu().numpy()[v] for name in ("x", "y", "mag_g", "mag_r", "mag_i")
        }

    def numpy(self) -> dict[str, np.ndarray]:
        """All fields as (N, K) numpy arrays."""
        return {f: getattr(self, f).cpu().numpy() for f in ("x", "y", "mag_g", "mag_r", "mag_i", "valid")}


# --- small helpers ----------------------------------------------------------------------------------------------


def _median(v: torch.Tensor) -> torch.Tensor:
    """numpy's median along the last axis, float64 (for an even count the mean of the two middle values)."""
    m = v.shape[-1]
    low = v.topk(m // 2 + 1, dim=-1, largest=False, sorted=False).values
    if m % 2:
        return low.amax(-1).double()
    two = low.topk(2, dim=-1).values
    return (two[..., 0].double() + two[..., 1].double()) / 2


def _full(n: int, fill, dtype, dev, cols: int | None = None) -> torch.Tensor:
    return torch.full((n,) if cols is None else (n, cols), fill, dtype=dtype, device=dev)


# --- sep's analyse(), analysemthresh() and clean() --------------------------------------------------------------


def _shapes(oid, nobj, x, y, cd, raw, cx, cy, thresh) -> dict[str, torch.Tensor]:
    """sep's analyse() of objects given as pixel sets: ``oid`` (P,) the object of each pixel, moments about
    (cx, cy) (sep's barycentre, or the earlier one of a deblended object), ``thresh`` the object's threshold.
    Returns what gathering and cleaning use: npix, fdflux, fdpeak, a, b, cxx, cyy, cxy, abcor."""
    dev = cd.device
    c = cd.double()
    dx = x - cx[oid]
    dy = y - cy[oid]
    s = _full(nobj, 0.0, torch.float64, dev, 5).index_add_(
        0, oid, torch.stack([torch.ones_like(c), c, c * dx * dx, c * dy * dy, c * dx * dy], 1)
    )
    npix, rv = s[:, 0], s[:, 1].float().double()
    dpeak = _full(nobj, float("-inf"), torch.float32, dev).scatter_reduce(0, oid, raw, "amax")
    fdpeak = _full(nobj, float("-inf"), torch.float32, dev).scatter_reduce(0, oid, cd, "amax")
    dnpix = _full(nobj, 0.0, torch.float64, dev).index_add_(0, oid, (raw > thresh[oid]).double())
    thresh2 = (thresh.double() + dpeak.double()) / 2
    area2 = _full(nobj, 0.0, torch.float64, dev).index_add_(0, oid, (raw.double() > thresh2[oid]).double())
    xm2, ym2, xym = s[:, 2] / rv, s[:, 3] / rv, s[:, 4] / rv
    singular = xm2 * ym2 - xym * xym < 0.00694
    xm2 = torch.where(singular, xm2 + 0.0833333, xm2)
    ym2 = torch.where(singular, ym2 + 0.0833333, ym2)
    det = xm2 * ym2 - xym * xym
    half = torch.sqrt(0.25 * (xm2 - ym2) ** 2 + xym * xym)
    a = torch.sqrt(0.5 * (xm2 + ym2) + half).float().double()
    b = torch.sqrt((0.5 * (xm2 + ym2) - half).clamp_min(0)).float().double()
    t1t2 = thresh.double() / thresh2
    darea = area2 - dnpix
    lg = torch.log(torch.where(t1t2 < 1.0, t1t2, torch.full_like(t1t2, 0.99)))
    abcor = torch.where(darea < 0, darea, -1.0) / (2 * math.pi * lg * a * b)
    abcor = torch.where(t1t2 > 0, abcor.clamp(max=1.0), 1.0)
    f32 = torch.float32
    return {
        "npix": npix,
        "fdflux": rv,
        "fdpeak": fdpeak.double(),
        "a": a,
        "b": b,
        "cxx": (ym2 / det).to(f32).double(),
        "cyy": (xm2 / det).to(f32).double(),
        "cxy": (-2 * xym / det).to(f32).double(),
        "abcor": abcor,
    }


def _rand_r_table(n: int) -> np.ndarray:
    """The first ``n`` values of glibc's rand_r from seed 1 (sep reseeds it to 1 for every image)."""
    out = np.empty(n, np.int64)
    seed = 1
    for k in range(n):
        nxt = (seed * 1103515245 + 12345) & 0xFFFFFFFF
        r = (nxt >> 16) % 2048
        nxt = (nxt * 1103515245 + 12345) & 0xFFFFFFFF
        r = (r << 10) ^ ((nxt >> 16) % 1024)
        nxt = (nxt * 1103515245 + 12345) & 0xFFFFFFFF
        r = (r << 10) ^ ((nxt >> 16) % 1024)
        seed = nxt
        out[k] = r
    return out


_RAND: dict[str, torch.Tensor] = {}


def _rand_r(n: int, dev) -> torch.Tensor:
    """At least ``n`` rand_r draws from seed 1, as float32 (sep multiplies them as floats) on ``dev``."""
    key = str(dev)
    if key not in _RAND or _RAND[key].numel() < n:
        _RAND[key] = torch.from_numpy(_rand_r_table(max(n, 8192)).astype(np.float32)).to(dev)
    return _RAND[key]


def _gather(db, s1, thr0, pc, pimg, ppix, rp, npk, h, w, group_list, group_key) -> torch.Tensor:
    """sep's gatherup(): the deblended object (index into ``db``) each faint pixel ``rp`` of a split group goes to.

    sep walks the group's pixel list; for a pixel outside every branch it accumulates p_i = sum_{j <= i} amp_j
    exp(-dist_j) over the group's objects in their list order and takes the first i with p_i >= p_total u, u from
    rand_r (one draw per pixel, the draws running on through the image's groups in the order Lutz completes
    them), the nearest object when no p is positive. Replayed here in float32 as sep computes it; the orders are
    Lutz's (:func:`_lutz_order`; objects: deepest level first, then as Lutz completes their branches)."""
    dev = pc.device
    nd = db["comp"].numel()
    hw = h * w
    f32 = torch.float32
    # the objects of each group in sep's order
    cnt = torch.bincount(db["comp"], minlength=npk)
    table = _full(npk * int(cnt.max()), -1, torch.long, dev).reshape(npk, -1)
    table[db["comp"], db["slot"]] = torch.arange(nd, device=dev)
    cand = table[pc[rp]]  # (R, objects of the pixel's group, in sep's order)
    cc = cand.clamp_min(0)
    # amp_i = thresh exp(npix / (2 pi abcor a b)), at most 4 fdpeak (float32, as sep)
    d0 = (s1["npix"] / (2 * math.pi * s1["abcor"] * s1["a"] * s1["b"])).to(f32)
    amp = torch.where(d0 < 70, thr0 * torch.exp(d0.clamp(max=70)), (4 * s1["fdpeak"]).to(f32))
    amp = torch.minimum(amp, (4 * s1["fdpeak"]).to(f32))
    ddx = (ppix[rp] % w).double()[:, None] - db["x"][cc]
    ddy = (ppix[rp] // w).double()[:, None] - db["y"][cc]
    ddx, ddy = ddx.to(f32).double(), ddy.to(f32).double()
    q = s1["cxx"][cc] * ddx * ddx + s1["cyy"][cc] * ddy * ddy + s1["cxy"][cc] * ddx * ddy
    dist = torch.where(cand >= 0, 0.5 * q / s1["abcor"][cc], float("inf")).to(f32)
    term = torch.where(dist < 70, amp[cc] * torch.exp(-dist.clamp(max=70)), 0.0)
    p = torch.zeros_like(term)
    acc = torch.zeros(rp.numel(), dtype=f32, device=dev)
    for j in range(term.shape[1]):  # float32 running sums, as sep
        acc = acc + term[:, j]
        p[:, j] = acc
    nearest = dist.argmin(1)
    draws = acc.double() > 1.0e-31
    # the draw each pixel gets: groups in Lutz's completion order, pixels in list order
    key = (pimg[rp] * (hw + w) + group_key[pc[rp]]) * (2 * hw) + group_list[rp]
    o = torch.argsort(key)
    n_img = int(pimg.max()) + 1
    drawn = torch.zeros(rp.numel(), dtype=torch.long, device=dev)
    dro = draws[o].long()
    run = torch.cumsum(dro, 0) - dro  # draws before each pixel, over the chunk
    img_o = pimg[rp][o]
    first = _full(n_img, 0, torch.long, dev).scatter_reduce(0, img_o, run, "amin", include_self=False)
    drawn[o] = run - first[img_o]
    rnd = _rand_r(int(drawn.max()) + 1, dev)[drawn]
    u = acc * rnd / torch.tensor(2147483648.0, dtype=f32, device=dev)
    hit = (p >= u[:, None]) & (cand >= 0)
    pick = torch.where(hit.any(1), hit.long().argmax(1), nearest)
    pick = torch.where(draws, pick, nearest)
    return cand.gather(1, pick[:, None]).squeeze(1)


def _lutz_order(obj, nobj, pix, h, w, use=None) -> torch.Tensor:
    """A key (in [0, 2 h w)) that orders each object's pixels as sep's Lutz pass lists them (only the pixels
    ``use`` count).

    Scanning rows down, Lutz opens each row's segment with a new list and appends the list of the rows above when
    it reaches the x where the row above's segment started: an object's list is its pixels left of the row above's
    start, latest row first, then its first row, then the rest of each row, row by row (exact for objects with
    one segment per row)."""
    dev = obj.device
    use = torch.ones_like(obj, dtype=torch.bool) if use is None else use
    x, y = pix % w, pix // w
    ou, yu = obj[use], y[use]
    ymin = _full(nobj, h, torch.long, dev).scatter_reduce(0, ou, yu, "amin")
    ymax = _full(nobj, -1, torch.long, dev).scatter_reduce(0, ou, yu, "amax")
    height = (ymax - ymin + 1).clamp_min(0)
    base = torch.cumsum(height, 0) - height
    row = (base[obj] + y - ymin[obj]).clamp(0, max(int(height.sum()) - 1, 0))  # (object, row), compact
    start = _full(max(int(height.sum()), 1), w, torch.long, dev).scatter_reduce(0, row[use], x[use], "amin")
    above = torch.where(y > ymin[obj], start[(row - 1).clamp_min(0)], w)
    return torch.where(x < above, (h - 1 - y) * w + x, h * w + y * w + x)


def _mthresh(oid, nobj, cd, thr_obj, list_key) -> torch.Tensor:
    """sep's analysemthresh(): what cleaning compares with, nominally an object's MIN_AREA-th highest (filtered
    value - threshold); 0 for objects under MIN_AREA pixels.

    sep fills a heap with the first MIN_AREA pixels of the object's list, sorts it at the next pixel (which is
    not inserted), and then sifts each larger value down one level only: for MIN_AREA = 4 the heap's last slot
    keeps the largest of the first 4 and the other three the 3 highest of (the 3 lowest of the first 4 and the
    pixels from the 6th on); its top, the result, is the lowest of these three. With exactly MIN_AREA pixels the
    heap is never sorted and its top is the first pixel. ``list_key`` (distinct within an object) orders each
    object's pixels as sep's list does."""
    dev = cd.device
    v = cd - thr_obj[oid]
    npix = torch.bincount(oid, minlength=nobj)
    big = torch.iinfo(torch.long).max
    idx = torch.arange(v.numel(), device=dev)
    # list rank of the first MIN_AREA + 1 pixels of each object (MIN_AREA + 1 for the others)
    key = list_key.clone()
    rank = torch.full_like(oid, MIN_AREA + 1)
    for k in range(MIN_AREA + 1):
        lo = _full(nobj, big, torch.long, dev).scatter_reduce(0, oid, key, "amin")
        at = (key == lo[oid]) & (key != big)
        rank[at] = k
        key = torch.where(at, big, key)
    first = _full(nobj, 0.0, torch.float32, dev)
    first[oid[rank == 0]] = v[rank == 0]

    def pick_max(live):
        vv = torch.where(live, v, float("-inf"))
        top = _full(nobj, float("-inf"), torch.float32, dev).scatter_reduce(0, oid, vv, "amax")
        at = _full(nobj, -1, torch.long, dev).scatter_reduce(
            0, oid, torch.where(live & (vv == top[oid]), idx, -1), "amax"
        )
        return top, at[at >= 0]

    head = rank < MIN_AREA
    _, drop = pick_max(head)  # the heap's last slot: the largest of the first MIN_AREA, out of play
    live = rank != MIN_AREA
    live[drop] = False
    for _ in range(MIN_AREA - 1):  # the lowest of the 3 highest of the rest
        best, at = pick_max(live)
        live[at] = False
    m = torch.where(npix == MIN_AREA, first, best)
    return torch.where(npix >= MIN_AREA, m, torch.zeros_like(m))


def _clean(o_img, n, order_key, o_x, o_y, s, thr, mth) -> torch.Tensor:
    """sep's clean(): False for the objects it drops.

    sep walks its object list (``order_key``: Lutz's order) and for each object still standing, against each later
    object still standing, lets the brighter one eat the fainter where its profile, extrapolated to it, stands
    above the fainter's mthresh; an eaten object eats no more once its turn comes. Replayed here over the list
    positions, all cutouts at once."""
    dev = o_x.device
    unit = math.pi * s["a"] * s["b"]
    amp = s["fdflux"] / (2 * unit * s["abcor"])
    alpha = (torch.pow(amp / thr, 1.0 / CLEAN_PARAM) - 1) * unit / s["npix"]
    o = torch.argsort(order_key, stable=True)
    o = o[torch.argsort(o_img[o], stable=True)]
    cnt = torch.bincount(o_img, minlength=n)
    slot = torch.empty_like(o)
    slot[o] = torch.arange(o.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt)[o_img[o]]
    kmax = int(cnt.max())
    f32 = torch.float32

    def dense(v):
        out = _full(n, float("nan"), f32, dev, kmax)
        out[o_img, slot] = v.to(f32)
        return out

    # the pairs (i before j in the list) close enough to meet: within CLEAN_ZONE (a_i + a_j)
    X, Y, A = dense(o_x), dense(o_y), dense(s["a"])
    dx = X[:, :, None] - X[:, None, :]  # [i, j] = x_i - x_j
    dy = Y[:, :, None] - Y[:, None, :]
    rlim = (A[:, :, None] + A[:, None, :]) * CLEAN_ZONE
    later = torch.arange(kmax, device=dev)
    near = (dx * dx + dy * dy <= rlim * rlim) & (later[:, None] < later[None, :])
    img, i, j = torch.nonzero(near, as_tuple=True)  # in sep's order: i, then j
    ddx, ddy = dx[img, i, j], dy[img, i, j]
    # the brighter of the two eats the fainter where its profile there stands above the fainter's mthresh
    obj = _full(n * kmax, -1, torch.long, dev)
    obj[o_img * kmax + slot] = torch.arange(o_x.numel(), device=dev)
    oi, oj = obj[img * kmax + i], obj[img * kmax + j]
    fainter = s["fdflux"][oj].float() < s["fdflux"][oi].float()  # j is the fainter
    big, small = torch.where(fainter, oi, oj), torch.where(fainter, oj, oi)
    q = (
        s["cxx"][big].float() * ddx * ddx
        + s["cyy"][big].float() * ddy * ddy
        + s["cxy"][big].float() * ddx * ddy
    )
    val = 1 + alpha[big].float() * q
    eats = (val > 1.0) & (amp[big].float() * torch.pow(val, -CLEAN_PARAM) > mth[small])
    img, i, j = img[eats], i[eats], j[eats]
    victim = torch.where(fainter[eats], j, i)
    alive = torch.zeros((n, kmax), dtype=torch.bool, device=dev)
    alive[o_img, slot] = True
    if img.numel():
        # replay the pairs one rank at a time, all cutouts together: a pair acts if i was standing when its turn
        # came and j still stands
        cnt = torch.bincount(img, minlength=n)
        rank = torch.arange(img.numel(), device=dev) - (torch.cumsum(cnt, 0) - cnt)[img]
        turn_start = torch.ones_like(img, dtype=torch.bool)
        turn_start[1:] = (img[1:] != img[:-1]) | (i[1:] != i[:-1])
        at_turn = alive.clone()
        for r in range(int(cnt.max())):
            q = torch.nonzero(rank == r).squeeze(1)
            qm, qi, qj, qs = img[q], i[q], j[q], turn_start[q]
            at_turn[qm[qs], qi[qs]] = alive[qm[qs], qi[qs]]
            act = at_turn[qm, qi] & alive[qm, qj]
            alive[qm[act], victim[q][act]] = False
    return alive[o_img, slot]


# --- sep's deblending, on the tree of basins ---------------------------------------------------------------------


def _deblend(groups, comp, pv, pk_img, thr, fdpeak, fdflux, npk_c, ea, eb, ev, root, pcd, px, py) -> dict:
    """sep's deblend() of the groups (component labels ``groups``) holding several peaks.

    Returns ``split`` (per component label: was it cut), and per deblended object its ``comp``, ``x``, ``y`` (the
    barycentre of its branch) and ``level``, and per peak the object whose branch holds its basin
    (``basin_obj``, -1 if none) and that branch's level (``basin_level``)."""
    dev = pv.device
    npk = pv.numel()
    nlev = DEBLEND_NTHRESH
    res = {
        "split": torch.zeros(npk, dtype=torch.bool, device=dev),
        "basin_obj": _full(npk, -1, torch.long, dev),
        "basin_level": _full(npk, float("inf"), torch.float32, dev),
    }
    comps, xs, ys, levels = [], [], [], []
    nout = 0
    mp = torch.nonzero(torch.isin(comp, groups)).squeeze(1)
    # rank of each peak in its group, the highest first (ties: the lower peak number first)
    o = torch.argsort(-pv[mp].double(), stable=True)
    o = o[torch.argsort(comp[mp][o], stable=True)]
    mp = mp[o]
    cl = comp[mp]
    cnt = torch.bincount(cl, minlength=npk)
    start = torch.cumsum(cnt, 0) - cnt
    rank_of = _full(npk, -1, torch.long, dev)
    rank_of[mp] = torch.arange(mp.numel(), device=dev) - start[cl]
    # groups are padded to the next power of two of their peak count
    bucket = torch.ceil(torch.log2(npk_c[groups].double())).long()
    levk = torch.arange(nlev, device=dev, dtype=torch.float64) / nlev
    for bk in torch.unique(bucket).tolist():
        K = 1 << bk
        sel_c = groups[bucket == bk]
        C = sel_c.numel()
        cpos = _full(npk, -1, torch.long, dev)
        cpos[sel_c] = torch.arange(C, device=dev)
        pk = torch.nonzero(cpos[comp] >= 0).squeeze(1)
        ci, ri = cpos[comp[pk]], rank_of[pk]
        pvd = _full(C, float("-inf"), torch.float32, dev, K)
        pvd[ci, ri] = pv[pk]
        pkd = torch.zeros((C, K), dtype=torch.long, device=dev)
        pkd[ci, ri] = pk
        # W[i, j]: the level at which basins i and j join (widest path over passes), W[i, i] the peak
        W = _full(C * K * K, float("-inf"), torch.float32, dev).reshape(C, K, K)
        W[ci, ri, ri] = pv[pk]
        e = cpos[comp[ea]] >= 0
        W[cpos[comp[ea[e]]], rank_of[ea[e]], rank_of[eb[e]]] = ev[e]
        if K <= 16:  # max-min squaring: log2(K) steps of (C, K, K, K)
            for _ in range(K):
                W2 = torch.maximum(W, torch.minimum(W[:, :, :, None], W[:, None, :, :]).amax(2))
                if torch.equal(W2, W):
                    break
                W = W2
        else:  # Floyd-Warshall: K steps of (C, K, K)
            for k in range(K):
                W = torch.maximum(W, torch.minimum(W[:, :, k : k + 1], W[:, k : k + 1, :]))
        # sep's levels: t_k = thr (peak / thr)^(k / 32), k = 0..31, in float32 as sep compares them
        thr0 = thr[pk_img[sel_c]]
        lev = thr0.double()[:, None] * torch.pow(
            fdpeak[sel_c].double()[:, None] / thr0.double()[:, None], levk
        )
        lev = lev.float()
        lev[:, 0] = thr0
        # T[c, j, k]: the pixels of basin j above level k: count, sum cd, sum cd x, sum cd y
        pix = torch.nonzero(cpos[comp[root]] >= 0).squeeze(1)
        pc_, pr_, v = cpos[comp[root[pix]]], rank_of[root[pix]], pcd[pix]
        nabove = (v[:, None] > lev[pc_]).sum(1)  # >= 1: level 0 is the detection threshold
        vd = v.double()
        T = torch.zeros((C * K * nlev, 4), dtype=torch.float64, device=dev)
        T.index_add_(
            0,
            (pc_ * K + pr_) * nlev + (nabove - 1),
            torch.stack([torch.ones_like(vd), vd, vd * px[pix], vd * py[pix]], 1),
        )
        T = T.reshape(C, K, nlev, 4).flip(2).cumsum(2).flip(2)
        # the branch holding peak i at level k: the basins joined to it above k; its representative is its
        # highest peak (the lowest rank)
        conn = W[:, :, :, None] > lev[:, None, None, :]  # (C, i, j, k)
        B = torch.einsum("cijl,cjlf->cilf", conn.double(), T)
        # (the first j, in rank order, joined to i above k: the running maximum of W[i, :] passes k there)
        run = W.cummax(2).values.reshape(C * K, K)
        rep = torch.searchsorted(run, lev.repeat_interleave(K, 0), right=True).clamp_(max=K - 1)
        rep = rep.reshape(C, K, nlev)
        ar = torch.arange(K, device=dev)[None, :, None]
        exists = (pvd[:, :, None] > lev[:, None, :]) & (B[..., 0] >= DEBLEND_MINAREA)
        exists[:, :, 0] = pvd > float("-inf")  # level 0: the whole group
        isrep = exists & (rep == ar)
        value0 = DEBLEND_CONT * fdflux[sel_c]
        # sep: fdflux - thresh * fdnpix > value0, in float32 arithmetic against a double
        flux = B[..., 1].float() - lev[:, None, :] * B[..., 0].float()
        sig = flux.double() > value0[:, None, None]
        # m[c, i, k]: significant children (at k + 1) of node (i, k); the node splits when m > 1
        child = isrep[:, :, 1:] & sig[:, :, 1:]
        parent = rep[:, :, :-1]
        m = torch.zeros((C, K, nlev - 1), dtype=torch.long, device=dev).scatter_add(1, parent, child.long())
        split_node = isrep[:, :, :-1] & (m > 1)
        # ok (no split at or above k in the node's subtree): no peak of the node meets a split at or above k
        at = split_node.gather(1, parent)  # the node holding peak i at level k splits
        at = at & exists[:, :, :-1]
        above = at.flip(2).cumsum(2).flip(2) > 0
        bad = torch.zeros((C, K, nlev - 1), dtype=torch.long, device=dev).scatter_reduce(
            1, parent, above.long(), "amax"
        )
        ok = torch.ones((C, K, nlev), dtype=torch.bool, device=dev)
        ok[:, :, :-1] = bad == 0
        # objects: significant children, themselves never split, of a node that splits
        outm = torch.zeros((C, K, nlev), dtype=torch.bool, device=dev)
        outm[:, :, 1:] = isrep[:, :, 1:] & sig[:, :, 1:] & ok[:, :, 1:] & (m.gather(1, parent) > 1)
        whole = ok[:, 0, 0]
        outm &= ~whole[:, None, None]
        res["split"][sel_c[~whole]] = True
        c_, j_, l_ = torch.nonzero(outm, as_tuple=True)
        bb = B[c_, j_, l_]
        lv = lev[c_, l_]
        comps.append(sel_c[c_])
        xs.append(bb[:, 2] / bb[:, 1])
        ys.append(bb[:, 3] / bb[:, 1])
        levels.append(lv)
        ob, qb = torch.nonzero(conn[c_, j_, :, l_], as_tuple=True)  # the basins in each object's branch
        res["basin_obj"][pkd[c_[ob], qb]] = nout + ob
        res["basin_level"][pkd[c_[ob], qb]] = lv[ob]
        nout += c_.numel()
    if comps:
        res.update(comp=torch.cat(comps), x=torch.cat(xs), y=torch.cat(ys), level=torch.cat(levels))
    else:
        e = torch.zeros(0, dtype=torch.float64, device=dev)
        res.update(comp=torch.zeros(0, dtype=torch.long, device=dev), x=e, y=e, level=e.float())
    return res


# --- the detection ------------------------------------------------------------------------------------------------


def _detect_chunk(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sources of a chunk of (n, 5, H, W) float32 cutouts (NaN already 0): (image index, x, y) sorted by image,
    and the i band's median (n,)."""
    n, _, h, w = img.shape
    hw = h * w
    dev = img.device
    det32 = img[:, 3].reshape(n, hw)
    med = _median(det32)
    det64 = det32.double() - med[:, None]
    sig = 1.4826 * _median(det64.abs())
    sig = torch.where(sig == 0, torch.ones_like(sig), sig)
    det = det64.float().reshape(n, 1, h, w)
    # sep's default filter, normalised, zero beyond the edges (separable: [1, 2, 1] x [1, 2, 1] / 16)
    pd = F.pad(det, (1, 1, 1, 1))
    a = pd[..., :, :-2] + 2 * pd[..., :, 1:-1] + pd[..., :, 2:]
    cd = ((a[..., :-2, :] + 2 * a[..., 1:-1, :] + a[..., 2:, :]) / 16).reshape(n, hw)
    thr = torch.tensor(DETECT_SIGMA, dtype=torch.float32, device=dev) * sig.float()
    mask = cd > thr[:, None]

    # steepest ascent inside the mask: each pixel points at the highest pixel of its 3x3 neighbourhood (the first
    # in raster order among equals, as max pooling), and by pointer jumping at the local maximum its climb ends on
    gidx = torch.nonzero(mask.reshape(-1)).squeeze(1)  # the mask's pixels, flat over the chunk, raster order
    npix = gidx.numel()
    pimg = gidx // hw
    ppix = gidx % hw
    hp, wp = h + 2, w + 2  # a frame padded by one pixel
    base = pimg * (hp * wp) + (ppix // w + 1) * wp + (ppix % w + 1)
    offs = torch.tensor([dy * wp + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=dev)
    cdp = F.pad(torch.where(mask, cd, float("-inf")).reshape(n, h, w), (1, 1, 1, 1), value=float("-inf"))
    nb = base[:, None] + offs  # (P, 9) padded flat indices of the neighbourhood
    best = cdp.reshape(-1)[nb].argmax(1)
    posp = _full(n * hp * wp, -1, torch.long, dev)
    posp[base] = torch.arange(npix, device=dev)
    nbpos = posp[nb]  # neighbours as indices into the mask's pixels (-1 off the mask)
    up = nbpos.gather(1, best[:, None]).squeeze(1)
    is_peak = best == 4
    for _ in range(hw):
        nxt = up[up]
        if torch.equal(nxt, up):
            break
        up = nxt
    peaks = torch.nonzero(is_peak).squeeze(1)
    npk = peaks.numel()
    pk_of = _full(npix, -1, torch.long, dev)
    pk_of[peaks] = torch.arange(npk, device=dev)
    root = pk_of[up]  # the peak (basin) of every mask pixel
    pcd = cd.reshape(-1)[gidx]
    praw = det.reshape(-1)[gidx]
    px = (ppix % w).double()
    py = (ppix // w).double()
    pk_img = pimg[peaks]
    pv = pcd[peaks]

    # passes between adjacent basins: the highest min(cd_a, cd_b) over 8-adjacent pixel pairs across a boundary
    fwd = nbpos[:, 5:]  # the neighbours right, below-left, below, below-right
    rb = root[fwd.clamp_min(0)]
    sel = (fwd >= 0) & (rb != root[:, None])
    ea = [root[:, None].expand_as(fwd)[sel]]
    eb = [rb[sel]]
    ev = [torch.minimum(pcd[:, None].expand_as(fwd)[sel], pcd[fwd.clamp_min(0)][sel])]
    ea, eb, ev = torch.cat(ea + eb), torch.cat(eb + ea), torch.cat(ev + ev)
    if ea.numel():
        key, inv = torch.unique(ea * npk + eb, return_inverse=True)
        ev = _full(key.numel(), float("-inf"), torch.float32, dev).scatter_reduce(0, inv, ev, "amax")
        ea, eb = key // npk, key % npk

    # sep's groups: basins joined by passes (label: the highest peak number)
    comp = torch.arange(npk, device=dev)
    for _ in range(npk + 1):
        nxt = comp.scatter_reduce(0, ea, comp[eb], "amax")
        nxt = nxt[nxt]
        if torch.equal(nxt, comp):
            break
        comp = nxt
    pc = comp[root]
    area = torch.bincount(pc, minlength=npk)
    fdflux = _full(npk, 0.0, torch.float64, dev).index_add_(0, pc, pcd.double()).float().double()
    fdpeak = _full(npk, float("-inf"), torch.float32, dev).scatter_reduce(0, comp, pv, "amax")
    npk_c = torch.bincount(comp, minlength=npk)
    label = torch.arange(npk, device=dev)
    group = (comp == label) & (area >= MIN_AREA)
    # sep gives up on an image whose deblending meets more than its sub-object limit (it raises, and detect()
    # returns no sources): so here for a group of that many peaks
    failed = torch.zeros(n, dtype=torch.bool, device=dev)
    failed[pk_img[group & (npk_c >= SUB_OBJECT_LIMIT)]] = True
    group &= ~failed[pk_img]

    db = _deblend(
        torch.nonzero(group & (npk_c > 1)).squeeze(1),
        comp,
        pv,
        pk_img,
        thr,
        fdpeak,
        fdflux,
        npk_c,
        ea,
        eb,
        ev,
        root,
        pcd,
        px,
        py,
    )
    # objects: the groups kept whole, then the deblended ones
    whole = group & ~db["split"]
    wl = torch.nonzero(whole).squeeze(1)
    nw, nd = wl.numel(), db["comp"].numel()
    nobj = nw + nd
    obj_of_group = _full(npk, -1, torch.long, dev)
    obj_of_group[wl] = torch.arange(nw, device=dev)
    o_img = torch.cat([pk_img[wl], pk_img[db["comp"]]])
    o_comp = torch.cat([wl, db["comp"]])
    oid = obj_of_group[pc]  # pixel -> object
    bo = db["basin_obj"][root]
    branch = (bo >= 0) & (pcd > db["basin_level"][root])
    oid = torch.where(branch, nw + bo, oid)
    inw = (oid >= 0) & (oid < nw)
    c = pcd[inw].double()
    sw = _full(nw, 0.0, torch.float64, dev, 3).index_add_(
        0, oid[inw], torch.stack([c, c * px[inw], c * py[inw]], 1)
    )
    o_x = torch.cat([sw[:, 1] / sw[:, 0], db["x"]])
    o_y = torch.cat([sw[:, 2] / sw[:, 0], db["y"]])
    if nobj == 0:
        return o_img, o_x, o_y, med

    thr_o = thr[o_img]
    # sep's orders: each group's pixel list (Lutz), groups as Lutz completes them (by last row, then where that
    # row ends), a deblended group's objects deepest level first, then as Lutz completes their branches
    group_list = _lutz_order(pc, npk, ppix, h, w)
    x_, y_ = ppix % w, ppix // w
    gy = _full(npk, -1, torch.long, dev).scatter_reduce(0, pc, y_, "amax")
    gx = _full(npk, -1, torch.long, dev).scatter_reduce(0, pc, torch.where(y_ == gy[pc], x_, -1), "amax")
    group_key = gy * w + gx
    if nd:
        ob = bo[branch]
        by, bx = y_[branch], x_[branch]
        ymax = _full(nd, -1, torch.long, dev).scatter_reduce(0, ob, by, "amax")
        xend = _full(nd, -1, torch.long, dev).scatter_reduce(
            0, ob, torch.where(by == ymax[ob], bx, -1), "amax"
        )
        o = torch.argsort(ymax * w + xend, stable=True)
        o = o[torch.argsort(-db["level"][o].double(), stable=True)]
        o = o[torch.argsort(db["comp"][o], stable=True)]
        cnt = torch.bincount(db["comp"], minlength=npk)
        db["slot"] = torch.empty_like(o)
        db["slot"][o] = torch.arange(nd, device=dev) - (torch.cumsum(cnt, 0) - cnt)[db["comp"][o]]
        within = torch.cat([torch.zeros(nw, dtype=torch.long, device=dev), db["slot"]])
    else:
        within = torch.zeros(nobj, dtype=torch.long, device=dev)
    order_key = group_key[o_comp] * (npk + 1) + within
    if nd:
        # gathering: sep hands each faint pixel of a deblended group to one of its objects at random, with
        # probability amp exp(-dist); its draws (rand_r, seeded 1 per image) are replayed in sep's order
        s1 = _shapes(
            bo[branch], nd, px[branch], py[branch], pcd[branch], praw[branch], db["x"], db["y"], db["level"]
        )
        rp = torch.nonzero((oid < 0) & db["split"][pc]).squeeze(1)
        if rp.numel():
            oid[rp] = nw + _gather(db, s1, thr_o[nw:], pc, pimg, ppix, rp, npk, h, w, group_list, group_key)
    has = oid >= 0
    s2 = _shapes(oid[has], nobj, px[has], py[has], pcd[has], praw[has], o_x, o_y, thr_o)
    # sep's pixel lists (Lutz order): a whole object's, a deblended object's branch, then its gathered pixels in
    # the order of its group's list
    gathered = ~branch & (oid >= nw)
    own = torch.where(gathered, -1, oid)
    list_key = torch.where(
        gathered,
        2 * hw + group_list,
        _lutz_order(own.clamp_min(0), nobj, ppix, h, w, own >= 0),
    )
    mth = _mthresh(oid[has], nobj, pcd[has], thr_o, list_key[has])
    keep = _clean(o_img, n, order_key, o_x, o_y, s2, thr_o.double(), mth) & ~failed[o_img]
    o_img, o_x, o_y = o_img[keep], o_x[keep], o_y[keep]
    o = torch.argsort(o_img, stable=True)
    return o_img[o], o_x[o], o_y[o], med


def _aperture_weights(x: torch.Tensor, y: torch.Tensor, r: float, subpix: int = 5):
    """sep.sum_circle's pixel weights for circles of radius r at (x, y): (x0, y0, w), w (m, s, s) the weights of
    the window of rows y0..y0+s-1 and columns x0..x0+s-1, with s = 2 ceil(r + 0.7072) and x0 = floor(x) -
    ceil(r + 0.7072) + 1 (every pixel of non-zero weight). A pixel whose centre is within r - 0.7072 of the centre
    counts fully, one beyond r + 0.7072 not at all, the others by the fraction of the subpix x subpix grid of
    sub-pixel centres inside the circle (counted per sub-row in closed form)."""
    reach = math.ceil(r + 0.7072)
    size = 2 * reach
    x0 = torch.floor(x) - (reach - 1)
    y0 = torch.floor(y) - (reach - 1)
    off = torch.arange(size, dtype=torch.float64, device=x.device)
    dx = (x0[:, None] + off) - x[:, None]  # (m, s)
    dy = (y0[:, None] + off) - y[:, None]
    rp2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
    scale = 1.0 / subpix
    o0 = 0.5 * (scale - 1.0)
    sy = dy[:, :, None] + torch.arange(subpix, dtype=torch.float64, device=x.device) * scale + o0  # sub-rows
    # in units of sub-pixels: sub-columns j = 0..subpix-1 of column c lie at d_c + j; inside where |d_c + j| < chord
    chord = (torch.sqrt((r * r - sy * sy).clamp_min(0.0)) * subpix).float()[
        :, :, None, :
    ]  # (m, rows, 1, sub)
    d = ((dx + o0) * subpix).float()[:, None, :, None]  # (m, 1, columns, 1)
    hi = (chord - d).ceil_().clamp_(max=subpix)
    lo = (chord + d).neg_().floor_().add_(1).clamp_(min=0)
    frac = hi.sub_(lo).clamp_(min=0).sum(-1).double() * (scale * scale)  # (m, rows, columns)
    r_in2 = max(r - 0.7072, 0.0) ** 2
    r_out2 = (r + 0.7072) ** 2
    wgt = torch.where(rp2 < r_out2, torch.where(rp2 > r_in2, frac, 1.0), 0.0)
    return x0.long(), y0.long(), wgt


def _photometry(img, bi, ox, oy, med_i) -> list[torch.Tensor]:
    """Aperture magnitudes in g, r, i at (ox, oy) of image ``bi``: sep.sum_circle of each band minus its median
    (pixels beyond the image's edge count 0, as sep skips them), as nmgy_to_mag."""
    n, _, h, w = img.shape
    x0, y0, wgt = _aperture_weights(ox, oy, APERTURE_PIX)
    off = torch.arange(wgt.shape[-1], device=img.device)
    yy, xx = y0[:, None] + off, x0[:, None] + off
    inside = ((yy >= 0) & (yy < h))[:, :, None] & ((xx >= 0) & (xx < w))[:, None, :]
    at = (bi[:, None, None] * h + yy.clamp(0, h - 1)[:, :, None]) * w + xx.clamp(0, w - 1)[:, None, :]
    mags = []
    for b in (1, 2, 3):
        band = img[:, b].reshape(n, h * w)
        med = med_i if b == 3 else _median(band)
        # sep reads the (pixel - median) values as float32
        val = (band.reshape(-1)[at].double() - med[bi][:, None, None]).float().double()
        flux = (torch.where(inside, val, 0.0) * wgt).sum(dim=(1, 2))
        mags.append(
            torch.where(
                flux > 0, ZEROPOINT_NMGY - 2.5 * torch.log10(torch.where(flux > 0, flux, 1.0)), float("nan")
            )
        )
    return mags


def _as_tensor(images) -> torch.Tensor:
    t = images if torch.is_tensor(images) else torch.from_numpy(np.asarray(images))
    if t.ndim != 4 or t.shape[1] < 4:
        raise ValueError(f"images must be (N, 5, H, W), got {tuple(t.shape)}")
    return t


def detect_batch(images, *, device="cpu", batch_size: int | None = None) -> Sources:
    """Sources of every cutout of ``images`` ((N, 5, H, W), numpy or torch; NaN counts as 0), computed on
    ``device`` in chunks of ``batch_size``: :func:`~.richness.detect`'s source list (see the module's docstring for
    how it follows sep), padded into a :class:`Sources` of tensors on ``device``."""
    t = _as_tensor(images)
    n = t.shape[0]
    if batch_size is None:
        batch_size = BATCH_SIZE["cpu" if torch.device(device).type == "cpu" else "other"]
    parts = []
    for s in range(0, n, batch_size):
        img = torch.nan_to_num(t[s : s + batch_size].to(device=device, dtype=torch.float32), nan=0.0)
        m = img.shape[0]
        bi, ox, oy, med_i = _detect_chunk(img)
        fields = [ox, oy, *_photometry(img, bi, ox, oy, med_i)]
        counts = torch.bincount(bi, minlength=m)
        slot = torch.arange(bi.numel(), device=img.device) - (torch.cumsum(counts, 0) - counts)[bi]
        parts.append((m, int(counts.max()) if m else 0, bi, slot, fields))
    k = max((p[1] for p in parts), default=0)
    dev = torch.device(device)
    valid = torch.zeros((n, k), dtype=torch.bool, device=dev)
    cols = [torch.full((n, k), float("nan"), dtype=torch.float64, device=dev) for _ in range(5)]
    s = 0
    for m, _, bi, slot, fields in parts:
        valid[s + bi, slot] = True
        for col, v in zip(cols, fields, strict=True):
            col[s + bi, slot] = v
        s += m
    return Sources(*cols, valid)


# --- lambda-hat and the cluster significance, vectorised over rows -----------------------------------------------


def _row_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in a fixed (sequential) order, so that padding with zeros never changes it."""
    return np.cumsum(a, axis=-1)[..., -1] if a.shape[-1] else np.zeros(a.shape[:-1])


def richness_from_sources(
    baseline: RichnessBaseline,
    src: Sources | dict[str, np.ndarray],
    z,
    field: tuple[list[float], list[float]] | None = None,
) -> dict[str, np.ndarray]:
    """:meth:`RichnessBaseline.richness` and :meth:`RichnessBaseline.cluster_significance` of every row of
    ``src`` (a :class:`Sources` or its :meth:`Sources.numpy`) at redshifts ``z`` (N,), with array operations over
    all rows at once. NaN for both where z is not finite (as :func:`~survey_mass.inference.predict.richness_masses`
    skips those rows); the significance is NaN where the method gives NaN (z above NO_CLUSTER_Z_MAX)."""
    from ..astro import mstar_i, r_lambda_arcsec

    s = src.numpy() if isinstance(src, Sources) else src
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    valid = np.asarray(s["valid"], bool)
    x, y = s["x"], s["y"]
    g, r, i = s["mag_g"], s["mag_r"], s["mag_i"]
    n = z.size
    lam, sig = np.full(n, np.nan), np.full(n, np.nan)
    rows = np.isfinite(z)
    if rows.any():
        zr = z[rows]
        xr, yr, gr_, rr, ir, vr = x[rows], y[rows], g[rows], r[rows], i[rows], valid[rows]
        c = (baseline.size - 1) / 2
        rad = np.hypot(xr - c, yr - c)
        mstar = np.asarray(mstar_i(zr), float)[:, None]
        # _select and count: the hard red-sequence window inside min(R_lambda(30), size / 2 - 2)
        low = (zr < Z_SWITCH)[:, None]
        colour = np.where(low, gr_ - rr, rr - ir)
        centre = np.where(
            low[:, 0],
            np.interp(zr, Z_GRID, np.asarray(baseline.colour_gr, float)),
            np.interp(zr, Z_GRID, np.asarray(baseline.colour_ri, float)),
        )[:, None]
        with np.errstate(invalid="ignore"):
            sel = np.isfinite(colour) & (np.abs(colour - centre) < COLOUR_HALF_WIDTH) & (ir < mstar + 1.75)
        # aperture_pix(30, z, pixel_scale, size) for all rows
        r_ap = np.minimum(
            np.asarray(r_lambda_arcsec(30.0, zr), float) / baseline.pixel_scale, baseline.size / 2 - 2
        )
        with np.errstate(invalid="ignore"):
            count = (sel & vr & (rad < r_ap[:, None])).sum(axis=1).astype(float)
        bkg = np.interp(zr, Z_GRID, np.asarray(baseline.background, float))
        lam[rows] = np.maximum(count - bkg * (np.pi * r_ap**2), 1.0)

        # cluster_significance: the matched filter against the field model
        judged = (zr > 0) & (zr <= NO_CLUSTER_Z_MAX)
        if judged.any():
            tab_gr = np.asarray(baseline.colour_gr, float)
            tab_ri = np.asarray(baseline.colour_ri, float)
            if tab_gr.size != Z_GRID.size or tab_ri.size != Z_GRID.size:
                tab_gr, tab_ri = red_sequence_table()
            rho1, rho2 = field if field is not None else (FIELD_RHO1, FIELD_RHO2)
            zj = zr[judged]
            gj, rj, ij, vj = gr_[judged], rr[judged], ir[judged], vr[judged]
            with np.errstate(invalid="ignore"):
                dgr = gj - rj - np.interp(zj, Z_GRID, tab_gr)[:, None]
                dri = rj - ij - np.interp(zj, Z_GRID, tab_ri)[:, None]
                dgr = np.where(np.isnan(gj) & np.isfinite(rj), 0.0, dgr)
                w = np.exp(-0.5 * (np.minimum(dgr, 0.0) / DETECT_SIGMA_GR_BLUE) ** 2)
                w = w * np.exp(-0.5 * (dri / DETECT_SIGMA_RI) ** 2)
                bright = ij < mstar[judged] + DETECT_DM
            w = np.where(np.isfinite(w) & bright & vj, w, 0.0)
            gw = np.where(vj, _radial_weight(np.where(vj, rad[judged], 0.0), baseline.pixel_scale), 0.0)
            score = _row_sum(w * gw)
            yy, xx = np.mgrid[0 : baseline.size, 0 : baseline.size]
            gg = _radial_weight(np.hypot(xx - c, yy - c), baseline.pixel_scale)
            mean = np.interp(zj, Z_GRID, np.asarray(rho1, float)) * float(gg.sum())
            var = np.interp(zj, Z_GRID, np.asarray(rho2, float)) * float((gg**2).sum())
            out = np.full(zr.size, np.nan)
            out[judged] = (score - mean) / np.sqrt(np.maximum(var, 1e-12))
            sig[rows] = out
    return {"richness": lam, "cluster_significance": sig}


def richness_batch(
    baseline: RichnessBaseline,
    images,
    z,
    *,
    device="cpu",
    batch_size: int | None = None,
    field: tuple[list[float], list[float]] | None = None,
) -> dict[str, np.ndarray]:
    """lambda-hat (``richness``, :meth:`RichnessBaseline.richness`) and ``cluster_significance``
    (:meth:`RichnessBaseline.cluster_significance`) of every cutout, as numpy arrays (N,): :func:`detect_batch` on
    ``device``, then :func:`richness_from_sources`. Rows whose z is not finite get NaN for both (and are not
    detected)."""
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    t = _as_tensor(images)
    if t.shape[0] != z.size:
        raise ValueError(f"{t.shape[0]} images for {z.size} redshifts")
    rows = np.flatnonzero(np.isfinite(z))
    out = {"richness": np.full(z.size, np.nan), "cluster_significance": np.full(z.size, np.nan)}
    if rows.size:
        sub = t if rows.size == z.size else t[torch.from_numpy(rows)]
        res = richness_from_sources(
            baseline, detect_batch(sub, device=device, batch_size=batch_size), z[rows], field
        )
        for k, v in res.items():
            out[k][rows] = v
    return out
