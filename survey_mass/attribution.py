"""Why the network said what it said: integrated gradients joined to Grad-CAM, and their per-cluster summaries.

The attributed function is exactly the catalogued one, :meth:`survey_mass.models.mass_model.MassModel.forward`:
the fold-ensemble mean log10 M500 as a function of the *normalised* cutout (each band sky-subtracted and divided
by its sky noise, then asinh), standardisation and soft clip included. The IG baseline is an empty sky (all
zeros), so attribution says which pixels, relative to blank sky, moved the mass.

* captum ``IntegratedGradients`` (Riemann trapezoid, ``steps``) on the mean;
* captum ``LayerGradCam`` on the backbone's last convolution, upsampled to the cutout, one map per band;
* joint map = |IG| x max(CAM, 0).

Summaries per cluster: the fraction of the joint map in each band, its weighted mean distance from the centre
(arcmin), the fraction within 1 arcmin, and IG's convergence delta relative to |F(x) - F(baseline)|.
"""

from __future__ import annotations

import numpy as np
import torch

from .models.mass_model import prepare_images
from .photometry import BANDS

SUMMARY_COLUMNS = tuple(f"attr_frac_{b}" for b in BANDS) + (
    "attr_radius_arcmin",
    "attr_frac_within_1arcmin",
    "ig_delta",
)


def attribute(
    bundle,
    images: np.ndarray,
    z: np.ndarray,
    *,
    steps: int = 16,
    pixel_scale: float = 6.336,
    internal_batch_size: int = 64,
    return_maps: bool = False,
    richness: np.ndarray | None = None,
):
    """Joint IG x Grad-CAM maps and their summaries for (N, 5, H, W) raw cutouts.

    The function explained is each row's catalogued mass: the headline (pixels and the catalogue ``richness``,
    held fixed along the path), or the pixels-only mass for a row without a richness. Returns a dict of summary
    arrays (and ``maps`` (N, 5, H, W) when ``return_maps``).
    """
    from captum.attr import IntegratedGradients, LayerGradCam

    lam = None if richness is None else np.asarray(richness, np.float32)
    has = np.zeros(len(z), bool) if lam is None else np.isfinite(lam) & (lam > 0)
    if (
        bundle.model.richness_input and has.any() and not has.all()
    ):  # each row with its own catalogue function
        kw = dict(
            steps=steps,
            pixel_scale=pixel_scale,
            internal_batch_size=internal_batch_size,
            return_maps=return_maps,
        )
        parts = [
            (m, attribute(bundle, images[m], np.asarray(z)[m], richness=lam[m], **kw)) for m in (has, ~has)
        ]
        return {k: _merge(len(z), [(m, a[k]) for m, a in parts]) for k in parts[0][1]}
    with_lam = bundle.model.richness_input and lam is not None and bool(has.all())
    model = (bundle.model if with_lam else bundle.pixels).eval()
    x, log_sigma, _ = prepare_images(np.asarray(images, np.float32))
    zz = torch.from_numpy(np.asarray(z, np.float32))
    extra = (zz, log_sigma) + ((torch.from_numpy(lam),) if with_lam else ())
    n, c, h, w = x.shape
    ig = IntegratedGradients(model)
    attr, delta = ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        additional_forward_args=extra,
        n_steps=steps,
        method="riemann_trapezoid",  # the path integrand is piecewise linear (ReLUs): trapezoids converge faster than Gauss-Legendre here
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        change = (model(x, *extra) - model(torch.zeros_like(x), *extra)).abs()
    gc = LayerGradCam(model, bundle.backbone.last_conv)
    cam = gc.attribute(x, additional_forward_args=extra, relu_attributions=True)  # (n*5, 1, h', w')
    cam = torch.nn.functional.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False).reshape(
        n, c, h, w
    )
    joint = (attr.abs() * cam.clamp_min(0)).detach().numpy()
    total = joint.reshape(n, -1).sum(1)
    safe = np.where(total > 0, total, np.nan)
    yy, xx = np.mgrid[0:h, 0:w]
    r_arcmin = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) * pixel_scale / 60.0
    out = {f"attr_frac_{b}": joint[:, k].reshape(n, -1).sum(1) / safe for k, b in enumerate(BANDS)}
    per_pixel = joint.sum(1)  # (n, h, w)
    out["attr_radius_arcmin"] = (per_pixel * r_arcmin).reshape(n, -1).sum(1) / safe
    out["attr_frac_within_1arcmin"] = (per_pixel * (r_arcmin <= 1.0)).reshape(n, -1).sum(1) / safe
    out["ig_delta"] = delta.detach().abs().numpy() / np.maximum(change.numpy(), 1e-12)
    if return_maps:
        out["maps"] = joint
        out["ig"] = attr.detach().numpy()
        out["cam"] = cam.detach().numpy()
    return out


def _merge(n: int, parts) -> np.ndarray:
    """Rows of two groups' outputs put back in their places."""
    first = np.asarray(parts[0][1])
    out = np.empty((n, *first.shape[1:]), first.dtype)
    for m, v in parts:
        out[m] = v
    return out
