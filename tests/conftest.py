"""Shared test fixtures: base classifiers whose smoothed behaviour is known in closed form."""
from __future__ import annotations

import math

import pytest
import torch

from robustcert.models.closed_form import LinearBinary, point_at_distance  # noqa: F401  (the tests import them here)


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
