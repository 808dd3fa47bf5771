"""Do the maps explain the catalogued mass? The three tests of :mod:`survey_mass.faithfulness`, and the
band- and region-replacement table they must agree with, on a mock store (the README's figures).

    python benchmarks/attribution_validation.py STORE OUT_DIR [--rows 120] [--randomise 8] [--scenes 40]

STORE is a mock store built from the redMaPPer candidates (``survey-mass mock``), so that every scene can be
rendered again without its central galaxy, its members or both (:func:`survey_mass.mock.survey.scene_variants`).
Writes ``attribution_validation.json``, ``.md`` and ``.png`` to OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _rows(store, n: int, seed: int):
    """``n`` random rows of the store that get a mass (no NO_MASS / NO_CLUSTER bits)."""
    from survey_mass.inference.predict import NO_MASS, predict_partition
    from survey_mass.models.bundle import load_bundle
    from survey_mass.quality import Quality
    from survey_mass.resources import model_dir

    bundle = load_bundle(model_dir())
    ids = []
    for p in store.partitions:
        cols = store.columns(p)
        q = predict_partition(bundle, store.images(p), cols, richness=False)["quality"]
        ids += list(np.asarray(cols["id"])[(q & int(NO_MASS | Quality.NO_CLUSTER)) == 0])
    rng = np.random.default_rng(seed)
    return bundle, np.sort(rng.choice(np.array(ids), size=min(n, len(ids)), replace=False))


def _read(store, ids):
    recs = [store.read_by_id(int(i)) for i in ids]
    images = np.stack([r[0] for r in recs])
    z = np.array([float(r[1]["z"]) for r in recs])
    lam = np.array([float(r[1].get("richness", np.nan)) for r in recs])
    return images, z, lam


def band_replacement(bundle, store_path, ids, pixel_scale: float) -> dict:
    """The review's deletion table: the mass change when one band's cluster light (central and members) is
    replaced by the same band of the field-only render, and when everything beyond 2 arcmin is; beside it,
    the map's sum over the pixels that change (dex, means over clusters)."""
    from survey_mass.attribution import attribute
    from survey_mass.faithfulness import EXPLAIN_BASELINES, _masses
    from survey_mass.mock.survey import scene_variants
    from survey_mass.models.mass_model import prepare_images
    from survey_mass.photometry import BANDS
    from survey_mass.store import open_store

    st = open_store(store_path)
    _, z, lam = _read(st, ids)
    sc = scene_variants(store_path, ids, ("full", "field"))
    full, field = sc["full"], sc["field"]
    a = attribute(
        bundle,
        full,
        z,
        ids=ids,
        richness=lam,
        pixel_scale=pixel_scale,
        baselines=EXPLAIN_BASELINES,
        return_maps=True,
    )
    f0 = _masses(bundle, full, z, lam)
    _, _, sky = prepare_images(full)
    out = {}
    for k, b in enumerate(BANDS):
        mod = full.copy()
        mod[:, k] = field[:, k]
        touched = np.abs(full[:, k] - field[:, k]) > sky[:, k, None, None]
        out[f"{b} band"] = {
            "removal_dex": float(np.mean(f0 - _masses(bundle, mod, z, lam))),
            "map_dex": float(np.mean([a["maps"][i, k][touched[i]].sum() for i in range(len(ids))])),
        }
    h = full.shape[-1]
    yy, xx = np.mgrid[0:h, 0:h]
    beyond = np.hypot(xx - (h - 1) / 2, yy - (h - 1) / 2) * pixel_scale / 60 > 2.0
    mod = np.where(beyond[None, None], field, full)
    out["beyond 2 arcmin"] = {
        "removal_dex": float(np.mean(f0 - _masses(bundle, mod, z, lam))),
        "map_dex": float(np.mean(a["maps"][:, :, beyond].sum(axis=(1, 2)))),
    }
    return out


def convergence(bundle, images, z, ids, lam, pixel_scale: float, a: dict, seed: int) -> dict:
    """The adaptive maps of the first rows against 512 fixed steps per baseline (same baselines): an accuracy
    check that does not use the completeness the adaptive rule stops on."""
    from scipy.stats import spearmanr

    from survey_mass.attribution import attribute
    from survey_mass.inference.run import RunOptions

    o = RunOptions()
    ref = attribute(
        bundle,
        images,
        z,
        ids=ids,
        richness=lam,
        pixel_scale=pixel_scale,
        baselines=o.ig_baselines,
        steps=512,
        tolerance=1e9,
        max_steps=512,
        seed=seed,
        return_maps=True,
    )
    n = len(ids)
    maps, rmaps = a["maps"][:n], ref["maps"]
    band = np.max([np.abs(a[f"attr_{b}_dex"][:n] - ref[f"attr_{b}_dex"]).max() for b in "ugriz"])
    return {
        "rows": n,
        "max_band_sum_error_dex": float(band),
        "median_relative_l1": float(
            np.median(np.abs(maps - rmaps).sum(axis=(1, 2, 3)) / np.abs(rmaps).sum(axis=(1, 2, 3)))
        ),
        "min_pixel_spearman": float(min(spearmanr(maps[i].ravel(), rmaps[i].ravel())[0] for i in range(n))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=120, help="rows for completeness and deletion/insertion")
    ap.add_argument("--randomise", type=int, default=8, help="rows for the cascading randomisation")
    ap.add_argument("--scenes", type=int, default=40, help="clusters for the counterfactual scenes")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()

    import torch
    from scipy.stats import spearmanr

    from survey_mass.attribution import attribute
    from survey_mass.faithfulness import counterfactual, deletion_insertion, randomisation
    from survey_mass.inference.run import RunOptions
    from survey_mass.store import open_store

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    st = open_store(args.store)
    bundle, ids = _rows(st, max(args.rows, args.scenes, args.randomise), args.seed)
    rep: dict = {"store": str(Path(args.store).resolve()), "model_id": bundle.model_id}

    # 1. the catalogue's maps: completeness, cost, deletion and insertion
    sel = ids[: args.rows]
    images, z, lam = _read(st, sel)
    o = RunOptions()
    t = time.perf_counter()
    a = attribute(
        bundle,
        images,
        z,
        ids=sel,
        richness=lam,
        pixel_scale=st.pixel_scale,
        return_maps=True,
        **o.attribution_kwargs(),
    )
    dt = (time.perf_counter() - t) / len(sel)
    d = deletion_insertion(bundle, a, ids=sel, richness=lam, z=z, seed=o.seed)
    steps, counts = np.unique(a["ig_steps"], return_counts=True)
    rep["maps"] = {
        "rows": len(sel),
        "baselines": o.ig_baselines,
        "s_per_cutout_2_threads": round(dt, 3),
        "steps_per_baseline": {int(s): int(c) for s, c in zip(steps, counts, strict=True)},
        "completeness_max_dex": float(a["ig_completeness_dex"].max()),
        "complete_to_0.01_dex": float(np.mean(a["ig_completeness_dex"] <= 0.01)),
        "attr_delta_dex_median": float(np.median(a["attr_delta_dex"])),
        "bands_dex_mean": {b: float(np.mean(a[f"attr_{b}_dex"])) for b in "ugriz"},
        "regions_dex_mean": {
            r: float(np.mean(a[f"attr_{r}_dex"])) for r in ("central", "members", "inside", "outside")
        },
        "regions_abs_share_mean": {
            r: float(np.nanmean(a[f"attr_{r}_abs_share"]))
            for r in ("central", "members", "inside", "outside")
        },
    }
    rep["deletion"] = {
        "aopc_median": float(np.median(d["aopc"])),
        "aopc_random_median": float(np.median(d["aopc_random"])),
        "beats_random": float(np.mean(d["aopc"] > d["aopc_random"])),
        "aopc_brightness_median": float(np.median(d["aopc_brightness"])),
        "beats_brightness": float(np.mean(d["aopc"] > d["aopc_brightness"])),
        "aopc_centre_median": float(np.median(d["aopc_centre"])),
        "beats_centre": float(np.mean(d["aopc"] > d["aopc_centre"])),
        "insertion_median": float(np.median(d["insertion"])),
        "insertion_random_median": float(np.median(d["insertion_random"])),
        "insertion_beats_random": float(np.mean(d["insertion"] > d["insertion_random"])),
    }
    rep["convergence"] = convergence(
        bundle, images[:10], z[:10], sel[:10], lam[:10], st.pixel_scale, a, o.seed
    )
    print(json.dumps(rep["maps"]), json.dumps(rep["deletion"]), json.dumps(rep["convergence"]), flush=True)

    # 2. cascading randomisation
    sel = ids[: args.randomise]
    images, z, lam = _read(st, sel)
    r = randomisation(bundle, images, z, ids=sel, richness=lam, pixel_scale=st.pixel_scale, seed=o.seed)
    rep["randomisation"] = {
        "rows": len(sel),
        "runs_spearman_median": float(np.median(r["runs"])),
        "runs_spearman_min": float(np.min(r["runs"])),
        "randomised_spearman_median": {k: float(np.median(v)) for k, v in r["randomised"].items()},
        "randomised_spearman_max": {k: float(np.max(v)) for k, v in r["randomised"].items()},
        "runs_abs_spearman_median": float(np.median(r["runs_abs"])),
        "randomised_abs_spearman_median": {k: float(np.median(v)) for k, v in r["randomised_abs"].items()},
    }
    print(json.dumps(rep["randomisation"]), flush=True)

    # 3. counterfactual scenes, and the review's band table
    sel = ids[: args.scenes]
    from survey_mass.mock.survey import scene_variants

    _, z, lam = _read(st, sel)
    scenes = scene_variants(args.store, sel, ("full", "no_central", "no_members"))
    cf = counterfactual(bundle, scenes, z, ids=sel, richness=lam, pixel_scale=st.pixel_scale, seed=o.seed)
    rho = float(spearmanr(cf["attributed_dex"], cf["removal_dex"])[0])
    rep["counterfactual"] = {
        "clusters": len(sel),
        "spearman_pooled": rho,
        **{
            c: {
                "spearman": float(spearmanr(cf["attributed_dex"][m], cf["removal_dex"][m])[0]),
                "p_value": float(spearmanr(cf["attributed_dex"][m], cf["removal_dex"][m])[1]),
                "removal_dex_mean": float(cf["removal_dex"][m].mean()),
                "attributed_dex_mean": float(cf["attributed_dex"][m].mean()),
            }
            for c in ("central", "members")
            for m in [cf["component"] == c]
        },
    }
    rep["band_replacement"] = band_replacement(bundle, args.store, sel, st.pixel_scale)
    print(json.dumps(rep["counterfactual"]), json.dumps(rep["band_replacement"]), flush=True)
    (out / "attribution_validation.json").write_text(json.dumps(rep, indent=1))
    _figure(d, cf, rep, out / "attribution_validation.png")
    (out / "attribution_validation.md").write_text(_markdown(rep))


def _markdown(rep: dict) -> str:
    d, r, c, cv = rep["deletion"], rep["randomisation"], rep["counterfactual"], rep["convergence"]
    lines = [
        "| test | measured | criterion |",
        "|---|---|---|",
        f"| deletion AOPC, map order vs 4 random orders | {d['aopc_median']:.2f} vs {d['aopc_random_median']:.2f} dex "
        f"(median); map beats random in {d['beats_random']:.0%} of {rep['maps']['rows']} rows | >= 80% |",
        f"| deletion AOPC vs brightest-first and centre-first orders | {d['aopc_brightness_median']:.2f} and "
        f"{d['aopc_centre_median']:.2f} dex; map beats them in {d['beats_brightness']:.0%} and "
        f"{d['beats_centre']:.0%} of rows | (reported) |",
        f"| insertion AOPC | {d['insertion_median']:.2f} vs {d['insertion_random_median']:.2f} dex; "
        f"{d['insertion_beats_random']:.0%} of rows | (reported) |",
        f"| adaptive maps vs 512 fixed steps ({cv['rows']} rows) | band sums within {cv['max_band_sum_error_dex']:.4f} "
        f"dex; median relative L1 {cv['median_relative_l1']:.3f}; pixel Spearman >= {cv['min_pixel_spearman']:.3f} "
        "| (reported) |",
        f"| randomisation: two runs of the trained model | Spearman median {r['runs_spearman_median']:.2f}, "
        f"min {r['runs_spearman_min']:.2f} (absolute maps {r['runs_abs_spearman_median']:.2f}) | > 0.9 |",
    ]
    for k, v in r["randomised_spearman_median"].items():
        lines.append(
            f"| randomisation: {k} randomised | Spearman median {v:.2f}, max "
            f"{r['randomised_spearman_max'][k]:.2f} (absolute maps {r['randomised_abs_spearman_median'][k]:.2f}) "
            "| < 0.3 |"
        )
    lines.append(
        f"| counterfactual: map sum over a component vs mass its removal takes | Spearman {c['spearman_pooled']:.2f} "
        f"pooled; within components: central {c['central']['spearman']:.2f} (p = {c['central']['p_value']:.2g}), "
        f"members {c['members']['spearman']:.2f} (p = {c['members']['p_value']:.2g}); {c['clusters']} clusters "
        "| >= 0.5 |"
    )
    lines += [
        "",
        "| light replaced by the field-only render | mass the replacement takes away (dex) | "
        "map summed over the changed pixels (dex) |",
        "|---|---|---|",
    ]
    for k, v in rep["band_replacement"].items():
        lines.append(f"| {k} | {v['removal_dex']:+.3f} | {v['map_dex']:+.3f} |")
    return "\n".join(lines) + "\n"


def _figure(d, cf, rep, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
    ax[0].scatter(d["aopc_random"], d["aopc"], s=10)
    lim = [0, max(d["aopc"].max(), d["aopc_random"].max()) * 1.05]
    ax[0].plot(lim, lim, "k--", lw=0.8)
    ax[0].set(
        xlabel="deletion AOPC, random orders (dex)",
        ylabel="deletion AOPC, map order (dex)",
        title=f"deletion: map beats random in {rep['deletion']['beats_random']:.0%} of rows",
    )
    names = list(rep["randomisation"]["randomised_spearman_median"])
    vals = list(rep["randomisation"]["randomised_spearman_median"].values())
    ax[1].bar(
        ["two trained runs", *[n.replace(" conv layers", "") for n in names]],
        [rep["randomisation"]["runs_spearman_median"], *vals],
        color=["C2"] + ["C3"] * len(vals),
    )
    ax[1].axhline(0.9, color="C2", ls=":")
    ax[1].axhline(0.3, color="C3", ls=":")
    ax[1].set(ylabel="Spearman with the trained map (median)", title="cascading randomisation")
    ax[1].tick_params(axis="x", labelrotation=20, labelsize=8)
    for comp, col in (("central", "C0"), ("members", "C1")):
        m = cf["component"] == comp
        ax[2].scatter(cf["attributed_dex"][m], cf["removal_dex"][m], s=12, color=col, label=comp)
    ax[2].axline((0, 0), slope=1, color="k", ls="--", lw=0.8)
    ax[2].legend()
    ax[2].set(
        xlabel="map summed over the component's light (dex)",
        ylabel="mass its removal takes away (dex)",
        title=f"counterfactual: Spearman {rep['counterfactual']['spearman_pooled']:.2f} pooled, "
        f"{rep['counterfactual']['central']['spearman']:.2f} central, "
        f"{rep['counterfactual']['members']['spearman']:.2f} members",
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
