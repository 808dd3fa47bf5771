import numpy as np

from survey_mass.mock import physics
from survey_mass.mock.render import add_noise, render_band
from survey_mass.models.richness import RichnessBaseline, detect, red_sequence_table
from survey_mass.photometry import BANDS, mag_to_nmgy

PIX = RichnessBaseline().pixel_scale  # the shipped geometry: 64 pixels of 6.336"


def _cluster_image(n_red: int, z: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gr, ri = red_sequence_table()
    colour = np.interp(z, [0.05 * k for k in range(1, 14)], gr)
    mstar = float(physics.mstar_i(z))
    imag = mstar + rng.uniform(-1, 1.2, n_red)
    # well-separated positions on a grid around the centre (7 pixels apart), the closest first
    gx, gy = np.meshgrid(np.arange(-3, 4) * 7.0, np.arange(-3, 4) * 7.0)
    order = np.argsort(np.hypot(gx, gy).ravel())
    x = 31.5 + gx.ravel()[order][:n_red] + rng.uniform(-0.5, 0.5, n_red)
    y = 31.5 + gy.ravel()[order][:n_red] + rng.uniform(-0.5, 0.5, n_red)
    mags = np.stack([imag + colour + 1.5, imag + colour + 0.4, imag + 0.4, imag, imag - 0.3], axis=1)
    img = np.stack(
        [
            render_band(x, y, mag_to_nmgy(mags[:, b]), np.zeros(n_red), np.zeros(n_red, int), band, 64, PIX)
            for b, band in enumerate(BANDS)
        ]
    )
    return add_noise(img, PIX, rng)


def test_detect_finds_bright_sources():
    img = _cluster_image(15, 0.2, 0)
    src = detect(img)
    assert len(src["x"]) >= 14


def test_richness_rises_with_member_count():
    base = RichnessBaseline()
    gr, ri = red_sequence_table()
    base.colour_gr, base.colour_ri = gr.tolist(), ri.tolist()
    base.background = [0.0] * len(gr)
    lam = [base.richness(detect(_cluster_image(n, 0.2, n)), 0.2) for n in (5, 15, 40)]
    assert lam[0] < lam[1] < lam[2]
