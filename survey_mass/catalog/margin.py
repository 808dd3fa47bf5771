"""The margin cache of a mass catalog: for each partition, the rows of its neighbours that lie within the margin
threshold of its border, so that lsdb's cross-matches and neighbour searches near a border are exact.

The margin follows hats' and lsdb's own construction (``lsdb.loaders.dataframe.margin_catalog_generator``, the
same as hats-import's margin pipeline):

* the margin order is :func:`hats.pixel_math.healpix_shim.margin2order` of the threshold, the highest order whose
  pixels are wider than the threshold;
* the margin pixels of a partition are :func:`hats.pixel_math.get_margin`, its external neighbours at that
  order; the partitions of the catalog and the empty pixels around them (hats' negative tree) get one, because
  lsdb aligns a cross-match on both;
* a row belongs to the margin of every partition one of whose margin pixels holds it. Rows are assigned by
  their ``_healpix_29`` index, so no coordinate is converted twice. As in lsdb and hats-import without the fine
  filter, a margin holds every row within the threshold and some rows up to one margin pixel further.

The rows are read from the finished primary partitions (position columns first, then only the rows that go to
a margin), so memory follows the margin, not the catalog. Each margin partition is written atomically; a rerun
keeps the margin partitions already written (they depend only on the primary partitions, which a resumed run
never changes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import paths
from ..errors import CatalogError

#: the spatial index column (order-29 nested HEALPix) every partition is sorted by
SPATIAL_INDEX = "_healpix_29"


def margin_order(threshold_arcsec: float, catalog_order: int) -> int:
    """The HEALPix order of the margin pixels: hats' order for the threshold (:func:`check_margin` makes sure
    it lies above the partitions')."""
    import hats.pixel_math.healpix_shim as hp

    return int(hp.margin2order(np.asarray(threshold_arcsec / 60.0)))


def check_margin(threshold_arcsec: float, catalog_order: int) -> None:
    """Refuse a margin the partitions cannot hold, as lsdb does: its pixels must be finer than the
    partitions and at least as wide as the threshold, else rows within the threshold would be missed."""
    import hats.pixel_math.healpix_shim as hp

    if threshold_arcsec == 0:
        return
    if not 1.0 <= threshold_arcsec <= 3600.0:
        raise CatalogError(f"--margin-arcsec {threshold_arcsec:g}: give 0 (no margin) or 1 to 3600 arcsec")
    order = margin_order(threshold_arcsec, catalog_order)
    if order <= catalog_order or hp.order2mindist(order) * 60.0 < threshold_arcsec:
        widest = hp.order2mindist(catalog_order + 1) * 60.0
        raise CatalogError(
            f"--margin-arcsec {threshold_arcsec:g}: partitions of order {catalog_order} can hold a margin of at most "
            f"{widest:.0f} arcsec (its pixels must be finer than the partitions); use a smaller margin or partitions "
            "of a lower order"
        )


def margin_targets(pixels: Iterable[tuple[int, int]], order_m: int) -> dict[int, list[tuple[int, int]]]:
    """For each margin pixel at ``order_m``, the (order, pixel) partitions whose margin it lies in."""
    from hats.pixel_math import get_margin

    targets: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for order, pixel in pixels:
        for m in get_margin(int(order), int(pixel), order_m - int(order)):
            targets[int(m)].append((int(order), int(pixel)))
    return targets


def negative_pixels(order: int, pixels: list[int]) -> list[tuple[int, int]]:
    """The empty sky around partitions of one order, tiled with the fewest pixels, as (order, pixel): hats'
    negative tree (``hats.pixel_tree.negative_tree.compute_negative_tree_pixels``, which the tests compare
    with), without its tree alignment's ~10 s of numba compilation per process."""
    out: list[tuple[int, int]] = []
    candidates = set(range(12))
    for o in range(order + 1):
        covered = {p >> (2 * (order - o)) for p in pixels}
        out += [(o, c) for c in sorted(candidates - covered)]
        candidates = {4 * c + k for c in covered for k in range(4)}
    return out


def collect_margin_rows(
    out, order: int, pixels: list[int], order_m: int, targets: dict[int, list[tuple[int, int]]]
) -> dict[tuple[int, int], list[pa.Table]]:
    """Rows of each primary partition that lie in another partition's margin, grouped by that partition."""
    shift = 2 * (29 - order_m)
    keys = np.sort(np.fromiter(targets.keys(), np.int64, len(targets)))
    rows: dict[tuple[int, int], list[pa.Table]] = defaultdict(list)
    for pixel in pixels:
        f = paths.catalog_partition_file(paths.primary_catalog(out), order, pixel)
        with f.open("rb") as fh:
            parquet = pq.ParquetFile(fh)
            index = parquet.read(columns=[SPATIAL_INDEX]).column(SPATIAL_INDEX).to_numpy()
            m = index >> shift
            at = np.minimum(np.searchsorted(keys, m), keys.size - 1)
            near = np.flatnonzero(keys[at] == m)
            if near.size == 0:
                continue
            table = parquet.read().take(pa.array(near))
        by_pixel: dict[tuple[int, int], list[int]] = defaultdict(list)
        for k, mp in zip(near.tolist(), m[near].tolist(), strict=True):
            for target in targets[mp]:
                by_pixel[target].append(k)
        position = {k: i for i, k in enumerate(near.tolist())}
        for target, ks in by_pixel.items():
            rows[target].append(table.take(pa.array([position[k] for k in ks])))
    return rows


def write_margin(
    out,
    order: int,
    pixels: list[int],
    threshold_arcsec: float,
    *,
    schema: pa.Schema,
    progress: bool = False,
) -> list[tuple[int, int]]:
    """Build and write the margin cache's partitions; return their (order, pixel), sorted."""
    from ..progress import bar
    from .writer import write_parquet_atomic

    check_margin(threshold_arcsec, order)
    root = paths.margin_catalog(out, threshold_arcsec)
    order_m = margin_order(threshold_arcsec, order)
    targets = margin_targets([(order, p) for p in pixels] + negative_pixels(order, pixels), order_m)
    written = sorted(
        (o, p) for o, p in paths.catalog_partition_pixels(root) if (o, p) in set(_all_targets(targets))
    )
    rows = collect_margin_rows(out, order, pixels, order_m, targets)
    todo = [t for t in rows if t not in set(written)]
    b = bar(len(todo), "margin", enabled=progress and bool(todo), unit="partition")
    for o, p in sorted(todo):
        table = pa.concat_tables(rows[(o, p)]).cast(schema)
        table = table.take(pc.sort_indices(table, [(SPATIAL_INDEX, "ascending")]))
        write_parquet_atomic(paths.catalog_partition_file(root, o, p), table, what=f"margin partition {p}")
        b.update(1)
    b.close()
    return sorted(set(written) | set(todo))


def _all_targets(targets: dict[int, list[tuple[int, int]]]) -> set[tuple[int, int]]:
    return {t for ts in targets.values() for t in ts}
