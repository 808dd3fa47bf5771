"""``survey-mass explain``: recompute the full attribution maps of one catalog row and draw them.

The catalog row says which store and model made it (``hats.properties``: ``survey_mass_store``,
``survey_mass_model_id``). The cutout is read back from the store by id, the maps are recomputed with the same
integrated gradients x Grad-CAM as the run (:mod:`survey_mass.attribution`), and one PNG shows:

* the gri colour composite with a 1 arcmin circle;
* the joint IG x Grad-CAM map over the i band;
* the joint map of each band, on one colour scale;
* the fraction of the attribution in each band;
* the CNN and richness masses with their errors, and the label and true mass where the store has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import paths
from ..errors import CatalogError


def _properties(catalog: Path) -> dict[str, str]:
    props = {}
    f = paths.hats_properties(catalog)
    if not f.is_file():
        raise CatalogError(f"catalog {str(catalog)!r}: not a HATS catalog (no hats.properties)")
    for line in f.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    return props


def catalog_row(catalog: str | Path, cluster_id: int) -> dict:
    """The catalog row of ``cluster_id`` as a dict (CatalogError if there is none)."""
    from ..catalog.query import query

    res = query(catalog, f"SELECT * FROM catalog WHERE id = {int(cluster_id)}")
    if res.table.num_rows == 0:
        raise CatalogError(f"catalog {str(catalog)!r}: no row with id {cluster_id}")
    return res.table.slice(0, 1).to_pylist()[0]


def explain_cluster(
    catalog: str | Path,
    cluster_id: int,
    png: str | Path,
    *,
    store: str | Path | None = None,
    model: str | Path | None = None,
    steps: int = 1024,
) -> dict:
    """Recompute one row's attribution maps and draw them into ``png``. Returns the recomputed summaries.

    ``store`` and ``model`` default to what the catalog records (the shipped weights when the catalog's model
    id is theirs); a model whose id differs from the catalog's is refused.
    """
    from ..attribution import SUMMARY_COLUMNS, attribute
    from ..models.bundle import ModelError, load_bundle
    from ..resources import model_dir
    from ..store import open_store
    from .figures import explain_figure

    catalog = Path(catalog)
    props = _properties(catalog)
    row = catalog_row(catalog, cluster_id)
    store_path = Path(store) if store else Path(props.get("survey_mass_store", ""))
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
    st = open_store(store_path)
    bundle.check_store(st)
    image, record = st.read_by_id(int(cluster_id))
    z = float(record["z"])
    if not np.isfinite(z):
        raise CatalogError(
            f"catalog {str(catalog)!r}: row {cluster_id} has no redshift, so no mass to explain"
        )
    lam = record.get("richness")
    a = attribute(
        bundle,
        image[None],
        np.array([z]),
        steps=steps,
        pixel_scale=st.pixel_scale,
        return_maps=True,
        richness=None if lam is None else np.array([float(lam)]),
    )
    summary = {c: float(a[c][0]) for c in SUMMARY_COLUMNS}
    explain_figure(
        image,
        a["maps"][0],
        row,
        summary,
        png,
        pixel_scale=st.pixel_scale,
    )
    return {"id": int(cluster_id), "png": str(png), **summary}
