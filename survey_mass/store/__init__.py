"""Cutout stores: the Zarr contract (:mod:`.cutouts`) and real-data ingest from SDSS frames (:mod:`.ingest`)."""

from .cutouts import CutoutStore, StoreAttributes, create_store, open_store, write_partition

__all__ = ["CutoutStore", "StoreAttributes", "create_store", "open_store", "write_partition"]
