"""The GPU path on a CPU (#28): every function a GPU run calls, run on a simulated CUDA device
(:func:`survey_mass.testing.simulated_cuda`: CUDA's device rules, CPU arithmetic). A CPU tensor met by a device
tensor fails here as it would on the first call on a GPU; the device run's catalogue must equal the CPU's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survey_mass.testing import biggest_partition, make_tiny_store, read_catalog, simulated_cuda


def test_the_simulated_device_keeps_cudas_rules():
    """The simulator itself: what CUDA refuses, it refuses; what CUDA allows, it allows."""
    with simulated_cuda():
        on_device = torch.arange(4.0).to("cuda")
        keep = torch.tensor([0, 2], device="cuda")
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            torch.arange(4.0)[keep]  # a CPU tensor indexed by a device tensor (#28: MassModel.ood_score)
        with pytest.raises(RuntimeError, match="two devices"):
            on_device - torch.ones(4)  # a device tensor with a CPU one
        with pytest.raises((TypeError, RuntimeError)):
            on_device.numpy()  # a device tensor has no numpy view
        assert on_device[torch.tensor([1, 3])].cpu().tolist() == [1.0, 3.0]  # CPU indices on a device tensor
        assert (on_device * torch.tensor(2.0)).cpu().tolist() == [0.0, 2.0, 4.0, 6.0]  # a CPU scalar mixes
        x = torch.ones(3, requires_grad=True)
        (x.to("cuda") * 3).sum().backward()  # the move to the device is differentiable
        assert x.grad.tolist() == [3.0, 3.0, 3.0]


def test_a_tensor_put_on_the_device_in_one_context_stays_there_in_the_next():
    """Modules cache device constants (the detection's rand_r table): as on CUDA, such a tensor is still a device
    tensor in a later context, and a CPU tensor indexed by it is still refused."""
    with simulated_cuda():
        cached = torch.arange(4.0).to("cuda")
    with simulated_cuda():
        idx = torch.tensor([1, 2], device="cuda")
        assert cached[idx].cpu().tolist() == [1.0, 2.0]
        with pytest.raises(RuntimeError, match="indices should be either on cpu"):
            torch.arange(4.0)[idx]


def test_the_mass_models_ood_score_on_a_device(monkeypatch):
    """#28 item 1, as the reviewer found it: ood_score built a CPU tensor and indexed it with the device's
    ``keep``. Run under reduced precision, where the guard calls it for every row."""
    from survey_mass.models.bundle import load_bundle
    from survey_mass.resources import model_dir

    cpu = load_bundle(model_dir())
    raw = np.random.default_rng(1).normal(size=(6, len(cpu.pixels.input_names()))).astype(np.float32)
    want = cpu.pixels.ood_score(raw)
    with simulated_cuda():
        dev = load_bundle(model_dir()).to("cuda")
        got = dev.pixels.ood_score(raw)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def _tiny_run(small_store, tmp_path, n: int) -> dict:
    """run_catalog's arguments for the first ``n`` cutouts of the small store's biggest partition, in-process."""
    from survey_mass.footprint import parse_footprint
    from survey_mass.resources import model_dir

    return dict(
        store_path=make_tiny_store(tmp_path / "tiny.zarr", biggest_partition(small_store), n),
        model_path=str(model_dir()),
        footprint=parse_footprint("box:140,170,-5,20"),
        progress=False,
        workers=1,
        margin_arcsec=0,
    )


def test_a_device_run_mixes_no_devices_and_gives_the_cpus_catalogue(small_store, tmp_path, monkeypatch):
    """The whole partition on the simulated device, in fp16 as a GPU runs by default: the CPU stage, the
    device stage (the CNN, the precision guard with every row recomputed exactly, contributions, the batched
    detection, every row's attribution map) and the write. The rows equal the CPU fp32 run's."""
    import survey_mass.inference.predict as predict
    from survey_mass.inference.run import RunOptions, run_catalog

    monkeypatch.setattr(predict, "OOD_GUARD", 1e6)  # every row "near" the flag: the exact recompute runs
    kw = _tiny_run(small_store, tmp_path, 6)
    opts = dict(attribution="all", ig_steps=4, ig_baselines=2)
    cpu = run_catalog(catalog=tmp_path / "cpu", opts=RunOptions(device="cpu", precision="fp32", **opts), **kw)
    with simulated_cuda():
        dev = run_catalog(
            catalog=tmp_path / "dev", opts=RunOptions(device="cuda", precision="fp16", **opts), **kw
        )
    assert dev.precision == "fp16" and dev.device == "cuda" and dev.attributed == cpu.attributed > 0
    a, b = read_catalog(tmp_path / "cpu"), read_catalog(tmp_path / "dev")
    assert (a["id"] == b["id"]).all() and (a["quality"] == b["quality"]).all()
    for c in (
        "log10_m500",
        "log10_m500_err",
        "log10_m500_pixels",
        "richness",
        "log10_m500_richness",
        "contrib_i",
        "attr_delta_dex",
        "attr_central_dex",
        "attr_members_dex",
    ):
        np.testing.assert_allclose(
            b[c].astype(float), a[c].astype(float), atol=1e-4, equal_nan=True, err_msg=c
        )


def test_the_fast_path_gives_the_default_paths_catalogue(small_store, tmp_path):
    """--device-prep (#28): the CPU stage only reads; the simulated device measures the sky, normalises and runs
    the backbone in batches of 2,048. The catalogue equals the default CPU run's."""
    from survey_mass.inference.run import RunOptions, run_catalog

    kw = _tiny_run(small_store, tmp_path, 24)
    opts = dict(attribution="none", precision="fp32")
    cpu = run_catalog(catalog=tmp_path / "cpu", opts=RunOptions(device="cpu", **opts), **kw)
    with simulated_cuda():
        dev = run_catalog(
            catalog=tmp_path / "dev", opts=RunOptions(device="cuda", device_prep=True, **opts), **kw
        )
    assert dev.device_prep and not cpu.device_prep and dev.rows == cpu.rows == 24
    a, b = read_catalog(tmp_path / "cpu"), read_catalog(tmp_path / "dev")
    assert (a["id"] == b["id"]).all() and (a["quality"] == b["quality"]).all()
    for c in ("sky_sigma_u", "sky_sigma_r", "sky_sigma_z"):
        np.testing.assert_allclose(b[c], a[c], rtol=1e-6, err_msg=c)
    for c in ("log10_m500", "log10_m500_err", "log10_m500_pixels", "richness", "contrib_i"):
        np.testing.assert_allclose(
            b[c].astype(float), a[c].astype(float), atol=1e-5, equal_nan=True, err_msg=c
        )


def test_tf32_is_off_once_a_bundle_is_on_a_cuda_device():
    from survey_mass.models.bundle import load_bundle, tf32_flags
    from survey_mass.resources import model_dir

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = True  # cuDNN's default
        with simulated_cuda():
            load_bundle(model_dir()).to("cuda")
        assert tf32_flags() == {"cudnn_allow_tf32": False, "matmul_allow_tf32": False}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
