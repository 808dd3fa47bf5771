"""The on-disk layout of stores and catalogs. No other module builds these paths.

Store (Zarr v3)::

    STORE/zarr.json                         root group; attribute 'survey_mass' holds the store contract
    STORE/Norder=k/Npix=n/                  one group per partition (HATS naming)
    STORE/Norder=k/.tmp-Npix=n-<uuid>/      a partition being written; renamed when complete

Catalog (HATS)::

    CATALOG/hats.properties, partition_info.csv
    CATALOG/dataset/_metadata, _common_metadata
    CATALOG/dataset/Norder=k/Dir=d/Npix=n.parquet   with d = (n // 10000) * 10000
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

PARTITION_RE = re.compile(r"^Npix=(\d+)$")


def order_dir_name(order: int) -> str:
    return f"Norder={int(order)}"


def partition_group_name(pixel: int) -> str:
    return f"Npix={int(pixel)}"


def partition_group_path(order: int, pixel: int) -> str:
    """Path of a partition's group inside a store, e.g. ``Norder=2/Npix=45``."""
    return f"{order_dir_name(order)}/{partition_group_name(pixel)}"


def temp_partition_group_path(order: int, pixel: int) -> str:
    return f"{order_dir_name(order)}/.tmp-{partition_group_name(pixel)}-{uuid.uuid4().hex[:10]}"


def pixel_directory(pixel: int) -> int:
    """HATS ``Dir`` of a pixel."""
    return (int(pixel) // 10000) * 10000


def catalog_partition_file(catalog: Path | str, order: int, pixel: int) -> Path:
    """Parquet file of a catalog partition."""
    return (
        Path(catalog)
        / "dataset"
        / f"Norder={int(order)}"
        / f"Dir={pixel_directory(pixel)}"
        / f"Npix={int(pixel)}.parquet"
    )
