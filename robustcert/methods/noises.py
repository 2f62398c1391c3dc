"""Which noise certifies which norm: the noises of :class:`robustcert.Smooth` and their radii.

Randomized smoothing is the same algorithm whatever the noise (Cohen et al.'s CERTIFY: select a
class on n0 samples, lower-bound its probability pA on n fresh samples with one Clopper-Pearson
bound at alpha); only the sampler and the radius of pA_lower change. ``sigma`` is the
per-coordinate standard deviation for every noise, so the same sigma gives noises of the same
energy.

| noise      | law of delta                                   | radius of pA_lower                | norm |
|------------|------------------------------------------------|-----------------------------------|------|
| gaussian   | N(0, sigma^2 I)                                | sigma Phi^-1(pA)  (Cohen 2019)    | l2   |
| laplace    | density ~ exp(-||z||_1 / b), b = sigma/sqrt(2) | -b ln(2 (1 - pA)) (Teng 2020)     | l1   |
| uniform    | U[-lambda, lambda]^d, lambda = sqrt(3) sigma   | 2 lambda (pA - 1/2) (Yang 2020)   | l1   |

The derivations are in :mod:`robustcert.radius`. Every radius is tight for the threshold
classifier f(x) = 1[x_0 > 0] (tests/test_threat_models.py checks that the certificate approaches
the exact distance and never exceeds it beyond alpha). An l-infinity radius follows from any of
them (``robustcert table --norm linf``): ||v||_2 <= sqrt(d) ||v||_inf and ||v||_1 <= d ||v||_inf,
so R_2 / sqrt(d) and R_1 / d are certified l-infinity radii, weak ones for large d.

Adding a noise is one :func:`register_noise` call: an engine sampler (the
:class:`robustcert.engine.Noise` protocol: ``sample_shape``, ``perturb``), the radius a lower bound
on pA certifies and its norm (a name of :data:`robustcert.results.NORMS`). ``certify --noise``,
``train --noise`` and ``attack --noise`` list it, :class:`robustcert.Smooth` certifies with it
and ``robustcert train`` trains with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..engine import GaussianNoise, LaplaceNoise, Noise, UniformNoise
from ..errors import InvalidArgumentError
from ..radius import gaussian_radius, laplace_l1_radius, uniform_l1_radius
from ..results import NORMS


@dataclass(frozen=True)
class NoiseModel:
    """A noise of the engine, the radius it certifies from pA_lower, and that radius's norm.

    Attributes:
        name: as ``--noise`` and the sidecar's ``noise`` spell it.
        sampler: sigma -> the engine noise (:class:`robustcert.engine.Noise`) of per-coordinate
            standard deviation sigma.
        radius: (sigma, pA_lower) -> the certified radius, for pA_lower > 1/2.
        norm: the norm of that radius (registered in :data:`robustcert.results.NORMS`).
        paper: where the radius comes from.
    """

    name: str
    sampler: Callable[[float], Noise]
    radius: Callable[[float, float], float]
    norm: str
    paper: str


#: The noises :class:`robustcert.Smooth` certifies with, by name (:func:`register_noise`).
NOISES: dict[str, NoiseModel] = {}


def register_noise(model: NoiseModel) -> NoiseModel:
    """Add (or replace) a noise: ``Smooth(noise=name)``, ``--noise`` and training know it from then on.

    Raises:
        InvalidArgumentError: its norm is not registered (:func:`robustcert.results.register_norm`).
    """
    if model.norm not in NORMS:
        raise InvalidArgumentError(f"noise {model.name!r} certifies {model.norm!r} radii, an unknown norm: "
                                   f"register it first (robustcert.results.register_norm)")
    NOISES[model.name] = model
    return model


register_noise(NoiseModel("gaussian", GaussianNoise, gaussian_radius, "l2", "Cohen, Rosenfeld and Kolter, ICML 2019"))
register_noise(NoiseModel("laplace", LaplaceNoise, laplace_l1_radius, "l1", "Teng, Lee and Yuan, ICLR 2020"))
register_noise(NoiseModel("uniform", UniformNoise, uniform_l1_radius, "l1", "Yang et al., ICML 2020"))


def noise_model(name: str) -> NoiseModel:
    """The noise called ``name`` (InvalidArgumentError if unknown)."""
    if name not in NOISES:
        raise InvalidArgumentError(f"unknown noise {name!r}; choose from {', '.join(NOISES)}")
    return NOISES[name]


def noise_help() -> str:
    """The noises and their norms in words, the first the default: ``gaussian (l2) [default], laplace (l1), ...``."""
    return ", ".join(f"{name} ({model.norm})" + (" [default]" if i == 0 else "") for i, (name, model)
                     in enumerate(NOISES.items()))
