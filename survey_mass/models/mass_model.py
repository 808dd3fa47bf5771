"""The mass model: the one owner of the stage-2 input contract.

Everything that turns a (N, 5, H, W) cutout and its redshift into a mass goes through :class:`MassModel`, so
training, prediction, attribution, ``bench`` and ``explain`` evaluate one function:

1. **Sky.** Each band's sky level and noise are measured from its *sky pixels* (:func:`measure_sky`: sep's
   background mesh, which sigma-clips the sources away), not from the whole cutout, whose spread follows its
   source content.
2. **Normalisation.** The band image minus its sky, over 3 sky sigmas, through asinh (:func:`normalise`);
   masked (NaN) pixels become 0, the sky.
3. **Raw inputs** (:meth:`MassModel.raw_inputs`, the only place the vector is assembled): the frozen stage-1
   backbone features of each band, then the redshift, then log10 of each band's sky sigma, then the central
   galaxy's light (:func:`central_photometry`: asinh magnitudes in apertures of 1, 2 and 3 pixels at the
   cutout's centre, per band), then, for a model with ``richness_input``, ln of the candidate catalogue's
   richness (:meth:`MassModel.input_names` names every entry).
4. **Standardisation** (:meth:`MassModel.standardise`) with statistics over the whole training pool; inputs
   whose spread over the pool is negligible (below :data:`NEGLIGIBLE_STD` of the median) are dropped; the
   result is soft-clipped, ``c tanh(x / c)`` with c = :data:`FEATURE_CLIP`, a smooth function that integrated
   gradients can follow. A row with any |standardised input| > :data:`OOD_FLAG` is flagged.
5. **Heads.** k linear fold heads (:class:`~survey_mass.models.networks.MassRegressor`); the catalogued mass is
   their mean, bent smoothly into :data:`MASS_RANGE` (:func:`bound_mass`), :meth:`MassModel.forward`, which is
   also the function attribution differentiates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..photometry import BANDS
from .networks import Backbone, MassRegressor

ASINH_SOFTENING = 3.0  # in units of the band's sky sigma
#: standardised inputs are soft-clipped to +-FEATURE_CLIP; a row with any beyond OOD_FLAG is flagged
FEATURE_CLIP = 10.0
OOD_FLAG = 10.0
#: an input whose std over the training pool is below this fraction of the median std is dropped
NEGLIGIBLE_STD = 1e-3
#: sep background mesh (pixels) for the sky measurement: 2 x 2 meshes over a 64-pixel cutout
SKY_MESH = 32
SIGMA_FLOOR = 1e-6
#: the masses the catalogue speaks for (log10 M500c / Msun): the linear heads' mean is bent smoothly into this
#: range (:func:`bound_mass`), so a cutout with no cluster at all (pure sky noise at low z extrapolates to
#: about 12.2) reads as the least massive cluster rather than as a number no cluster has. The bend moves masses
#: more than 0.5 dex inside the range by less than 1e-5 dex.
MASS_RANGE = (12.5, 16.0)
MASS_BEND = 0.05
#: apertures (radius in pixels) of the central photometry, and the asinh magnitudes' softening (nanomaggies)
APERTURE_RADII_PIX = (1.0, 2.0, 3.0)
APERTURE_SOFTENING_NMGY = 1.0


def aperture_weights(size: int, radii=APERTURE_RADII_PIX, oversample: int = 8) -> torch.Tensor:
    """(len(radii), size, size) fraction of each pixel inside a circle of each radius about the centre."""
    c = (size - 1) / 2.0
    sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    r = np.hypot(xx - c, yy - c)
    out = [(r <= rad).reshape(size, oversample, size, oversample).mean(axis=(1, 3)) for rad in radii]
    return torch.from_numpy(np.stack(out).astype(np.float32))


def central_photometry(x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Asinh magnitudes (N, C * len(radii)) of the light in apertures at the centre of normalised cutouts.

    The sky-subtracted flux is recovered exactly from the normalisation, 3 sigma sinh(x) (:func:`normalise`), so
    this is a differentiable function of what the backbone sees; m = -2.5 / ln 10 asinh(F / 2b) with b = 1
    nanomaggy (22.5 mag). The central galaxy's light is what the pixels add to a catalogue's richness: at fixed
    richness brighter centrals sit in more massive haloes (Hansen et al. 2009).
    """
    n, c, h, w = x.shape
    sigma = ASINH_SOFTENING * torch.pow(10.0, log_sigma.to(x))[..., None, None]
    flux = sigma * torch.sinh(x)  # (N, C, H, W) nanomaggies above the sky
    ap = torch.einsum("nchw,rhw->ncr", flux, aperture_weights(h).to(x))
    mag = -2.5 / np.log(10.0) * torch.asinh(ap / (2 * APERTURE_SOFTENING_NMGY))
    return mag.reshape(n, c * len(APERTURE_RADII_PIX))


def measure_sky(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky level and sky sigma (nanomaggies), shape (N, C) each, of (N, C, H, W) cutouts.

    sep's ``Background`` on a mesh of :data:`SKY_MESH` pixels: in each mesh the pixels are sigma-clipped
    around the median until sources are gone, and the level is the clipped mode; the global values average the
    meshes. A band with no finite pixel gets level 0 and sigma NaN; a constant band gets :data:`SIGMA_FLOOR`.
    """
    import sep

    images = np.asarray(images)
    n, c, h, w = images.shape
    level = np.zeros((n, c), np.float32)
    sigma = np.full((n, c), np.nan, np.float32)
    mesh = max(min(SKY_MESH, h, w), 1)
    for k in range(n):
        for b in range(c):
            img = images[k, b]
            finite = np.isfinite(img)
            if not finite.any():
                continue
            data = np.ascontiguousarray(np.where(finite, img, 0.0), dtype=np.float32)
            try:
                bk = sep.Background(data, mask=~finite, bw=mesh, bh=mesh, fw=1, fh=1)
                lv, rms = float(bk.globalback), float(bk.globalrms)
            except Exception:  # sep refuses pathological images; fall back to the median and MAD
                lv = float(np.median(img[finite]))
                rms = float(1.4826 * np.median(np.abs(img[finite] - lv)))
            level[k, b] = lv if np.isfinite(lv) else 0.0
            sigma[k, b] = max(rms, SIGMA_FLOOR) if np.isfinite(rms) else SIGMA_FLOOR
    return level, sigma


#: the backbone's precisions at inference (:attr:`MassModel.backbone_autocast`)
PRECISIONS = ("fp32", "bf16", "fp16")


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): where it does not, bf16 is emulated and slower
    than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """``auto`` -> ``fp16`` on a CUDA GPU, ``bf16`` on a CPU that computes it natively, ``fp32`` elsewhere; others
    unchanged. Each moves no mass by more than 0.005 dex against fp32, the bound the design allows:

    - fp16 (tensor cores) keeps 3 more mantissa bits than bf16: on the CPU it moves no mass by more than 0.00012
      dex; the GPU kit measures fp16 and bf16 on the device.
    - bf16 on an AVX512-BF16 or AMX CPU: the CNN 1.18 against 1.25 ms per cutout for fp32 on oneDNN (1.59
      eager), one thread. On the 26,338 dr12 cutouts it moves the headline mass by at most 0.0024 dex (p99
      0.0009) and the pixels-only mass by 0.0040 (p99 0.0014). Elsewhere bf16 is emulated and slower: fp32.
    - The out-of-distribution verdict (bit 128) is never left to reduced precision
      (:func:`~survey_mass.inference.predict.cnn_masses` recomputes rows near its threshold in fp32), and the
      attribution maps and training always run fp32. ``--precision fp32`` gives catalogues that do not depend on
      the host's instruction set.
    """
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16" if torch.cuda.is_available() else "fp32"
    if kind == "cpu":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None for fp32)."""
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {PRECISIONS} (resolve 'auto' first), not {precision!r}")
    return dtypes[precision]


def normalise(images: torch.Tensor, level: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """asinh((image - sky level) / (3 sky sigma)) per band; NaN pixels become 0 (the sky). Differentiable."""
    x = images.float()
    lv = level.to(x)[..., None, None]
    sg = torch.nan_to_num(sigma.to(x), nan=1.0).clamp_min(SIGMA_FLOOR)[..., None, None]
    finite = torch.isfinite(x)
    filled = torch.where(finite, x, lv.expand_as(x))
    return torch.asinh((filled - lv) / (ASINH_SOFTENING * sg))


def normalise_array(images: np.ndarray, level: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """:func:`normalise` in numpy (float32), for images that need no gradient. numpy's vectorised asinh is about
    25 times faster than torch's on a CPU (0.015 against 0.42 ms per 5 x 64 x 64 cutout, one thread); the two
    agree to float32 rounding (tested)."""
    x = np.asarray(images, np.float32)
    lv = np.asarray(level, np.float32)[..., None, None]
    sg = np.maximum(np.nan_to_num(np.asarray(sigma, np.float32), nan=1.0), np.float32(SIGMA_FLOOR))[
        ..., None, None
    ]
    filled = np.where(np.isfinite(x), x, lv)
    return np.arcsinh((filled - lv) / (np.float32(ASINH_SOFTENING) * sg)).astype(np.float32, copy=False)


def prepare_images(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(N, 5, H, W) nanomaggies -> (normalised images, log10 sky sigma (N, 5), sky sigma (N, 5) in nmgy).

    The CPU half of the model's input: sky measurement (sep) and normalisation (numpy); a device needs only the
    result (:meth:`MassModel.raw_inputs_prepared`)."""
    level, sigma = measure_sky(images)
    x = torch.from_numpy(normalise_array(images, level, sigma))
    log_sigma = torch.from_numpy(np.log10(np.nan_to_num(sigma, nan=1.0)).astype(np.float32))
    return x, log_sigma, sigma


#: cutouts per batch of :func:`prepare_images_on_device` (sized in ``benchmarks/results/roofline.json``: batches of
#: thousands keep a GPU's launches few; 2,048 cutouts are 168 MB as float32)
DEVICE_PREP_BATCH = 2048


def _copy_stream(device):
    """A side CUDA stream for host-to-device copies, or None where there is no real CUDA device (a CPU, or a CPU
    build of torch: the simulated device of :func:`survey_mass.testing.simulated_cuda` copies in order)."""
    if torch.device(device).type != "cuda" or not torch.backends.cuda.is_built():
        return None
    return torch.cuda.Stream(device=device)


@torch.no_grad()
def prepare_images_on_device(
    images: np.ndarray, device, *, batch_size: int = DEVICE_PREP_BATCH
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """:func:`prepare_images` with the CPU doing nothing but the copy: the sky measured on ``device``
    (:func:`~survey_mass.models.sky.measure_sky_torch`, equal to sep's to float32 rounding) and the cutouts
    normalised there (:func:`normalise`). On a CUDA device each batch is copied from pinned memory on a side
    stream while the previous one computes. Returns the normalised images and log10 sky sigma on ``device`` and
    the sky sigma (N, 5) in nanomaggies."""
    from .sky import measure_sky_torch

    imgs = torch.as_tensor(np.asarray(images, np.float32))
    n = imgs.shape[0]
    host = torch.device(device).type == "cuda"
    stream = _copy_stream(device)

    def upload(s: int):
        b = imgs[s : s + batch_size]
        b = b.pin_memory() if host else b
        if stream is None:
            return b.to(device, non_blocking=host), None
        with torch.cuda.stream(stream):
            d = b.to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        return d, done

    # the outputs allocated once and filled batch by batch (no concatenation doubling them on the device)
    x = torch.empty(imgs.shape, dtype=torch.float32, device=device)
    log_sigma = torch.empty(imgs.shape[:2], dtype=torch.float32, device=device)
    sky = torch.empty(imgs.shape[:2], dtype=torch.float32, device=device)
    nxt = upload(0) if n else None
    for s in range(0, n, batch_size):
        cur, done = nxt
        if s + batch_size < n:
            nxt = upload(s + batch_size)  # queued on the side stream: overlaps this batch's compute
        if done is not None:
            compute = torch.cuda.current_stream(torch.device(device))
            compute.wait_event(done)
            cur.record_stream(compute)
        level, sigma = measure_sky_torch(cur, SKY_MESH, SIGMA_FLOOR)
        x[s : s + batch_size] = normalise(cur, level, sigma)
        log_sigma[s : s + batch_size] = torch.log10(torch.nan_to_num(sigma, nan=1.0))
        sky[s : s + batch_size] = sigma
    return x, log_sigma, sky.cpu().numpy()


def soft_clip(x: torch.Tensor) -> torch.Tensor:
    """c tanh(x / c): the identity near 0, bounded by c = FEATURE_CLIP, smooth everywhere."""
    return FEATURE_CLIP * torch.tanh(x / FEATURE_CLIP)


def bound_mass(mu: torch.Tensor) -> torch.Tensor:
    """lo + b softplus((mu - lo) / b), then the same at the top: the identity well inside :data:`MASS_RANGE`,
    smooth everywhere (integrated gradients follow it)."""
    lo, hi = MASS_RANGE
    mu = lo + MASS_BEND * torch.nn.functional.softplus((mu - lo) / MASS_BEND)
    return hi - MASS_BEND * torch.nn.functional.softplus((hi - mu) / MASS_BEND)


@dataclass(frozen=True)
class Standardisation:
    """Which raw inputs the heads see (``keep``) and their mean and std over the training pool."""

    keep: np.ndarray  # int indices into the raw input vector
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, raw: np.ndarray, *, always_keep: tuple[int, ...] = ()) -> Standardisation:
        """Statistics over ``raw`` (pool rows x raw inputs); negligible-variance inputs are dropped."""
        raw = np.asarray(raw, np.float64)
        std = raw.std(axis=0)
        keep = std > 0
        for _ in range(10):  # relative to the median of the inputs kept, until that set is stable
            new = std > NEGLIGIBLE_STD * float(np.median(std[keep]))
            new[list(always_keep)] = True
            if (new == keep).all():
                break
            keep = new
        idx = np.flatnonzero(keep)
        scale = np.where(
            std[idx] > 0, std[idx], 1.0
        )  # a constant input kept on purpose (z of a single-z pool)
        return cls(idx.astype(np.int64), raw.mean(axis=0)[idx].astype(np.float32), scale.astype(np.float32))


class MassModel(nn.Module):
    """Backbone + standardisation + fold heads: cutouts and redshifts in, log10 M500 and its error parts out.

    ``calibration`` holds the error calibration (``scale``, ``tau``, ``selection``), applied by :meth:`predict`.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: list[MassRegressor] | None = None,
        standardisation: Standardisation | None = None,
        *,
        bands: tuple[str, ...] = BANDS,
        calibration: dict | None = None,
        ood_flag: float = OOD_FLAG,
        richness_input: bool = False,
        bcg_input: bool = False,
    ):
        super().__init__()
        if bcg_input and not richness_input:
            raise ValueError("the central galaxy is an input only beside the catalogue richness")
        self.ood_flag = float(ood_flag)
        self.richness_input = bool(richness_input)
        #: the headline also takes the catalogue's central-galaxy magnitude (its absolute i magnitude,
        #: :func:`~survey_mass.models.catalogue.central_galaxy_feature`); where a candidate has none, its
        #: expectation given ln lambda and z (:attr:`bcg_fill`, fitted on the training pool) stands in
        self.bcg_input = bool(bcg_input)
        #: a reduced precision (torch.bfloat16 or torch.float16) for the backbone but its last block
        #: (:meth:`Backbone.forward`), or None (fp32), used only where no gradient is taken (inference; attribution
        #: and training stay fp32). The heads always run in fp32: at log10 M ~ 14 a half-precision mass would be
        #: rounded to 0.008 dex. See :func:`resolve_precision`.
        self.backbone_autocast: torch.dtype | None = None
        self.backbone = backbone
        self.bands = tuple(bands)
        self.heads = nn.ModuleList(heads or [])
        self.calibration = dict(calibration or {})
        self.register_buffer("keep", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.zeros(0))
        #: [a, b, c] of E[central-galaxy feature | lambda, z] = a + b ln(lambda / 40) + c (z - 0.3)
        self.register_buffer("bcg_fill", torch.zeros(3 if bcg_input else 0, dtype=torch.float64))
        if standardisation is not None:
            self.set_standardisation(standardisation)

    # --- the input contract ----------------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        """Backbone features per band."""
        return self.backbone.out_dim

    @property
    def z_raw_index(self) -> int:
        return len(self.bands) * self.feature_dim

    def input_names(self) -> list[str]:
        """Name of every raw input, in order: ``{band}.f{k}``, ``z``, ``log10_sky_sigma_{band}``,
        ``ap{r}_{band}`` (central photometry), ``ln_richness`` (with a richness input), ``bcg_abs_mag_i``
        (the catalogue's central galaxy, M_i + 22, with a central-galaxy input)."""
        names = [f"{b}.f{k}" for b in self.bands for k in range(self.feature_dim)]
        names += ["z"] + [f"log10_sky_sigma_{b}" for b in self.bands]
        names += self.photometry_names()
        return names + self.catalogue_input_names()

    def catalogue_input_names(self) -> list[str]:
        """The raw inputs taken from the candidate catalogue, last in the raw vector."""
        return (["ln_richness"] if self.richness_input else []) + (
            ["bcg_abs_mag_i"] if self.bcg_input else []
        )

    def photometry_names(self) -> list[str]:
        return [f"ap{r:g}_{b}" for b in self.bands for r in APERTURE_RADII_PIX]

    @property
    def richness_raw_index(self) -> int | None:
        """Position of ln richness among the raw inputs (None without a richness input)."""
        return self.input_names().index("ln_richness") if self.richness_input else None

    @property
    def bcg_raw_index(self) -> int | None:
        """Position of the central galaxy's feature among the raw inputs (None without it)."""
        return self.input_names().index("bcg_abs_mag_i") if self.bcg_input else None

    def _catalogue_raw(self) -> tuple[int, ...]:
        return tuple(i for i in (self.richness_raw_index, self.bcg_raw_index) if i is not None)

    @property
    def photometry_raw_indices(self) -> tuple[int, ...]:
        start = self.z_raw_index + 1 + len(self.bands)
        return tuple(range(start, start + len(self.photometry_names())))

    def _kept(self, raw: tuple[int, ...]) -> tuple[int, ...]:
        keep = self.keep.cpu().numpy()
        return tuple(int(np.flatnonzero(keep == r)[0]) for r in raw if (keep == r).any())

    @property
    def direct_indices(self) -> tuple[int, ...]:
        """Kept inputs the heads take unpenalised beside the principal components: ln richness and the central
        galaxy's magnitude."""
        return self._kept(self._catalogue_raw())

    @property
    def penalised_direct_indices(self) -> tuple[int, ...]:
        """Kept inputs the heads take as themselves beside the principal components, under the same ridge and
        invariance penalties: the central photometry (a few physical quantities a ridge on components of
        hundreds of backbone features would dilute)."""
        return self._kept(self.photometry_raw_indices)

    def always_keep(self) -> tuple[int, ...]:
        """Raw inputs the standardisation must keep whatever their spread: z and the catalogue's inputs."""
        return (self.z_raw_index, *self._catalogue_raw())

    @property
    def z_index(self) -> int:
        """Position of the redshift among the kept inputs (the heads add its square)."""
        pos = np.flatnonzero(self.keep.cpu().numpy() == self.z_raw_index)
        return int(pos[0])

    def set_standardisation(self, s: Standardisation) -> None:
        if self.z_raw_index not in set(np.asarray(s.keep).tolist()):
            raise ValueError("the redshift input must be kept")
        self.keep = torch.as_tensor(np.asarray(s.keep), dtype=torch.long)
        self.mean = torch.as_tensor(np.asarray(s.mean), dtype=torch.float32)
        self.std = torch.as_tensor(np.asarray(s.std), dtype=torch.float32)

    def band_features(self, x: torch.Tensor, *, inference: bool = False) -> torch.Tensor:
        """Normalised (N, C, H, W) -> (N, C * F): the backbone applied to each band image. Only ``inference``
        (the catalogue's masses, :meth:`raw_inputs_prepared`) may use :attr:`backbone_autocast` and the
        backbone's fast CPU path; everything else (attribution, training) runs the plain fp32 network."""
        n, c, h, w = x.shape
        flat = x.reshape(n * c, 1, h, w).contiguous(memory_format=torch.channels_last)
        f = self.backbone(flat, self.backbone_autocast if inference else None, inference=inference)
        return f.reshape(n, c * f.shape[1])

    def raw_inputs(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        log_sigma: torch.Tensor,
        richness: torch.Tensor | None = None,
        bcg: torch.Tensor | None = None,
        *,
        inference: bool = False,
    ) -> torch.Tensor:
        """The raw input vector (:meth:`input_names`): band features, z, log10 sky sigmas[, ln richness[, the
        central galaxy's feature, as :meth:`bcg_feature` gives it]]."""
        z = torch.nan_to_num(z.to(x).reshape(-1, 1))
        parts = [
            self.band_features(x, inference=inference),
            z,
            log_sigma.to(x),
            central_photometry(x, log_sigma),
        ]
        if self.richness_input:
            if richness is None:
                raise ValueError("this mass model takes the catalogue richness as an input")
            parts.append(torch.log(richness.to(x).reshape(-1, 1).clamp_min(1e-3)))
        if self.bcg_input:
            if bcg is None:  # none given: the expectation given lambda and z, as bcg_feature gives it
                from .catalogue import PIVOT_LAMBDA, PIVOT_Z

                a, b, c = self.bcg_fill.to(x)
                lnl = torch.log(richness.to(x).reshape(-1, 1).clamp_min(1e-3) / PIVOT_LAMBDA)
                bcg = a + b * lnl + c * (z - PIVOT_Z)
            parts.append(bcg.to(x).reshape(-1, 1))
        return torch.cat(parts, dim=1)

    def extend_raw(
        self, raw_pixels: np.ndarray, richness: np.ndarray | None, bcg_mag_i: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw inputs of this model from a pixels-only model's raw inputs (same backbone): ln richness and the
        central galaxy's feature (:meth:`bcg_feature` of the catalogue's apparent ``bcg_mag_i``) appended when
        the model takes them (training extracts the pixel features once for all models)."""
        raw_pixels = np.asarray(raw_pixels, np.float32)
        if not self.richness_input:
            return raw_pixels
        lam = np.log(np.clip(np.asarray(richness, np.float64), 1e-3, None)).astype(np.float32)
        cols = [raw_pixels, lam[:, None]]
        if self.bcg_input:
            z = raw_pixels[:, self.z_raw_index].astype(np.float64)
            cols.append(
                self.bcg_feature(np.asarray(richness, np.float64), z, bcg_mag_i)[:, None].astype(np.float32)
            )
        return np.concatenate(cols, axis=1)

    def bcg_feature(self, richness, z, bcg_mag_i) -> np.ndarray:
        """The central galaxy's feature of each row (:func:`~survey_mass.models.catalogue.central_galaxy_feature`),
        and where a row has none, E[feature | lambda, z] (:attr:`bcg_fill`)."""
        from .catalogue import central_galaxy_feature, design

        lam = np.clip(np.asarray(richness, np.float64), 1e-3, None)
        z = np.asarray(z, np.float64)
        f = np.full(lam.shape, np.nan) if bcg_mag_i is None else central_galaxy_feature(bcg_mag_i, z)
        coef = self.bcg_fill.cpu().numpy() if self.bcg_fill.numel() == 3 else np.zeros(3)
        return np.where(np.isfinite(f), f, design(lam, z) @ coef)

    def fit_bcg_fill(self, richness, z, bcg_mag_i) -> None:
        """Least squares of the central galaxy's feature on [1, ln(lambda / 40), z - 0.3] over the rows that
        have one: what stands in where a candidate has no central galaxy."""
        from .catalogue import central_galaxy_feature, design

        f = central_galaxy_feature(bcg_mag_i, z)
        ok = np.isfinite(f) & np.isfinite(np.asarray(richness, float)) & (np.asarray(richness, float) > 0)
        if ok.sum() < 3:
            raise ValueError("too few candidates with a central galaxy to fit its expectation")
        coef, *_ = np.linalg.lstsq(
            design(np.asarray(richness, float)[ok], np.asarray(z, float)[ok]), f[ok], rcond=None
        )
        self.bcg_fill = torch.as_tensor(coef, dtype=torch.float64)

    def standardise_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Standardised kept inputs, before the soft clip."""
        return (raw[:, self.keep] - self.mean) / self.std

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """What the heads see: the standardised kept inputs, soft-clipped."""
        return soft_clip(self.standardise_raw(raw))

    # --- the function -------------------------------------------------------------------------------------

    def head_moments(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per fold (K, N): mean, log aleatoric sigma and epistemic variance."""
        out = [h.moments(xs) for h in self.heads]
        return tuple(torch.stack([o[i] for o in out]) for i in range(3))  # type: ignore[return-value]

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        log_sigma: torch.Tensor,
        richness: torch.Tensor | None = None,
        bcg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The catalogued mass, fold-ensemble mean log10 M500 (N,), of normalised cutouts: what attribution
        differentiates (``bcg``: the central galaxy's feature, :meth:`bcg_feature`)."""
        return self.forward_raw(self.raw_inputs(x, z, log_sigma, richness, bcg))

    def forward_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """The ensemble mean from raw input vectors (the tail of :meth:`forward`)."""
        xs = self.standardise(raw)
        return bound_mass(torch.stack([h(xs)[0] for h in self.heads]).mean(0))

    # --- exact contributions -----------------------------------------------------------------------------

    def input_groups(self) -> dict[str, np.ndarray]:
        """Kept inputs (positions among the heads' inputs) grouped as the catalogue reports them: one group per
        band (its backbone features and its central photometry), ``sky`` (the five log10 sky sigmas),
        ``redshift`` and, with the catalogue's inputs, ``richness`` and ``bcg``."""
        names = self.input_names()
        kept = [names[int(k)] for k in self.keep.cpu().numpy()]
        groups: dict[str, list[int]] = {b: [] for b in self.bands}
        groups.update(sky=[], redshift=[])
        if self.richness_input:
            groups["richness"] = []
        if self.bcg_input:
            groups["bcg"] = []
        for pos, name in enumerate(kept):
            if name == "z":
                groups["redshift"].append(pos)
            elif name == "ln_richness":
                groups["richness"].append(pos)
            elif name == "bcg_abs_mag_i":
                groups["bcg"].append(pos)
            elif name.startswith("log10_sky_sigma_"):
                groups["sky"].append(pos)
            else:  # "{band}.f{k}" or "ap{r}_{band}"
                band = name.split(".")[0] if "." in name else name.rsplit("_", 1)[1]
                groups[band].append(pos)
        return {g: np.asarray(v, np.int64) for g, v in groups.items()}

    def contributions_raw(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """The catalogued mass split exactly into a reference and one contribution per input group (dex).

        The fold heads are linear in the soft-clipped standardised inputs (and the square of the standardised
        redshift), so their mean is ``b + sum_j w_j x_j + w_z2 x_z^2`` with ``b`` the mass of the population-mean
        input (every x_j = 0): ``reference`` = bound(b), and group g contributes ``sum_{j in g} w_j x_j`` (the
        redshift group also ``w_z2 x_z^2``). The bend into :data:`MASS_RANGE` (:func:`bound_mass`) is one
        monotone function of the sum, so each contribution is scaled by (bound(mu) - bound(b)) / (mu - b): the
        integrated gradients of the bent sum along the straight path from the mean input in the soft-clipped
        standardised inputs, exact, and 1 wherever the bend is the identity. ``reference + sum of contributions =
        log10_m500`` to float precision. The heads must stay linear for this to hold (non-linear heads would need
        Shapley values over the groups instead: 2^8 head evaluations on the cached raw inputs).
        """
        raw_t = torch.from_numpy(np.asarray(raw, np.float32)).to(self.mean.device)
        with torch.no_grad():
            xs = soft_clip(self.standardise_raw(raw_t)).double().cpu().numpy()
        w = np.mean([h.linear.weight.detach().double().cpu().numpy()[0] for h in self.heads], axis=0)
        b = float(np.mean([float(h.linear.bias.detach().cpu()) for h in self.heads]))
        parts = {g: xs[:, idx] @ w[idx] for g, idx in self.input_groups().items()}
        parts["redshift"] = parts["redshift"] + w[-1] * xs[:, self.z_index] ** 2
        mu = b + sum(parts.values())
        bent = bound_mass(torch.from_numpy(mu)).numpy()
        ref = float(bound_mass(torch.tensor(b, dtype=torch.float64)))
        dmu = mu - b
        safe = np.abs(dmu) > 1e-9
        scale = np.where(safe, (bent - ref) / np.where(safe, dmu, 1.0), 1.0)
        return {"reference": np.full(len(mu), ref), **{g: v * scale for g, v in parts.items()}}

    def raw_inputs_of(
        self,
        images: np.ndarray,
        z: np.ndarray,
        richness: np.ndarray | None = None,
        *,
        bcg_mag_i: np.ndarray | None = None,
        batch_size: int = 64,
        device="cpu",
    ) -> np.ndarray:
        """Raw input vectors of (N, 5, H, W) cutouts (training's feature extraction)."""
        return self.raw_inputs_and_sky(
            images, z, richness, bcg_mag_i=bcg_mag_i, batch_size=batch_size, device=device
        )[0]

    @torch.no_grad()
    def predict(
        self,
        images: np.ndarray,
        z: np.ndarray,
        richness: np.ndarray | None = None,
        *,
        bcg_mag_i: np.ndarray | None = None,
        batch_size: int = 64,
        device="cpu",
    ) -> dict[str, np.ndarray]:
        """Fold-ensemble masses, their error parts, the sky sigmas and the out-of-distribution flag
        (``bcg_mag_i``: the catalogue's central-galaxy apparent i magnitudes, for a model that takes them)."""
        raw, sky = self.raw_inputs_and_sky(
            images, z, richness, bcg_mag_i=bcg_mag_i, batch_size=batch_size, device=device
        )
        return {**self.predict_raw(raw, z, device=device), "sky_sigma": sky}

    @torch.no_grad()
    def raw_inputs_and_sky(
        self,
        images: np.ndarray,
        z: np.ndarray,
        richness=None,
        *,
        bcg_mag_i=None,
        batch_size: int = 64,
        device="cpu",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw input vectors (N, D) and measured sky sigmas (N, 5) of cutouts."""
        x, log_sigma, sky = prepare_images(images)
        raw = self.raw_inputs_prepared(
            x, log_sigma, z, richness, bcg_mag_i=bcg_mag_i, batch_size=batch_size, device=device
        )
        return raw, sky

    @torch.no_grad()
    def raw_inputs_prepared(
        self,
        x: torch.Tensor,
        log_sigma: torch.Tensor,
        z: np.ndarray,
        richness=None,
        *,
        bcg_mag_i=None,
        batch_size: int = 64,
        device="cpu",
        exact: bool = False,
    ) -> np.ndarray:
        """Raw input vectors (N, D) of cutouts already through :func:`prepare_images` (its CPU work done,
        perhaps by another worker): the device half, in :attr:`backbone_autocast` unless ``exact`` (plain fp32).
        On a CUDA device each batch is copied from pinned memory without blocking and its inputs stay on the
        device; they come back in one copy at the end, so the host queues the next batches while the device
        works instead of waiting on a ``.cpu()`` after each."""
        n = x.shape[0]
        raw = np.zeros((n, len(self.input_names())), np.float32)
        cuda = torch.device(device).type == "cuda"
        bcg = self.bcg_feature(richness, z, bcg_mag_i) if self.bcg_input else None
        on_device = []
        for s in range(0, n, batch_size):
            xb, lb = x[s : s + batch_size], log_sigma[s : s + batch_size]
            if cuda and xb.device.type == "cpu":  # (already on the device after prepare_images_on_device)
                xb, lb = xb.pin_memory(), lb.pin_memory()
            zz = torch.from_numpy(np.asarray(z[s : s + batch_size], np.float32)).to(device)
            lam = _richness_tensor(richness, s, batch_size, device)
            out = self.raw_inputs(
                xb.to(device, non_blocking=cuda),
                zz,
                lb.to(device, non_blocking=cuda),
                lam,
                _richness_tensor(bcg, s, batch_size, device),
                inference=not exact,
            ).float()
            if cuda:
                on_device.append(out)
            else:
                raw[s : s + batch_size] = out.numpy()
        if on_device:
            raw[:] = torch.cat(on_device).cpu().numpy()
        return raw

    @torch.no_grad()
    def predict_raw(
        self, raw: np.ndarray, z: np.ndarray, *, flux_limit: np.ndarray | None = None, device="cpu"
    ) -> dict[str, np.ndarray]:
        """Fold-ensemble masses, error parts and the out-of-distribution flag from raw input vectors
        (``flux_limit``: the labels' X-ray flux limit at each position, where known)."""
        pre = self.standardise_raw(torch.from_numpy(np.asarray(raw, np.float32)).to(device))
        ood = (pre.abs().amax(dim=1) > self.ood_flag).cpu().numpy()
        mu, ls, epi = self.head_moments(soft_clip(pre))
        mus, sig2, epi2 = (
            mu.cpu().numpy().astype(float),
            np.exp(2 * ls.cpu().numpy().astype(float)),
            epi.cpu().numpy().astype(float),
        )
        errs = ensemble_errors(mus, sig2, epi2, np.asarray(z, float), self.calibration, flux_limit)
        return {**errs, "out_of_distribution": ood}

    @torch.no_grad()
    def ood_score(self, raw: np.ndarray) -> np.ndarray:
        """Each row's largest |standardised input| (N,): above :attr:`ood_flag` the row is out of distribution."""
        pre = self.standardise_raw(torch.from_numpy(np.asarray(raw, np.float32)).to(self.mean.device))
        return pre.abs().amax(dim=1).cpu().numpy().astype(float)


def _richness_tensor(richness, start: int, size: int, device) -> torch.Tensor | None:
    if richness is None:
        return None
    return torch.from_numpy(np.asarray(richness[start : start + size], np.float32)).to(device)


def ensemble_errors(
    mus: np.ndarray,
    sig2: np.ndarray,
    epi2: np.ndarray,
    z: np.ndarray,
    calibration: dict,
    flux_limit: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The fold-ensemble mean (bent into :data:`MASS_RANGE`) and the calibrated error parts of per-fold
    moments (K, N): aleatoric s sqrt(mean sigma_k^2), fold s sqrt(var mu_k + mean e_k^2), the extrapolation
    term and their quadrature sum, with s the calibration's ``scale``."""
    scale = float(calibration.get("scale", 1.0))
    ale = np.sqrt(sig2.mean(axis=0))
    fold = np.sqrt(mus.var(axis=0) + epi2.mean(axis=0))
    mu = bound_mass(torch.from_numpy(mus.mean(axis=0))).numpy()
    extra = extrapolation(calibration, mu, scale * np.hypot(ale, fold), z, flux_limit)
    # the error's trend with the predicted mass, calibrated on independent mocks (1 without them)
    nodes = calibration.get("mass_nodes") or []
    if nodes:
        k = np.interp(mu, nodes, calibration["mass_factors"])
        scale, extra = scale * k, extra * k
    return {
        "log10_m500": mu,
        "log10_m500_err": np.sqrt((scale * ale) ** 2 + (scale * fold) ** 2 + extra**2),
        "log10_m500_err_aleatoric": scale * ale,
        "log10_m500_err_fold": scale * fold,
        "log10_m500_err_extrapolation": extra,
    }


def extrapolation(
    calibration: dict, mu: np.ndarray, sigma: np.ndarray, z: np.ndarray, flux_limit: np.ndarray | None = None
) -> np.ndarray:
    """tau * sqrt(1 - P(detected | x)): the error added below the labels' selection (0 without one); tau is
    calibrated on independent mocks. P_det uses each position's flux limit where known, else the selection's."""
    from ..selection import detection_probability, extrapolation_sigma, selection_from_dict

    tau = float(calibration.get("tau", 0.0))
    spec = calibration.get("selection")
    if tau == 0.0 or not spec:
        return np.zeros_like(mu)
    sel = selection_from_dict(spec)
    m_lim = sel.m_lim(np.nan_to_num(z), flux_limit)
    return extrapolation_sigma(tau, detection_probability(mu, sigma, m_lim, sel.width))
