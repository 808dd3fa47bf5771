import json

import numpy as np
import pytest

from survey_mass.cli import main
from survey_mass.errors import FootprintError
from survey_mass.footprint import parse_footprint

PUBLISHED_DR12_DEG2 = 14555.0


def test_dr12_area_and_anchor_points():
    fp = parse_footprint("dr12")
    # 79% of the published imaging area: the part the real polygons and stripes give (see data/README.md)
    assert 0.75 * PUBLISHED_DR12_DEG2 < fp.area_deg2 < 1.02 * PUBLISHED_DR12_DEG2
    inside = fp.contains([0.0, 180.0, 0.0], [0.0, 30.0, -60.0])
    assert inside.tolist() == [True, True, False]  # Stripe 82, northern cap, never observable from APO


def test_dr12_holds_real_redmapper(shared_redmapper):
    fp = parse_footprint("dr12")
    inside = fp.contains(shared_redmapper["ra"], shared_redmapper["dec"])
    assert inside.mean() >= 0.99
    north = (
        (shared_redmapper.ra > 120)
        & (shared_redmapper.ra < 240)
        & (shared_redmapper.dec > 5)
        & (shared_redmapper.dec < 55)
    )
    s82 = ((shared_redmapper.ra > 330) | (shared_redmapper.ra < 45)) & (shared_redmapper.dec.abs() < 1.0)
    assert inside[north.to_numpy()].mean() > 0.995
    assert inside[s82.to_numpy()].all()


def test_box_and_wrapping_box():
    fp = parse_footprint("box:150,160,0,10")
    assert fp.area_deg2 == pytest.approx(99.5, rel=0.03)  # 10 deg x (sin 10 - sin 0) rad, plus edge cells
    wrap = parse_footprint("box:350,10,-5,5")
    assert wrap.contains([355, 5, 180], [0, 0, 0]).tolist() == [True, True, False]
    assert wrap.area_deg2 == pytest.approx(200, rel=0.03)


def test_moc_file_round_trip(tmp_path):
    fp = parse_footprint("box:150,160,0,10")
    path = tmp_path / "mine.fits"
    fp.moc.save(str(path), format="fits")
    again = parse_footprint(str(path))
    assert again.area_deg2 == pytest.approx(fp.area_deg2)
    assert again.partitions.tolist() == fp.partitions.tolist()


@pytest.mark.parametrize(
    "spec, words",
    [
        ("atlantis", "unknown name"),
        ("box:150,160,0,100", "DEC_MAX"),
        ("box:400,10,0,5", "RA_MIN"),
        ("box:150,150,0,5", "empty"),
        ("box:1,2,3", "four numbers"),
    ],
)
def test_bad_footprints(spec, words):
    with pytest.raises(FootprintError, match=words):
        parse_footprint(spec)


def test_not_a_moc(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_text("this is not FITS")
    with pytest.raises(FootprintError, match="not a MOC"):
        parse_footprint(str(bad))


def test_cli_json_has_exact_keys(capsys):
    assert main(["footprint", "box:150,160,0,10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"name", "area_deg2", "order", "n_partitions", "partitions"}
    assert d["n_partitions"] == len(d["partitions"]) > 0


def test_cli_png_is_a_real_picture(tmp_path):
    from PIL import Image

    out = tmp_path / "map.png"
    assert main(["footprint", "box:150,200,0,30", "--png", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB")).astype(float)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.std() > 10  # not blank
