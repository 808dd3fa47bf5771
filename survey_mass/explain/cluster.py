"""``survey-mass explain``: recompute one catalog row's attribution map, draw it, and test it.

The catalog row says which store and model made it (``hats.properties``: ``survey_mass_store``,
``survey_mass_model_id``) and ``run_config.json`` how its map was made (baselines, steps, tolerance, seed), so the
recomputed summaries are the row's. The cutout is read back from the store by id, and one PNG shows:

* the gri colour composite with the central aperture, the members and R_lambda;
* the signed map (dex per pixel, all bands) over the i band, with its completeness;
* the exact contributions of every input (``contrib_*``) beside the map's per-band sums;
* the headline, catalogue-lambda and pixels-only masses, and the label and true mass where the store has them;
* the signed map of each band on one scale.

It also returns (and ``--json`` prints) the contributions, the completeness, and the deletion AOPC of the map's
order against random orders (:func:`survey_mass.faithfulness.deletion_insertion`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import paths
from ..errors import CatalogError
from ..storage import as_path


def _properties(catalog: Path) -> dict[str, str]:
    """The primary catalog's ``hats.properties`` (a collection's, or a plain catalog's)."""
    from ..catalog.query import primary_root, read_properties

    f = paths.hats_properties(primary_root(catalog))
    if not f.is_file():
        raise CatalogError(f"catalog {str(catalog)!r}: not a HATS catalog (no hats.properties)")
    return read_properties(f)


def catalog_row(catalog: str | Path, cluster_id: int) -> dict:
    """The catalog row of ``cluster_id`` as a dict (CatalogError if there is none)."""
    from ..catalog.query import query

    res = query(catalog, f"SELECT * FROM catalog WHERE id = {int(cluster_id)}")
    if res.table.num_rows == 0:
        raise CatalogError(f"catalog {str(catalog)!r}: no row with id {cluster_id}")
    return res.table.slice(0, 1).to_pylist()[0]


def _run_settings(catalog: Path, baselines: int | None) -> dict:
    """:func:`~survey_mass.attribution.attribute`'s settings of the run that made the catalog
    (``run_config.json``; the pipeline's defaults where unrecorded), with ``baselines`` overriding the run's."""
    import json

    from ..inference.run import RunOptions

    f = paths.run_config_file(catalog)
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    d = RunOptions()
    o = RunOptions(
        ig_baselines=int(baselines or cfg.get("ig_baselines") or d.ig_baselines),
        ig_steps=int(cfg.get("ig_steps") or d.ig_steps),
        ig_tolerance_dex=float(cfg.get("ig_tolerance_dex") or d.ig_tolerance_dex),
        seed=int(cfg.get("seed", d.seed)),
    )
    return o.attribution_kwargs()


def explain_cluster(
    catalog: str | Path,
    cluster_id: int,
    png: str | Path | None,
    *,
    store: str | Path | None = None,
    model: str | Path | None = None,
    baselines: int | None = None,
) -> dict:
    """Recompute one row's map, draw it into ``png`` (None: no picture) and test it. Returns one JSON-ready
    dict: the row's mass and contributions, the map's summaries and completeness, and its AOPC.

    ``store`` and ``model`` default to what the catalog records (the shipped weights when the catalog's model
    id is theirs); a model whose id differs from the catalog's is refused. ``baselines`` overrides the run's
    (more baselines, a smoother map; the summaries then differ from the row's by the map's noise).
    """
    from ..attribution import CONTRIBUTION_GROUPS, REGIONS, attribute
    from ..faithfulness import deletion_insertion
    from ..models.bundle import ModelError, load_bundle
    from ..photometry import BANDS
    from ..resources import model_dir
    from ..store import open_store
    from .figures import explain_figure

    catalog = as_path(catalog)
    props = _properties(catalog)
    row = catalog_row(catalog, cluster_id)
    store_path = as_path(store) if store else as_path(props.get("survey_mass_store", ""))
    if not store_path.exists():
        if store:
            raise CatalogError(f"--store {str(store_path)!r}: no such store")
        raise CatalogError(
            f"catalog {str(catalog)!r} was made from store {str(store_path)!r}, which is not there; pass --store"
        )
    bundle = load_bundle(model if model else model_dir())
    want = props.get("survey_mass_model_id")
    if want and bundle.model_id != want:
        raise ModelError(
            f"model {str(bundle.path)!r} is {bundle.model_id}, but catalog {str(catalog)!r} was made by {want}; "
            "pass the --model that made it"
        )
    if row.get("log10_m500") is None:
        raise CatalogError(
            f"catalog {str(catalog)!r}: row {cluster_id} has no mass (quality {row.get('quality')}), so nothing to "
            "explain"
        )
    st = open_store(store_path)
    bundle.check_store(st)
    image, record = st.read_by_id(int(cluster_id))
    z = np.array([float(record["z"])])
    lam = record.get("richness")
    lam = None if lam is None else np.array([float(lam)])
    bcg = record.get("bcg_mag_i")
    bcg = None if bcg is None else np.array([float(bcg)])
    run = _run_settings(catalog, baselines)
    ids = np.array([int(cluster_id)])
    a = attribute(
        bundle,
        image[None],
        z,
        ids=ids,
        richness=lam,
        bcg_mag_i=bcg,
        pixel_scale=st.pixel_scale,
        **run,
        return_maps=True,
    )
    aopc = deletion_insertion(bundle, a, ids=ids, richness=lam, bcg_mag_i=bcg, z=z, seed=run["seed"])
    if png is not None:
        explain_figure(image, a, row, png, pixel_scale=st.pixel_scale)
    out = {
        "id": int(cluster_id),
        "name": row.get("name"),
        "z": float(z[0]),
        "log10_m500": row.get("log10_m500"),
        "log10_m500_err": row.get("log10_m500_err"),
        "log10_m500_reference": row.get("log10_m500_reference"),
        "contributions": {g: row.get(f"contrib_{g}") for g in CONTRIBUTION_GROUPS},
        "attr_delta_dex": float(a["attr_delta_dex"][0]),
        "ig_completeness_dex": float(a["ig_completeness_dex"][0]),
        "ig_steps": int(a["ig_steps"][0]),
        "ig_baselines": int(run["baselines"]),
        "bands_dex": {b: float(a[f"attr_{b}_dex"][0]) for b in BANDS},
        "regions_dex": {r: float(a[f"attr_{r}_dex"][0]) for r in REGIONS},
        "regions_abs_share": {r: float(a[f"attr_{r}_abs_share"][0]) for r in REGIONS},
        **{k: float(v[0]) for k, v in aopc.items()},
        "png": None if png is None else str(png),
    }
    return out
