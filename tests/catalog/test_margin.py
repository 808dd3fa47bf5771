"""The margin cache: lsdb's cross-match recipe from the README finds every cluster again across partition
borders (#19), and the margin holds exactly the neighbours' rows near each border."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_mass import paths
from survey_mass.candidates import load_redmapper
from survey_mass.catalog.writer import finalize, to_table, write_partition
from survey_mass.testing import offset_crossmatch

ORDER = 2  # the dr12 pipeline's partition order


def _write_collection(out, rows: pd.DataFrame, margin_arcsec: float):
    """A collection of ``rows`` partitioned as a run partitions them (the CNN columns left null)."""
    from hats.pixel_math.healpix_shim import radec2pix

    pix = radec2pix(ORDER, rows["ra"].to_numpy(), rows["dec"].to_numpy())
    for p in np.unique(pix):
        part = rows[pix == p]
        write_partition(
            out, ORDER, int(p), to_table({c: part[c].to_numpy() for c in ("id", "name", "ra", "dec", "z")})
        )
    return finalize(
        out, ORDER, sorted(np.unique(pix).tolist()), name="t", provenance={}, margin_arcsec=margin_arcsec
    )


@pytest.fixture(scope="module")
def redmapper_collections(tmp_path_factory):
    """The 5,757 real redMaPPer clusters of a 80 x 30 deg box (18 order-2 partitions, so hundreds of clusters
    near their borders) as a collection with the default 60" margin (the whole catalogue: benchmarks/
    crossmatch_offset.py)."""
    cat = load_redmapper()
    box = (cat.ra >= 140) & (cat.ra < 220) & (cat.dec >= 0) & (cat.dec < 30)
    rows = cat.loc[box, ["id", "name", "ra", "dec", "z"]].reset_index(drop=True)
    base = tmp_path_factory.mktemp("margin")
    return rows, base / "with", _write_collection(base / "with", rows, 60.0)


@pytest.mark.slow
def test_offset_crossmatch_loses_no_pair(redmapper_collections):
    """Every cluster re-observed 40" away in a random direction: the README recipe finds each one again."""
    rows, with_margin, written = redmapper_collections
    assert written.margin_rows > 0
    found = offset_crossmatch(with_margin, rows)
    assert found.rows == found.reachable == len(rows) == 5757
    assert found.lost == 0 and found.matched == found.matched_to_nearest == found.rows, found
    # a handful of re-observations land nearer another cluster than their own: the recipe's n_neighbors=1 then
    # (rightly) returns that one
    assert found.matched_to_own >= found.rows - 10
    # against the primary catalog alone (no margin cache) the same recipe loses the pairs split by a partition
    # border: the check can fail
    assert offset_crossmatch(paths.primary_catalog(with_margin), rows).lost > 0


def test_margin_holds_the_neighbours_rows_near_each_border(redmapper_collections):
    """Each margin partition holds rows of other partitions only, each row unchanged, and every row within 60"
    of a partition's border (within its HEALPix pixel's neighbours) is in that partition's margin."""
    from astropy.coordinates import SkyCoord
    from hats.pixel_math.healpix_shim import radec2pix

    rows, out, _ = redmapper_collections
    margin = paths.margin_catalog(out, 60)
    primary = pq.ParquetDataset(paths.catalog_partition_files(paths.primary_catalog(out))).read().to_pandas()
    pix = radec2pix(ORDER, primary["ra"].to_numpy(), primary["dec"].to_numpy())
    sky = SkyCoord(primary["ra"].to_numpy(), primary["dec"].to_numpy(), unit="deg")
    for order, pixel in paths.catalog_partition_pixels(margin):
        m = pq.read_table(paths.catalog_partition_file(margin, order, pixel)).to_pandas()
        assert m["id"].is_unique and order <= ORDER
        own = radec2pix(order, m["ra"].to_numpy(), m["dec"].to_numpy())
        assert (own != pixel).all()  # never a partition's own rows
        src = primary.set_index("id").loc[m["id"]]
        np.testing.assert_array_equal(src["ra"].to_numpy(), m["ra"].to_numpy())
        if order != ORDER:
            continue
        # completeness: every other partition's row within 60" of one of this partition's rows is in the margin
        inside = np.flatnonzero(pix == pixel)
        others = np.flatnonzero(pix != pixel)
        if inside.size == 0:
            continue
        idx, _, sep, _ = sky[inside].search_around_sky(sky[others], 60 * 1.0 / 3600 * sky.ra.unit)
        near = set(primary["id"].to_numpy()[others[np.unique(idx)]].tolist())
        assert near <= set(m["id"].tolist())


@pytest.mark.parametrize("pixels", [[0], [5, 6, 7, 45], list(range(40, 80)), list(range(192))])
def test_negative_pixels_are_hats_negative_tree(pixels):
    from hats.pixel_math import HealpixPixel
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    from survey_mass.catalog.margin import negative_pixels

    tree = PixelTree.from_healpix([HealpixPixel(ORDER, p) for p in pixels])
    want = sorted((p.order, p.pixel) for p in compute_negative_tree_pixels(tree))
    assert sorted(negative_pixels(ORDER, pixels)) == want


def test_a_margin_the_partitions_cannot_hold_is_refused(small_store, tmp_path):
    """lsdb's rule: margin pixels finer than the partitions and at least as wide as the threshold; otherwise
    rows within the threshold would silently be missing from the margin."""
    from survey_mass.catalog.margin import check_margin
    from survey_mass.errors import CatalogError
    from survey_mass.testing import run_small

    check_margin(60, 2)
    check_margin(60, 10)
    for threshold, order in ((60, 11), (120, 10), (3600, 6), (0.5, 2)):
        with pytest.raises(CatalogError, match="--margin-arcsec"):
            check_margin(threshold, order)
    with pytest.raises(CatalogError, match="--margin-arcsec 0.5"):  # refused before anything is written
        run_small(small_store, tmp_path / "out", attribution="none", margin_arcsec=0.5)
    assert not (tmp_path / "out").exists()
