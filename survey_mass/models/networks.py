"""The two networks of Lin et al. 2022, sized for CPUs (with a wider variant for GPUs).

Stage 1, :class:`BandClassifier`
    One single-band cutout (1 x H x W) in, logits over the five bands out. It is trained on every cutout with
    no labels. Its :class:`Backbone` is the feature extractor.
Stage 2, :class:`MassRegressor`
    The frozen backbone features of the five bands, the redshift and the per-band noise level in; the mean and
    the aleatoric sigma of log10 M500 out. One linear regressor per cross-validation fold (see its docstring).

Inputs are normalised per band image (:func:`survey_mass.models.mass_model.normalise`): the sky level measured
from the sky pixels is subtracted and the image is divided by the sky noise, then compressed with asinh. The band
classifier therefore cannot win on noise levels alone and must learn how sources look in each band. The
stage-2 input vector, its standardisation and the fold ensemble belong to
:class:`survey_mass.models.mass_model.MassModel`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BANDS = ("u", "g", "r", "i", "z")


def _norm(channels: int) -> nn.Module:
    """No normalisation layer, on purpose.

    BatchNorm made the eval-mode network disagree with the trained one (batch statistics). GroupNorm after a
    bias-free convolution makes the network exactly invariant to the scale of its input: it cannot tell a bright
    source from a faint one, and integrated gradients along a straight path from blank sky sum to zero. Plain
    biased convolutions have neither problem, and the network is small enough to train without normalisation.
    """
    return nn.Identity()


class Backbone(nn.Module):
    """A small CNN: a strided stem, then conv-ReLU-pool blocks; returns (N, 2 * width[-1]) features.

    The features concatenate a global average pool and the average over the central quarter of the last map,
    so the regressor sees both the whole field and the cluster core.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 5, stride=2, padding=2),
            _norm(widths[0]),
            nn.ReLU(inplace=True),
        ]
        c = widths[0]
        for i, w in enumerate(widths[1:]):
            layers += [nn.Conv2d(c, w, 3, padding=1), _norm(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.out_dim = 2 * widths[-1]

    def forward(
        self, x: torch.Tensor, reduced: torch.dtype | None = None, *, inference: bool = False
    ) -> torch.Tensor:
        """Features of (N, 1, H, W) images, fp32 and differentiable by default.

        ``inference`` (no gradient wanted) allows the fast paths:
        - with ``reduced`` (torch.bfloat16 or torch.float16) every block but the last runs under autocast in that
          precision; the last conv block, whose maps the features average, stays fp32: on the 26,338 dr12 mock
          cutouts that cuts bf16's largest change in mass from 0.0049 to 0.0040 dex (pixels-only mass) at no
          measured cost;
        - on a CPU in fp32, the blocks run on oneDNN's own tensor layout (:func:`torch.utils.mkldnn.to_mkldnn`):
          1.25 against 1.59 ms per cutout on one thread, features equal to 1e-5 (masses to 1e-6 dex).
        """
        if inference and reduced is not None:
            with torch.autocast(device_type=x.device.type, dtype=reduced):
                f = self.features[:-3](x)
            f = self.features[-3:](f.float())
        elif inference and x.device.type == "cpu" and not torch.is_grad_enabled() and _onednn_ok():
            f = self._onednn()(x.contiguous().to_mkldnn()).to_dense()
        else:
            f = self.features(x)
        h, w = f.shape[-2:]
        core = f[..., h // 4 : h - h // 4, w // 4 : w - w // 4]
        return torch.cat([f.mean(dim=(-2, -1)), core.mean(dim=(-2, -1))], dim=1)

    def _onednn(self) -> nn.Module:
        """A copy of :attr:`features` converted for oneDNN, made once and remade when the weights change (kept out
        of the module's children, so that it is never saved or moved)."""
        key = tuple((p.data_ptr(), p._version) for p in self.features.parameters())
        cached = self.__dict__.get("_onednn_cache")
        if cached is None or cached[0] != key:
            import copy

            from torch.utils import mkldnn

            cached = (key, mkldnn.to_mkldnn(copy.deepcopy(self.features)).eval())
            self.__dict__["_onednn_cache"] = cached
        return cached[1]


def _onednn_ok() -> bool:
    return torch.backends.mkldnn.is_available()


class BandClassifier(nn.Module):
    """Stage 1: which band is this single-band cutout?"""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.backbone = Backbone(widths)
        self.head = nn.Linear(self.backbone.out_dim, len(BANDS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


#: the mass at which a head's log sigma is its ``log_sigma`` (heteroscedastic heads: sigma changes with mu)
SIGMA_PIVOT = 14.3
#: the slope of log sigma in mu is bounded (|slope| <= this), so sigma stays finite far from the pivot
SIGMA_SLOPE_MAX = 1.5


#: no head's aleatoric sigma falls below 0.01 dex: with few labels (a user's own) a head can fit them exactly, and
#: its sigma would collapse to zero and its fit diverge
LOG_SIGMA_FLOOR = math.log(0.01)


def log_sigma_of(mu, log_sigma, slope):
    """log sigma = log_sigma + s (mu - SIGMA_PIVOT), with s = SIGMA_SLOPE_MAX tanh(slope / SIGMA_SLOPE_MAX), floored
    at :data:`LOG_SIGMA_FLOOR`."""
    s = SIGMA_SLOPE_MAX * torch.tanh(torch.as_tensor(slope) / SIGMA_SLOPE_MAX)
    return torch.clamp(log_sigma + s * (mu - SIGMA_PIVOT), min=LOG_SIGMA_FLOOR)


class MassRegressor(nn.Module):
    """Stage 2 head: the standardised inputs of :class:`~survey_mass.models.mass_model.MassModel` (``in_dim`` of
    them, the redshift at ``z_index``) -> (mean, log sigma) of log10 M500.

    The head is linear in the standardised features (plus z squared), with one aleatoric sigma per fold. It is
    linear on purpose. Labels exist only for X-ray-selected clusters, so training also uses every unlabelled
    cluster as a non-detection (:mod:`survey_mass.selection`). A flexible head can satisfy the non-detections
    by pushing their masses arbitrarily low; a linear one cannot, and it extrapolates from the few hundred
    massive labelled clusters to the population the way a scaling relation does. Training fits it on the leading
    principal components with a ridge penalty chosen on each fold's validation split, then folds the projection
    into this one layer (:meth:`set_from_components`).
    """

    def __init__(self, in_dim: int, z_index: int):
        super().__init__()
        self.in_dim = int(in_dim)
        self.z_index = int(z_index)  # the standardised redshift column
        self.linear = nn.Linear(self.in_dim + 1, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.constant_(self.linear.bias, 14.2)
        self.log_sigma = nn.Parameter(torch.tensor(-1.4))
        #: heteroscedastic: log sigma = log_sigma + log_sigma_slope (mu - SIGMA_PIVOT)
        self.log_sigma_slope = nn.Parameter(torch.tensor(0.0))
        #: U with epistemic variance |U [x, z^2, 1]|^2: the Laplace approximation to the head's posterior
        #: (its rows are set by training; none means no parameter uncertainty)
        self.register_buffer("epistemic", torch.zeros(0, self.in_dim + 2))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "epistemic"
        if key in state_dict:  # its number of rows is set by training: take the saved shape
            self.epistemic = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def design(self, x: torch.Tensor) -> torch.Tensor:
        """The head's inputs: the features and the square of the standardised redshift."""
        return torch.cat([x, x[:, self.z_index : self.z_index + 1] ** 2], dim=1)

    def set_from_components(
        self, weight: torch.Tensor, bias: float, log_sigma: float, log_sigma_slope: float = 0.0
    ) -> None:
        """Load a fitted linear map of :meth:`design` (weight of length ``in_dim + 1``) and its sigma(mu)."""
        with torch.no_grad():
            self.linear.weight.copy_(weight.reshape(1, -1).to(self.linear.weight))
            self.linear.bias.fill_(float(bias))
            self.log_sigma.fill_(float(log_sigma))
            self.log_sigma_slope.fill_(float(log_sigma_slope))

    def log_sigma_of(self, mu: torch.Tensor) -> torch.Tensor:
        """The aleatoric log sigma of a prediction mu (heteroscedastic in the predicted mass)."""
        return log_sigma_of(mu, self.log_sigma, self.log_sigma_slope)

    def epistemic_var(self, x: torch.Tensor) -> torch.Tensor:
        """Variance of the predicted mean from the uncertainty of the head's own weights (dex^2)."""
        return self.moments(x)[2]

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log aleatoric sigma and epistemic variance of log10 M500, from one design matrix."""
        d = self.design(x)
        mu = self.linear(d)[:, 0]
        epi = ((d @ self.epistemic[:, :-1].T.to(d) + self.epistemic[:, -1].to(d)) ** 2).sum(dim=1)
        return mu, self.log_sigma_of(mu), epi

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log sigma of log10 M500 (dex)."""
        mu = self.linear(self.design(x))[:, 0]
        return mu, self.log_sigma_of(mu)


VARIANTS = {
    "cpu": {"widths": (16, 32, 64, 128)},
    "gpu": {"widths": (32, 64, 128, 256)},
}
