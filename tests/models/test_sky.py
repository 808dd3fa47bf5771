"""sep's background in torch (#28, the device path): :func:`survey_mass.models.sky.measure_sky_torch` gives sep's
global sky level and noise (:func:`survey_mass.models.mass_model.measure_sky`) on the mock's cutouts and on the
masks a real store has: frame edges, a missing band, a constant band, a mesh with too few pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survey_mass.testing import biggest_partition


@pytest.fixture(scope="module")
def cutouts(small_store) -> np.ndarray:
    """60 cutouts of the small store, some of them masked as a real store's are."""
    imgs = biggest_partition(small_store)[1][:60].astype(np.float32).copy()
    imgs[0, :, :, :20] = np.nan  # a frame's edge
    imgs[1, 2] = np.nan  # a band missing
    imgs[2, 3] = 1.5  # a constant band
    imgs[3, :, :40, :40] = np.nan  # a corner: one mesh bad (< half its pixels), three partly masked
    imgs[4, 1] = np.nan
    imgs[4, 1, 5, 5] = 1.0  # one finite pixel: every mesh bad
    imgs[5, 0, 10:12, :] = np.inf  # a bleed trail
    imgs[6, 4] += np.float32(40.0)  # a bright sky
    imgs[7, 2, 3, 3] = -1e31  # below sep's -BIG: not a pixel
    return imgs


def test_the_torch_sky_equals_seps(cutouts):
    from survey_mass.models.mass_model import measure_sky
    from survey_mass.models.sky import measure_sky_torch

    want_level, want_sigma = measure_sky(cutouts)
    level, sigma = (t.numpy() for t in measure_sky_torch(torch.from_numpy(cutouts)))
    np.testing.assert_array_equal(np.isnan(sigma), np.isnan(want_sigma))
    assert np.isnan(sigma[1, 2]) and level[1, 2] == 0  # the missing band
    finite = np.isfinite(want_sigma)
    # float32 rounding: the sums are in another order than sep's, nothing else differs
    np.testing.assert_allclose(
        level[finite], want_level[finite], rtol=0, atol=1e-6 * want_sigma[finite].max()
    )
    np.testing.assert_allclose(sigma[finite], want_sigma[finite], rtol=1e-6)
    assert np.abs(level - want_level)[finite].max() <= 1e-4 * np.median(want_sigma[finite])


def test_the_median_walk_is_seps_two_pointer_walk():
    """The closed form (a merge of the two sides' running sums) against sep's loop, step by step, on random
    histograms with gaps, spikes and cuts anywhere."""
    from survey_mass.models.sky import _median_walk

    def sep_walk(h, lcut, hcut):  # background.c's loop, verbatim in Python
        lowsum = highsum = 0
        lo, hi = lcut, hcut
        for _ in range(lcut, hcut + 1):
            if lowsum < highsum:
                lowsum += h[lo]
                lo += 1
            else:
                highsum += h[hi]
                hi -= 1
        if hi < 0:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return hi + 0.5 + np.float64(highsum - lowsum) / (2.0 * max(h[lo], h[hi]))

    rng = np.random.default_rng(3)
    rows, levels = 400, 40
    h = rng.poisson(rng.uniform(0.2, 6, (rows, 1)), (rows, levels))
    h[rng.random((rows, levels)) < 0.2] = 0
    h[np.arange(rows), rng.integers(0, levels, rows)] += rng.integers(0, 30, rows)
    lcut = rng.integers(0, levels, rows)
    hcut = np.minimum(lcut + rng.integers(0, levels, rows), levels - 1)
    want = np.array([sep_walk(h[k], lcut[k], hcut[k]) for k in range(rows)])
    ht, lc, hc = torch.from_numpy(h), torch.from_numpy(lcut), torch.from_numpy(hcut)
    idx = torch.arange(levels)[None, :]
    hm = torch.where((idx >= lc[:, None]) & (idx <= hc[:, None]), ht, torch.zeros_like(ht))
    cum = torch.cumsum(hm, -1)
    got = _median_walk(hm, cum - hm, cum[:, -1], ht, lc, hc, idx).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=0, atol=1e-12)


def test_device_preparation_equals_the_cpus(cutouts):
    """prepare_images_on_device on the simulated CUDA device (batches smaller than the set, so that the side
    stream's order and the concatenation are exercised) gives prepare_images' arrays."""
    from survey_mass.models.mass_model import prepare_images, prepare_images_on_device
    from survey_mass.testing import simulated_cuda

    x, log_sigma, sky = prepare_images(cutouts)
    with simulated_cuda():
        xd, ld, skyd = prepare_images_on_device(cutouts, "cuda", batch_size=16)
        assert xd.device.type != "cpu" and ld.device.type != "cpu"
        xd, ld = xd.cpu(), ld.cpu()
    np.testing.assert_array_equal(np.isnan(skyd), np.isnan(sky))
    np.testing.assert_allclose(skyd, sky, rtol=1e-6)
    np.testing.assert_allclose(ld.numpy(), log_sigma.numpy(), atol=1e-6)
    np.testing.assert_allclose(xd.numpy(), x.numpy(), atol=1e-5)


def test_a_cutout_that_is_not_whole_meshes_is_refused():
    from survey_mass.models.sky import measure_sky_torch

    with pytest.raises(ValueError, match="48 x 40 pixels"):
        measure_sky_torch(torch.zeros((1, 5, 48, 40)))
