"""sep's global sky level and noise, batched in torch: the sky of every cutout of a batch on the device at once.

:func:`~survey_mass.models.mass_model.measure_sky` runs sep's ``Background`` (SExtractor's estimator) on one
band of one cutout at a time on the CPU: at 0.29 ms a cutout it is the wall of the device path
(``benchmarks/results/roofline.json``: about 29 cores per 10^5 cutouts/s). :func:`measure_sky_torch` computes the
same numbers, following sep's ``background.c`` step by step, so that a GPU needs from the CPU only the decoded
pixels. For each mesh of ``mesh`` x ``mesh`` pixels of each band:

1. ``backstat``: mean and sigma of the unmasked pixels (a mesh with fewer than half its pixels unmasked is
   *bad*); again within mean +- 2 sigma; from those the histogram's ``nlevels`` (sqrt(2/pi) 5/4 npix + 1, at
   most 4096), ``qscale`` (10 sigma / nlevels) and ``qzero`` (mean - 5 sigma), in float32 as sep keeps them.
2. ``backhisto``: bin = int(pixel / qscale + (0.499999 - qzero / qscale)) in float32, truncated toward zero.
3. ``backguess``: up to 100 times, until sigma changes by less than 1e-4 or falls below 0.1 bin: the histogram's
   mean and sigma between the cuts, and its median found by sep's two-pointer walk (which always takes from the
   side with the smaller sum, from above on a tie). That walk is a merge of the two sides' running sums, so the
   number of bins it takes from below is the number of low prefixes that the merge emits within the cut's
   length (a ``searchsorted``); the cuts become median +- 3 sigma. The mesh's level is 2.5 median - 1.5 mean
   where (mean - median) / sigma < 0.3, else the median; its sigma is sigma x qscale.
4. ``filterback`` with a 1 x 1 filter: a bad mesh takes the mean of its nearest good meshes (level 0 and sigma 1
   if none); the global level and noise are the medians over the meshes (the mean of the middle two for an even
   count); a non-positive global noise falls back to the median of the positive ones, else 1.

The result equals sep's on sky-subtracted cutouts, as SDSS corrected frames and the mock are
(``tests/models/test_sky.py`` compares them on the mock's cutouts, masked ones among them: bit-identical on 400
cutouts of the small store). Where the sky level is thousands of sigmas from zero, sep's float32 binning
cancels differently from these sums (at 10^4 sigma: up to 0.006 sigma in level, 0.2% in sigma). Not
replicated: sep's fallback when it raises (the CPU path then takes the median and MAD), and a mesh whose
histogram median is 0/0 (two empty bins where the walk meets; sep keeps the NaN level, here the mesh counts as
bad and takes its neighbours'). Cutouts whose side is not a multiple of ``mesh`` (sep's narrower last mesh) are
refused. Meshes are computed :data:`MESH_CHUNK` at a time, which bounds the device memory (about 2 GB).
"""

from __future__ import annotations

import math

import torch

#: sep's background.c constants
_MIN_GOOD_FRACTION = 0.5
_NSIGMA = 5
_MAX_LEVELS = 4096
_AMIN = 4
_EPS = 1e-4
_MAX_ITER = 100
#: sep's BIG: pixels at or below -BIG are not counted
_BIG = 1e30
#: meshes per pass (each pass holds a few (meshes x levels) integer tensors: 8,192 x ~1,400 x 8 bytes each)
MESH_CHUNK = 8192


def _mesh_pixels(images: torch.Tensor, mesh: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, ny * nx, mesh * mesh): each mesh's pixels in a row."""
    n, c, h, w = images.shape
    ny, nx = h // mesh, w // mesh
    x = images.reshape(n, c, ny, mesh, nx, mesh).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(n, c, ny * nx, mesh * mesh)


def _clipped_stats(x: torch.Tensor, use: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, mean and sigma (float64) of the pixels ``use`` marks, per row; sigma 0 where the variance is not
    positive."""
    xd = torch.where(use, x, torch.zeros((), dtype=x.dtype, device=x.device)).double()
    npix = use.sum(-1)
    nd = npix.clamp_min(1).double()
    mean = xd.sum(-1) / nd
    var = (xd * xd).sum(-1) / nd - mean * mean
    return npix, mean, torch.where(var > 0, var.clamp_min(0).sqrt(), torch.zeros_like(var))


def _histograms(x, valid, mesh_pixels: int):
    """backstat and backhisto: per row (a mesh) its histogram (rows x max levels), nlevels, qscale, qzero,
    the float32 pass-2 mean and sigma, and whether the mesh is bad."""
    npix, mean, sigma = _clipped_stats(x, valid)
    bad = npix.float() < float(mesh_pixels * _MIN_GOOD_FRACTION)
    lcut = (mean - 2.0 * sigma).float()
    hcut = (mean + 2.0 * sigma).float()
    use = valid & (x <= hcut[:, None]) & (x >= lcut[:, None])
    npix, mean, sigma = _clipped_stats(x, use)
    step = math.sqrt(2 / math.pi) * _NSIGMA / _AMIN
    nlevels = (step * npix.double() + 1).long().clamp_max(_MAX_LEVELS)
    nlevels = torch.where(bad, torch.ones_like(nlevels), nlevels)
    qscale = torch.where(sigma > 0, 2 * _NSIGMA * sigma / nlevels.double(), torch.ones_like(sigma)).float()
    qzero = (mean - _NSIGMA * sigma).float()
    cste = (0.499999 - (qzero / qscale).double()).float()
    binf = torch.trunc(x / qscale[:, None] + cste[:, None])
    inside = valid & (binf >= 0) & (binf < nlevels[:, None].float()) & ~bad[:, None]
    levels = int(nlevels.max())
    rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(binf)
    flat = (rows * levels + torch.where(inside, binf, torch.zeros_like(binf)).long())[inside]
    histo = torch.zeros(x.shape[0] * levels, dtype=torch.long, device=x.device)
    histo.index_add_(0, flat, torch.ones_like(flat))
    return histo.reshape(x.shape[0], levels), nlevels, qscale, qzero, mean.float(), sigma.float(), bad


def _median_walk(hm, low, total, h, lcut, hcut, idx) -> torch.Tensor:
    """The median (in bins) that sep's two-pointer walk finds between the cuts, per row.

    ``hm`` is the histogram ``h`` zeroed outside the cuts, ``low[i]`` its sum below bin i, ``total`` its sum.
    The walk takes ``hcut - lcut + 1`` bins, each from the side whose running sum is smaller (from above on a
    tie): it merges the low side's prefix sums A with the high side's B, B first on ties. The low prefix
    A[a - 1] = low[j] (j = lcut + a - 1) is emitted within that length iff a + #{b : B[b] <= low[j]} <= length,
    a condition monotone in a; B[b] = total - low[hcut + 1 - b], so the count is a search in ``low``."""
    length = hcut - lcut + 1
    low_ext = torch.cat([low, total[:, None]], -1).contiguous()
    first = torch.searchsorted(low_ext, (total[:, None] - low).contiguous(), side="left")
    count = (hcut[:, None] + 2 - torch.maximum(first, lcut[:, None])).clamp_min(0)
    inside = (idx >= lcut[:, None]) & (idx <= hcut[:, None])
    a_final = (inside & (idx - lcut[:, None] + 1 + count <= length[:, None])).sum(-1)
    hilow = lcut + a_final
    hihigh = hilow - 1
    lowsum = torch.gather(low_ext, 1, hilow.clamp(0, h.shape[1])[:, None])[:, 0]
    top = h.shape[1] - 1
    h_low = torch.gather(h, 1, hilow.clamp(0, top)[:, None])[:, 0].double()
    h_high = torch.gather(h, 1, hihigh.clamp(0, top)[:, None])[:, 0].double()
    med = hihigh.double() + 0.5 + (total - 2 * lowsum).double() / (2.0 * torch.maximum(h_low, h_high))
    return torch.where(hihigh >= 0, med, torch.zeros_like(med))


def _round_cut(f: torch.Tensor) -> torch.Tensor:
    """C's (int)(f > 0 ? f + 0.5 : f - 0.5)."""
    return torch.trunc(torch.where(f > 0, f + 0.5, f - 0.5)).long()


def _guess_step(h, lcut, hcut, nlm1, idx):
    """One iteration of backguess on the rows given: the histogram's mean, sigma and median between the cuts, and
    the next cuts (median +- 3 sigma, rounded as C rounds). The sums are exact (integers)."""
    inside = (idx >= lcut[:, None]) & (idx <= hcut[:, None])
    hm = torch.where(inside, h, torch.zeros_like(h))
    cum = torch.cumsum(hm, -1)
    total = cum[:, -1]
    med = _median_walk(hm, cum - hm, total, h, lcut, hcut, idx)
    s = total.double()
    m1 = (hm * idx).sum(-1).double()
    m2 = (hm * (idx * idx)).sum(-1).double()
    mea = torch.where(s > 0, m1 / s.clamp_min(1), torch.zeros_like(m1))
    var = torch.where(s > 0, m2 / s.clamp_min(1) - mea * mea, m2)
    sig = torch.where(var > 0, var.clamp_min(0).sqrt(), torch.zeros_like(var))
    f_lo, f_hi = med - 3.0 * sig, med + 3.0 * sig
    new_lcut = torch.where(f_lo > 0, _round_cut(f_lo), torch.zeros_like(lcut))
    new_hcut = torch.where(f_hi < nlm1.double(), _round_cut(f_hi), nlm1)
    return mea, sig, med, new_lcut, new_hcut


def _backguess(histo, nlevels, qscale, qzero, mean0, bad) -> tuple[torch.Tensor, torch.Tensor]:
    """sep's backguess for every row at once: (level, sigma) in float32, -inf marking a bad mesh. Each iteration
    computes only the rows still iterating (most converge in a few; the slowest take about 16)."""
    idx = torch.arange(histo.shape[1], device=histo.device)[None, :]
    nlm1 = nlevels - 1
    lcut, hcut = torch.zeros_like(nlm1), nlm1.clone()
    sig = 10.0 * nlm1.double()
    sig1 = torch.ones_like(sig)
    mea, med = mean0.double(), mean0.double()
    rows = torch.nonzero(~bad).flatten()
    for _ in range(_MAX_ITER):
        s_r = sig[rows]
        rows = rows[(s_r >= 0.1) & ((s_r / sig1[rows] - 1.0).abs() > _EPS)]
        if rows.numel() == 0:
            break
        sig1[rows] = sig[rows]
        mea[rows], sig[rows], med[rows], lcut[rows], hcut[rows] = _guess_step(
            histo[rows], lcut[rows], hcut[rows], nlm1[rows], idx
        )
    qz, qs = qzero.double(), qscale.double()
    skew = ((mea - med) / sig).abs() < 0.3
    level = torch.where(
        sig.abs() > 0, torch.where(skew, qz + (2.5 * med - 1.5 * mea) * qs, qz + med * qs), qz + mea * qs
    )
    level = torch.where(bad, torch.full_like(level, -math.inf), level)
    return level.float(), (sig * qs).float()


def _fill_bad_meshes(level: torch.Tensor, sigma: torch.Tensor, ny: int, nx: int):
    """filterback's interpolation: a bad mesh (level -inf) takes the mean of its nearest good meshes (squared grid
    distance), level 0 and sigma 1 where a band has none. level, sigma: (..., ny * nx)."""
    yy, xx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    yy, xx = yy.reshape(-1).to(level.device), xx.reshape(-1).to(level.device)
    d2 = ((yy[:, None] - yy[None, :]) ** 2 + (xx[:, None] - xx[None, :]) ** 2).float()  # (mesh, other)
    good = torch.isfinite(level)
    d = torch.where(good[..., None, :], d2, torch.full_like(d2, math.inf))  # (..., mesh, other)
    near = (d == d.min(-1, keepdim=True).values) & good[..., None, :]
    k = near.sum(-1)
    lv = torch.where(near, level[..., None, :], torch.zeros_like(d)).sum(-1)
    sg = torch.where(near, sigma[..., None, :], torch.zeros_like(d)).sum(-1)
    kd = k.clamp_min(1).float()
    filled_l = torch.where(k > 0, lv / kd, torch.zeros_like(lv))
    filled_s = torch.where(k > 0, sg / kd, torch.ones_like(sg))
    return torch.where(good, level, filled_l), torch.where(good, sigma, filled_s)


def _median_even(v: torch.Tensor) -> torch.Tensor:
    """fqmedian over the last axis: the middle value, or the mean of the middle two."""
    s = torch.sort(v, -1).values
    n = s.shape[-1]
    if n % 2:
        return s[..., n // 2]
    return ((s[..., n // 2 - 1].double() + s[..., n // 2].double()) / 2.0).float()


def _global_rms(sigma: torch.Tensor) -> torch.Tensor:
    """The median of the meshes' sigmas; where it is not positive, the median of the positive ones (1 if none)."""
    g = _median_even(sigma)
    pos = sigma > 0
    if bool((g <= 0).any()):
        s = torch.sort(torch.where(pos, sigma, torch.full_like(sigma, math.inf)), -1).values
        k = pos.sum(-1)
        lo = ((k - 1) // 2).clamp_min(0)
        hi = (k // 2).clamp_max(sigma.shape[-1] - 1)
        a = torch.gather(s, -1, lo[..., None])[..., 0].double()
        b = torch.gather(s, -1, hi[..., None])[..., 0].double()
        fallback = torch.where(k > 0, ((a + b) / 2).float(), torch.ones_like(g))
        g = torch.where(g <= 0, fallback, g)
    return g


def measure_sky_torch(
    images: torch.Tensor, mesh: int = 32, floor: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sky level and sky sigma (N, C) of (N, C, H, W) cutouts on their own device: sep's ``Background`` with
    ``bw = bh = mesh`` and a 1 x 1 filter, masking non-finite pixels, then ``globalback`` and ``globalrms`` as
    :func:`~survey_mass.models.mass_model.measure_sky` reads them. A band with no finite pixel gets level 0 and
    sigma NaN; sigma is at least ``floor``."""
    n, c, h, w = images.shape
    mesh = max(min(mesh, h, w), 1)
    if h % mesh or w % mesh:
        raise ValueError(f"cutouts of {h} x {w} pixels are not whole {mesh}-pixel meshes")
    ny, nx = h // mesh, w // mesh
    x = _mesh_pixels(images.float(), mesh).reshape(-1, mesh * mesh)
    levels, sigmas = [], []
    for s in range(0, x.shape[0], MESH_CHUNK):
        xs = x[s : s + MESH_CHUNK]
        valid = torch.isfinite(xs) & (xs > -_BIG)
        xs = torch.where(valid, xs, torch.zeros_like(xs))
        histo, nlevels, qscale, qzero, mean0, _, bad = _histograms(xs, valid, mesh * mesh)
        lv, sg = _backguess(histo, nlevels, qscale, qzero, mean0, bad)
        levels.append(lv)
        sigmas.append(sg)
    level, sigma = torch.cat(levels), torch.cat(sigmas)
    level, sigma = _fill_bad_meshes(level.reshape(n, c, ny * nx), sigma.reshape(n, c, ny * nx), ny, nx)
    glevel, grms = _median_even(level), _global_rms(sigma)
    any_finite = torch.isfinite(images.float()).flatten(2).any(-1)
    glevel = torch.where(any_finite & torch.isfinite(glevel), glevel, torch.zeros_like(glevel))
    grms = torch.where(torch.isfinite(grms), grms.clamp_min(floor), torch.full_like(grms, floor))
    return glevel, torch.where(any_finite, grms, torch.full_like(grms, math.nan))
