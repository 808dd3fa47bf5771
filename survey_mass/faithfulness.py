"""Do the maps of :mod:`survey_mass.attribution` explain the catalogued mass? Three tests, each a function here.

1. **Deletion and insertion** (:func:`deletion_insertion`, after Samek et al. 2017). The cutout is cut into
   :data:`UNIT_PIX`-pixel squares per band; they are replaced by sky noise at the cutout's depth (deletion) or put
   back into such sky (insertion), :data:`CURVE_STEPS` equal batches at a time, in the map's order (largest
   signed sum first) and in random orders. AOPC, the mean drop of the mass over the deletion curve, is higher for
   the map's order when the map ranks the pixels that raise the mass first.
2. **Cascading model randomisation** (:func:`randomisation`, Adebayo et al. 2018). The backbone's convolutions
   are re-initialised from the top down; a map that explains the model must change (Spearman of the signed maps
   with the trained ones near 0), while two runs of the trained model with independent sky baselines agree.
3. **Counterfactual scenes** (:func:`counterfactual`): the same mock scene rendered without its central galaxy
   and without its members (:func:`survey_mass.mock.survey.scene_variants`). The mass a component's removal
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


def deletion_insertion(bundle, a: dict, *, ids, richness, z, seed: int = 0) -> dict[str, np.ndarray]:
    """AOPC of deletion and insertion curves, the map's order against :data:`RANDOM_ORDERS` random ones, for
    the rows of ``a`` (:func:`~survey_mass.attribution.attribute` with ``return_maps``): ``aopc``,
    ``aopc_random``, ``insertion``, ``insertion_random`` per row (dex)."""
    from .attribution import row_function, sky_baselines

    x = torch.from_numpy(a["x"])
    n = x.shape[0]
    fn = row_function(bundle, np.asarray(z), torch.from_numpy(a["log_sigma"]), richness)
    fill = sky_baselines(tuple(x.shape), np.asarray(ids), baselines=1, seed=seed + 7919)[0]
    units = _units(tuple(x.shape[1:]))
    nu = int(units.max()) + 1
    out = {k: np.zeros(n) for k in ("aopc", "aopc_random", "insertion", "insertion_random")}
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
    return out


def randomised_copies(bundle, seed: int = 0) -> list[tuple[str, object]]:
    """Bundles whose backbone has its convolutions re-initialised cumulatively from the top (the last layer,
    then the last two, ...), each named by the layers randomised."""
    convs = [k for k, m in enumerate(bundle.backbone.features) if isinstance(m, torch.nn.Conv2d)]
    out = []
    current = copy.deepcopy(bundle)
    torch.manual_seed(seed)
    for depth, k in enumerate(reversed(convs), start=1):
        current = copy.deepcopy(current)  # the headline and pixels models keep sharing one backbone
        assert current.pixels.backbone is current.model.backbone
        current.backbone.features[k].reset_parameters()
        out.append((f"top {depth} of {len(convs)} conv layers", current))
    return out


def randomisation(bundle, images, z, *, ids, richness, pixel_scale: float, seed: int = 0) -> dict:
    """Spearman of signed maps (summed over bands, per pixel): two trained runs with independent baselines
    (``runs``, per row), and the trained map against each cascade stage (``randomised``: stage -> per row)."""
    from .attribution import attribute

    kw = dict(
        ids=ids, richness=richness, pixel_scale=pixel_scale, baselines=EXPLAIN_BASELINES, return_maps=True
    )
    m1 = attribute(bundle, images, z, seed=seed, **kw)["maps"].sum(1)
    m2 = attribute(bundle, images, z, seed=seed + 1, **kw)["maps"].sum(1)
    out = {"runs": [_spearman(m1[i], m2[i]) for i in range(len(z))], "randomised": {}}
    for name, rb in randomised_copies(bundle, seed):
        mr = attribute(rb, images, z, seed=seed, **kw)["maps"].sum(1)
        out["randomised"][name] = [_spearman(m1[i], mr[i]) for i in range(len(z))]
    return out


def counterfactual(bundle, store_path, ids, *, seed: int = 0, candidates=None) -> dict[str, np.ndarray]:
    """For each cluster and each of its central galaxy and members: the mass its removal takes away
    (``removal_dex``, F(scene) - F(scene without it)) and the map's sum over the pixels its light touches
    (``attributed_dex``: where the two renders differ by more than one sky sigma in any band). ``candidates``:
    the candidate table a store was built from, when not the shipped redMaPPer one."""
    from .attribution import attribute
    from .mock.survey import scene_variants
    from .models.mass_model import prepare_images
    from .store import open_store

    st = open_store(store_path)
    recs = [st.read_by_id(int(i))[1] for i in ids]
    z = np.array([float(r["z"]) for r in recs])
    lam = np.array([float(r.get("richness", np.nan)) for r in recs])
    scenes = scene_variants(store_path, list(ids), candidates=candidates)
    a = attribute(
        bundle,
        scenes["full"],
        z,
        ids=ids,
        richness=lam,
        pixel_scale=st.pixel_scale,
        baselines=EXPLAIN_BASELINES,
        seed=seed,
        return_maps=True,
    )
    f_full = _masses(bundle, scenes["full"], z, lam)
    _, _, sky = prepare_images(scenes["full"])
    rows = {"component": [], "removal_dex": [], "attributed_dex": [], "id": []}
    for comp in ("no_central", "no_members"):
        f_cf = _masses(bundle, scenes[comp], z, lam)
        for i in range(len(ids)):
            touched = (np.abs(scenes["full"][i] - scenes[comp][i]) > sky[i][:, None, None]).any(axis=0)
            rows["component"].append(comp.removeprefix("no_"))
            rows["id"].append(int(ids[i]))
            rows["removal_dex"].append(float(f_full[i] - f_cf[i]))
            rows["attributed_dex"].append(float(a["maps"][i][:, touched].sum()))
    return {k: np.asarray(v) for k, v in rows.items()}


def _masses(bundle, images, z, richness) -> np.ndarray:
    """The catalogued mass (before any quality cut) of cutouts."""
    from .inference.predict import cnn_masses

    return np.asarray(cnn_masses(bundle, images, z, richness)["log10_m500"], float)
