import json

import numpy as np
import pytest

from survey_mass.errors import StoreError
from survey_mass.store import create_store, open_store, write_partition


def _cols(n, start=0):
    return {
        "id": np.arange(start, start + n),
        "name": np.array([f"c{i}" for i in range(start, start + n)]),
        "ra": np.full(n, 150.5),
        "dec": np.full(n, 5.0),
        "z": np.full(n, 0.2),
        "quality": np.zeros(n, int),
        "log10_m500_label": np.full(n, np.nan),
    }


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    create_store(
        path,
        cutout_size=16,
        pixel_scale_arcsec=3.168,
        healpix_order=2,
        survey="t",
        kind="mock",
        provenance={"seed": 0},
    )
    return path


def test_round_trip_batches_and_ids(store):
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(21, 5, 16, 16)).astype(np.float32)
    write_partition(store, 106, imgs, _cols(21))
    st = open_store(store)
    assert st.partitions == [106] and st.check_partition(106) == 21
    got = np.concatenate([b for _, b in st.iter_batches(106, batch_size=8)])
    np.testing.assert_array_equal(got, imgs)
    img, row = st.read_by_id(13)
    np.testing.assert_array_equal(img, imgs[13])
    assert row["name"] == "c13" and row["partition"] == 106
    g = json.loads((store / "Norder=2" / "Npix=106" / "images" / "zarr.json").read_text())
    codecs = [c["name"] for c in g["codecs"]]
    assert "sharding_indexed" in codecs  # one shard per partition with small inner chunks
    assert g["codecs"][0]["configuration"]["chunk_shape"][0] == 8


def test_half_written_partition_is_invisible(store):
    (store / "Norder=2" / ".tmp-Npix=107-abc").mkdir()
    write_partition(store, 106, np.zeros((2, 5, 16, 16), np.float32), _cols(2))
    assert open_store(store).partitions == [106]


def test_reopening_with_other_geometry_is_refused(store):
    with pytest.raises(StoreError, match="different cutout_size"):
        create_store(
            store,
            cutout_size=32,
            pixel_scale_arcsec=3.168,
            healpix_order=2,
            survey="t",
            kind="mock",
            provenance={"seed": 0},
        )


def test_wrong_schema_version(store):
    import zarr

    root = zarr.open_group(str(store), mode="r+")
    attrs = dict(root.attrs["survey_mass"])
    attrs["schema_version"] = 99
    root.attrs["survey_mass"] = attrs
    with pytest.raises(StoreError, match="schema_version 99"):
        open_store(store)


def test_not_a_store_and_missing_partition(tmp_path, store):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a Zarr"):
        open_store(tmp_path / "plain")
    with pytest.raises(StoreError, match="partition 5 .* missing"):
        open_store(store).columns(5)


def test_wrong_image_shape_is_refused(store):
    with pytest.raises(StoreError, match="shape"):
        write_partition(store, 106, np.zeros((2, 5, 8, 8), np.float32), _cols(2))


def test_attributes_follow_the_schema_file(store):
    from survey_mass import schemas

    st = open_store(store)
    assert schemas.first_error(schemas.STORE_ATTRIBUTES, st.attrs) is None
    bad = dict(st.attrs, bands=["g", "r"])
    assert "bands" in schemas.first_error(schemas.STORE_ATTRIBUTES, bad)


def test_a_store_without_compression_reads_the_same_and_still_catches_corruption(tmp_path):
    """``codec = none`` (the --device-prep path's store): the same pixels with no decompression, a CRC32C per
    chunk, so a flipped byte is an error naming the partition, never silently wrong pixels."""
    from survey_mass.paths import partition_group_path

    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 5, 16, 16)).astype(np.float32)
    stores = {}
    for codec in ("zstd", "none"):
        path = tmp_path / f"{codec}.zarr"
        kw = dict(cutout_size=16, pixel_scale_arcsec=3.168, healpix_order=2, survey="t", kind="mock")
        create_store(path, provenance={"seed": 0}, codec=codec, **kw)
        write_partition(path, 100, images, _cols(40))
        stores[codec] = open_store(path)
    assert stores["zstd"].meta.codec is None and stores["none"].meta.codec == "none"
    np.testing.assert_array_equal(stores["none"].images(100), images)
    np.testing.assert_array_equal(stores["zstd"].images(100), images)
    with pytest.raises(StoreError, match="codec"):  # a resume with the other codec is refused
        create_store(tmp_path / "none.zarr", provenance={"seed": 0}, codec="zstd", **kw)
    shard = next(
        f
        for f in (tmp_path / "none.zarr" / partition_group_path(2, 100) / "images").rglob("*")
        if f.is_file() and f.name != "zarr.json"
    )
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="100"):
        open_store(tmp_path / "none.zarr").images(100)
