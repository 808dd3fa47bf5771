"""Do the maps of :mod:`survey_mass.attribution` explain the catalogued mass? Three tests, each a function here.

1. **Deletion and insertion** (:func:`deletion_insertion`, after Samek et al. 2017). The cutout is cut into
   :data:`UNIT_PIX`-pixel squares per band; they are replaced by sky noise at the cutout's depth (deletion) or put
   back into such sky (insertion), :data:`CURVE_STEPS` equal batches at a time, in the map's order (largest
   signed sum first) and in random orders. AOPC, the mean drop of the mass over the deletion curve, is higher for
   the map's order when the map ranks the pixels that raise the mass first.
2. **Cascading model randomisation** (:func:`randomisation`, Adebayo et al. 2018). The backbone's convolutions
   are re-initialised from the top down; a map that explains the model must change (Spearman of the signed maps
   with the trained ones near 0), while two runs of the trained model with independent sky baselines agree.
3. **Counterfactual scenes** (:func:`counterfactual`): the same scene rendered without its central galaxy
   and without its members (the caller's simulator renders them; for a mock store
   :func:`survey_mass.mock.survey.scene_variants`). The mass a component's removal
   takes away should rank with the map's sum over that component's light.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

#: side (pixels) of the squares deleted and inserted, per band
UNIT_PIX = 2
#: batches of the deletion and insertion curves (each 1/CURVE_STEPS of the squares)
CURVE_STEPS = 20
#: random orders averaged for the reference AOPC
RANDOM_ORDERS = 4
#: baselines of the maps the randomisation and counterfactual tests read (those ``survey-mass explain`` draws)
EXPLAIN_BASELINES = 8


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b))[0])


def _units(shape: tuple[int, ...]) -> np.ndarray:
    """(C, H, W) -> unit index of every pixel: UNIT_PIX squares per band."""
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    per_band = (yy // UNIT_PIX) * ((w + UNIT_PIX - 1) // UNIT_PIX) + xx // UNIT_PIX
    return per_band[None] + np.arange(c)[:, None, None] * (per_band.max() + 1)


def _curve(
    fn, row: int, x: torch.Tensor, fill: torch.Tensor, units: np.ndarray, order: np.ndarray, insert: bool
):
    """Masses along a deletion (or insertion) curve: step k has the first k/CURVE_STEPS of ``order`` replaced by
    ``fill`` (or, inserting, taken from ``x`` into ``fill``)."""
    cuts = np.linspace(0, order.size, CURVE_STEPS + 1).round().astype(int)[1:]
    pts = []
    for k in cuts:
        chosen = torch.from_numpy(np.isin(units, order[:k]))
        pts.append(torch.where(chosen, x, fill) if insert else torch.where(chosen, fill, x))
    with torch.no_grad():
        return fn(torch.stack(pts), torch.full((len(pts),), row)).double().numpy()


def deletion_insertion(
    bundle, a: dict, *, ids, richness, z, bcg_mag_i=None, seed: int = 0
) -> dict[str, np.ndarray]:
    """AOPC of deletion and insertion curves for the rows of ``a`` (:func:`~survey_mass.attribution.attribute`
    with ``return_maps``), per row (dex): the map's order (``aopc``, ``insertion``), the mean of
    :data:`RANDOM_ORDERS` random orders (``_random``), and two orders that need no map, which any map that
    follows the image would beat random with: brightest squares first (``aopc_brightness``) and nearest the
    centre first (``aopc_centre``)."""
    from .attribution import row_function, sky_baselines

    x = torch.from_numpy(a["x"])
    n = x.shape[0]
    fn = row_function(bundle, np.asarray(z), torch.from_numpy(a["log_sigma"]), richness, bcg_mag_i)
    fill = sky_baselines(tuple(x.shape), np.asarray(ids), baselines=1, seed=seed + 7919)[0]
    units = _units(tuple(x.shape[1:]))
    nu = int(units.max()) + 1
    keys = ("aopc", "aopc_random", "aopc_brightness", "aopc_centre", "insertion", "insertion_random")
    out = {k: np.zeros(n) for k in keys}
    h, w = x.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    r_pix = np.broadcast_to(np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2), units.shape)
    count = np.bincount(units.ravel(), minlength=nu)
    centre_order = np.argsort(
        np.bincount(units.ravel(), weights=r_pix.ravel(), minlength=nu) / count, kind="stable"
    )
    with torch.no_grad():
        f_x = fn(x, torch.arange(n)).double().numpy()
        f_fill = fn(fill, torch.arange(n)).double().numpy()
    for i in range(n):
        score = np.bincount(units.ravel(), weights=a["maps"][i].ravel(), minlength=nu)
        rng = np.random.default_rng([int(seed), int(np.asarray(ids)[i]) & 0x7FFFFFFF, 31])
        orders = [np.argsort(-score, kind="stable")] + [rng.permutation(nu) for _ in range(RANDOM_ORDERS)]
        dele = [f_x[i] - _curve(fn, i, x[i], fill[i], units, o, False).mean() for o in orders]
        ins = [_curve(fn, i, x[i], fill[i], units, o, True).mean() - f_fill[i] for o in orders]
        out["aopc"][i], out["aopc_random"][i] = dele[0], float(np.mean(dele[1:]))
        out["insertion"][i], out["insertion_random"][i] = ins[0], float(np.mean(ins[1:]))
        flux = np.bincount(units.ravel(), weights=a["x"][i].ravel(), minlength=nu)
        for key, o in (("aopc_brightness", np.argsort(-flux, kind="stable")), ("aopc_centre", centre_order)):
            out[key][i] = f_x[i] - _curve(fn, i, x[i], fill[i], units, o, False).mean()
    return out


def randomised_copies(bundle, seed: int = 0) -> list[tuple[str, object]]:
    """Bundles randomised cumulatively from the top: first the fold heads (each head's weights permuted over
    its inputs, so the central photometry, which bypasses the backbone, is randomised too), then also the
    backbone's convolutions re-initialised from the last one down; each named by what is randomised."""
    convs = [k for k, m in enumerate(bundle.backbone.features) if isinstance(m, torch.nn.Conv2d)]
    gen = torch.Generator().manual_seed(seed)
    current = copy.deepcopy(bundle)  # the headline and pixels models keep sharing one backbone
    for model in (current.model, current.pixels):
        for head in model.heads:
            w = head.linear.weight.data
            w.copy_(w[:, torch.randperm(w.shape[1], generator=gen)])
    out = [("heads", current)]
    torch.manual_seed(seed)
    for depth, k in enumerate(reversed(convs), start=1):
        current = copy.deepcopy(current)
        assert current.pixels.backbone is current.model.backbone
        current.backbone.features[k].reset_parameters()
        out.append((f"heads + top {depth} of {len(convs)} conv layers", current))
    return out


def randomisation(bundle, images, z, *, ids, richness, pixel_scale: float, seed: int = 0) -> dict:
    """Spearman of maps (summed over bands, per pixel): two trained runs with independent baselines
    (``runs``, per row), and the trained map against each cascade stage (``randomised``: stage -> per row);
    ``_abs``: the same on |map|, which keeps the image's own structure (Adebayo et al. report both)."""
    from .attribution import attribute

    kw = dict(
        ids=ids, richness=richness, pixel_scale=pixel_scale, baselines=EXPLAIN_BASELINES, return_maps=True
    )
    m1 = attribute(bundle, images, z, seed=seed, **kw)["maps"].sum(1)
    m2 = attribute(bundle, images, z, seed=seed + 1, **kw)["maps"].sum(1)
    n = len(z)
    out: dict = {
        "runs": [_spearman(m1[i], m2[i]) for i in range(n)],
        "runs_abs": [_spearman(np.abs(m1[i]), np.abs(m2[i])) for i in range(n)],
        "randomised": {},
        "randomised_abs": {},
    }
    for name, rb in randomised_copies(bundle, seed):
        mr = attribute(rb, images, z, seed=seed, **kw)["maps"].sum(1)
        out["randomised"][name] = [_spearman(m1[i], mr[i]) for i in range(n)]
        out["randomised_abs"][name] = [_spearman(np.abs(m1[i]), np.abs(mr[i])) for i in range(n)]
    return out


def counterfactual(
    bundle, scenes: dict[str, np.ndarray], z, *, ids, richness, pixel_scale: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """For each cluster and each of its central galaxy and members: the mass its removal takes away
    (``removal_dex``, F(scene) - F(scene without it)) and the map's sum over the pixels that are its light
    (``attributed_dex``). Each pixel belongs to at most one component: the one whose light there, summed over
    the bands in units of each band's sky sigma, is larger, if it exceeds one sigma.

    ``scenes`` holds (N, 5, H, W) renders of the same scenes: ``full``, ``no_central`` and ``no_members`` (a
    simulator's job: :func:`survey_mass.mock.survey.scene_variants` makes them for a mock store)."""
    from .attribution import attribute
    from .models.mass_model import prepare_images

    z = np.asarray(z, float)
    lam = None if richness is None else np.asarray(richness, float)
    a = attribute(
        bundle,
        scenes["full"],
        z,
        ids=ids,
        richness=lam,
        pixel_scale=pixel_scale,
        baselines=EXPLAIN_BASELINES,
        seed=seed,
        return_maps=True,
    )
    f_full = _masses(bundle, scenes["full"], z, lam)
    _, _, sky = prepare_images(scenes["full"])
    light = {
        c: (np.abs(scenes["full"] - scenes[c]) / sky[:, :, None, None]).sum(axis=1)
        for c in ("no_central", "no_members")
    }
    own = {
        "no_central": (light["no_central"] > 1) & (light["no_central"] >= light["no_members"]),
        "no_members": (light["no_members"] > 1) & (light["no_members"] > light["no_central"]),
    }
    rows: dict[str, list] = {"component": [], "removal_dex": [], "attributed_dex": [], "id": []}
    for comp in ("no_central", "no_members"):
        f_cf = _masses(bundle, scenes[comp], z, lam)
        for i in range(len(z)):
            rows["component"].append(comp.removeprefix("no_"))
            rows["id"].append(int(np.asarray(ids)[i]))
            rows["removal_dex"].append(float(f_full[i] - f_cf[i]))
            rows["attributed_dex"].append(float(a["maps"][i][:, own[comp][i]].sum()))
    return {k: np.asarray(v) for k, v in rows.items()}


def _masses(bundle, images, z, richness) -> np.ndarray:
    """The catalogued mass (before any quality cut) of cutouts."""
    from .inference.predict import cnn_masses

    return np.asarray(cnn_masses(bundle, images, z, richness)["log10_m500"], float)
