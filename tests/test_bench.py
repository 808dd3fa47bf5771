"""``survey-mass bench`` runs every leg on the same cutouts and reports the figures it promises.

Timings are not asserted here (benchmarks live in benchmarks/, not in timed tests); what is checked is that each
leg really ran on the store's cutouts and produced sane numbers.
"""

from __future__ import annotations

import json

import numpy as np

from survey_mass.cli import main

KEYS = (
    "model_cutouts_per_s",
    "pipeline_cutouts_per_s",
    "naive_cutouts_per_s",
    "io_cutouts_per_s",
    "attribution_s_per_cutout",
)


def test_bench_json(small_store, tmp_path, capsys):
    from survey_mass.store import open_store
    from survey_mass.testing import biggest_partition, make_tiny_store

    store = make_tiny_store(tmp_path / "tiny.zarr", biggest_partition(small_store), 30)
    n = open_store(store).n_total
    code = main(
        [
            "bench",
            "--json",
            "--store",
            str(store),
            "--footprint",
            "box:150,160,0,12",
            "--max-workers",
            "1",
            "--device",
            "cpu",
            "--workdir",
            str(tmp_path),
            "--repeat",
            "2",
        ]
    )
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    for k in KEYS:
        assert np.isfinite(r[k]) and r[k] > 0, k
    assert r["cutouts"] == n
    # the naive leg really wrote one FITS file per band per cutout
    assert len(list((tmp_path / "naive_fits").glob("*.fits"))) == 5 * n
    # reading alone is faster than reading and computing, for both ways of reading
    assert r["io_cutouts_per_s"] > r["pipeline_cutouts_per_s"]
    assert r["naive_io_cutouts_per_s"] > r["naive_cutouts_per_s"]
    assert set(r["pipeline_cutouts_per_s_by_workers"]) == {"1"}
    # each rate is the median of its repeats, inside the (min, max) it reports
    assert r["repeat"] == 2
    for k, (lo, hi) in r["spread"].items():
        assert lo <= r[k] <= hi, k
    lo, hi = r["pipeline_over_naive_range"]
    assert lo <= r["pipeline_over_naive"] <= hi
    assert r["projection"]["dr12_redmapper"]["hours_masses"] > 0
