"""Shared test fixtures: base classifiers whose smoothed behaviour is known in closed form."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm


class LinearBinary(torch.nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as two logits (-(w.x+b), w.x+b).

    Smoothed with N(0, sigma^2 I): P(f(x+d) = 1) = Phi((w.x + b) / (sigma ||w||)) exactly, so the
    exact certified radius of the smoothed classifier is |w.x + b| / ||w||, the distance to the
    decision boundary (Cohen et al. 2019, Example).
    """

    def __init__(self, w, b: float = 0.0):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32).flatten())
        self.b = float(b)

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], dim=1)

    def distance(self, x) -> float:
        x = torch.as_tensor(x, dtype=torch.float32).flatten()
        return abs(float(x @ self.w) + self.b) / float(self.w.norm())

    def p_top(self, x, sigma: float) -> float:
        return float(norm.cdf(self.distance(x) / sigma))


def point_at_distance(model: LinearBinary, distance: float, shape) -> torch.Tensor:
    """A point on the class-1 side of the boundary at the given l2 distance."""
    w = model.w / model.w.norm()
    start = -model.b * model.w / model.w.norm() ** 2  # a point on the boundary
    return (start + distance * w).reshape(shape)


def binomial_slack(rate: float, trials: int, z: float = 3.5) -> float:
    """z standard deviations of an empirical rate over `trials` Bernoulli draws."""
    return z * math.sqrt(rate * (1 - rate) / trials)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: tiny models and many small batches gain nothing from
    intra-op threads, which cost several times more than they save on a shared 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def linear_model():
    generator = torch.Generator().manual_seed(1)
    return LinearBinary(torch.randn(16, generator=generator), b=0.3)


@pytest.fixture(scope="session")
def digits_test():
    from robustcert.data import digits_arrays

    x, y = digits_arrays("test")
    return torch.from_numpy(x), torch.from_numpy(y)
