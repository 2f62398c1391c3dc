"""Simplex maps against their definitions, and the soft-output accumulator."""
import itertools
import math

import numpy as np
import pytest
import torch

from robustcert.engine import MonteCarloEngine, VoteCounter
from robustcert.errors import InvalidArgumentError
from robustcert.simplex import (
    Candidate, SIMPLEX_MAPS, SoftMoments, candidate_grid, get_simplex_map, hardmax, register_simplex_map,
    sparsemax,
)


def brute_force_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by exhaustive search over supports.

    For a support S the closest point of the simplex face {p_S >= 0, sum p_S = 1, p elsewhere 0}
    in the affine hull is p_S = v_S - tau with tau = (sum v_S - 1)/|S|; keep the feasible candidate
    (p_S >= 0) nearest to v.
    """
    best, best_distance = None, math.inf
    for size in range(1, len(v) + 1):
        for support in itertools.combinations(range(len(v)), size):
            support = list(support)
            tau = (v[support].sum() - 1) / size
            p = np.zeros_like(v)
            p[support] = v[support] - tau
            if np.all(p[support] >= -1e-12):
                distance = np.linalg.norm(p - v)
                if distance < best_distance:
                    best, best_distance = p, distance
    return best


def test_sparsemax_is_the_euclidean_projection_onto_the_simplex():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=generator, dtype=torch.float64) * torch.tensor([0.1, 1.0, 3.0]).repeat(
        100).unsqueeze(1).double()
    projected = sparsemax(logits)
    assert torch.allclose(projected.sum(1), torch.ones(300, dtype=torch.float64), atol=1e-12)
    assert bool((projected >= 0).all())
    for v, p in zip(logits.numpy(), projected.numpy()):
        np.testing.assert_allclose(p, brute_force_projection(v), atol=1e-10)
    # no point of the simplex is closer: compare with random simplex points
    others = torch.distributions.Dirichlet(torch.ones(5, dtype=torch.float64)).sample((300,))
    assert bool(((projected - logits).norm(dim=1) <= (others - logits).norm(dim=1) + 1e-12).all())
    # sparse when the logits are spread, dense (uniform) when they are equal
    assert sparsemax(torch.tensor([[3.0, 0.0, -1.0]])).tolist() == [[1.0, 0.0, 0.0]]
    assert torch.allclose(sparsemax(torch.tensor([[0.4, 0.1, -2.0]])), torch.tensor([[0.65, 0.35, 0.0]]))
    assert torch.allclose(sparsemax(torch.zeros(1, 4)), torch.full((1, 4), 0.25))
    assert (projected == 0).any(dim=1).float().mean() > 0.5  # most rows of spread logits are sparse


def test_softmax_with_temperature_and_hardmax():
    z = torch.tensor([[2.0, 1.0, -1.0], [0.5, 0.5, 0.0]])
    mapped = Candidate("softmax", 0.5).apply(z)
    assert mapped.dtype == torch.float64
    assert torch.allclose(mapped, torch.softmax(0.5 * z.double(), dim=1))
    assert torch.allclose(mapped.sum(1), torch.ones(2, dtype=torch.float64))
    assert hardmax(z).tolist() == [[1, 0, 0], [1, 0, 0]]  # ties: lowest index, like argmax votes
    assert Candidate("hardmax", None).apply(z).tolist() == [[1, 0, 0], [1, 0, 0]]
    # high temperature tends to hardmax, low temperature to the uniform point
    assert torch.allclose(Candidate("softmax", 100.0).apply(z[:1]), hardmax(z[:1]).double(), atol=1e-6)
    assert torch.allclose(Candidate("softmax", 1e-6).apply(z), torch.full((2, 3), 1 / 3, dtype=torch.float64),
                          atol=1e-5)


@pytest.mark.parametrize("name,kappa", [("softmax", 1 / math.sqrt(2)), ("sparsemax", math.sqrt(2))])
def test_margin_lipschitz_constant_of_each_map_holds_and_is_attained(name, kappa):
    """||grad (S(v)_a - S(v)_b)|| <= kappa everywhere, and reaches kappa (at p_a = p_b = 1/2)."""
    assert get_simplex_map(name).margin_lipschitz == pytest.approx(kappa)
    generator = torch.Generator().manual_seed(1)
    v = (torch.randn(2000, 4, generator=generator, dtype=torch.float64)
         * torch.rand(2000, 1, generator=generator, dtype=torch.float64) * 4).requires_grad_(True)
    mapped = get_simplex_map(name).function(v)
    largest = 0.0
    for a, b in itertools.permutations(range(4), 2):
        (gradient,) = torch.autograd.grad((mapped[:, a] - mapped[:, b]).sum(), v, retain_graph=True)
        largest = max(largest, float(gradient.norm(dim=1).max()))
    assert largest <= kappa + 1e-9
    tight = torch.tensor([[0.0, 0.0, -30.0, -30.0]], dtype=torch.float64, requires_grad=True)
    out = get_simplex_map(name).function(tight)
    (gradient,) = torch.autograd.grad(out[0, 0] - out[0, 1], tight)
    assert float(gradient.norm()) == pytest.approx(kappa, rel=1e-9)


def test_registry_is_extensible_and_checks_names():
    def first_class(v):
        return torch.nn.functional.one_hot(torch.zeros(len(v), dtype=torch.int64), v.shape[1]).to(v.dtype)

    try:
        register_simplex_map("always-first", first_class, uses_temperature=False, binary=True)
        grid = candidate_grid(["always-first", "softmax", "hardmax"], [0.5, 1.0])
        assert [c.label for c in grid] == ["always-first", "softmax(t=0.5)", "softmax(t=1)", "hardmax"]
        assert Candidate("always-first", None).apply(torch.randn(3, 4)).tolist() == [[1, 0, 0, 0]] * 3
    finally:
        SIMPLEX_MAPS.pop("always-first", None)
    with pytest.raises(InvalidArgumentError, match="unknown simplex map"):
        get_simplex_map("nope")
    for bad in ([0.0], [-1.0], [float("nan")], []):
        with pytest.raises(InvalidArgumentError):
            candidate_grid(["softmax"], bad)
    with pytest.raises(InvalidArgumentError):
        candidate_grid([], [1.0])
    with pytest.raises(InvalidArgumentError):
        register_simplex_map("bad", first_class, margin_lipschitz=0.0)


class Logits(torch.nn.Module):
    """Records the logits it returns: 3 classes scored from the first two input coordinates."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def forward(self, x):
        flat = x.flatten(1)
        out = torch.stack([flat[:, 0], flat[:, 1], -flat[:, 0] - flat[:, 1]], dim=1) * 3
        self.outputs.append(out.clone())
        return out


def test_soft_moments_match_a_direct_computation_whatever_the_batching():
    candidates = candidate_grid(["softmax", "sparsemax", "hardmax"], [0.5, 2.0])
    xs = torch.tensor([[0.2, -0.1], [0.0, 0.3], [-0.4, 0.1]])
    results = {}
    for batch_size in (300, 650, 1000):  # chunks of 300 per input in each; packing differs
        model = Logits()
        engine = MonteCarloEngine(model, sigma=0.5, batch_size=batch_size)
        generators = [engine.generator(3, i, "soft") for i in range(3)]
        moments = engine.run(xs, 300, SoftMoments(3, 3, engine.device, candidates), generators)
        results[batch_size] = moments.moments()
    means, variances, votes = results[1000]
    # batch 1000 packs the three inputs' 300 samples into one batch, in order
    logits = model.outputs[0].reshape(3, 300, 3)
    for k, candidate in enumerate(candidates):
        mapped = candidate.apply(logits.reshape(-1, 3)).reshape(3, 300, 3).numpy()
        np.testing.assert_allclose(means[:, k], mapped.mean(1), atol=1e-12)
        np.testing.assert_allclose(variances[:, k], mapped.var(1, ddof=1), atol=1e-12)
    np.testing.assert_array_equal(votes, np.stack([np.bincount(r, minlength=3) for r in logits.argmax(2).numpy()]))
    hard = [c.map for c in candidates].index("hardmax")
    np.testing.assert_allclose(means[:, hard] * 300, votes)  # hardmax sums are the votes
    for other in (300, 650):
        for a, b in zip(results[other], results[1000]):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_soft_moments_compute_only_the_active_candidates_and_agree_with_vote_counter():
    candidates = candidate_grid(["softmax", "sparsemax"], [1.0])
    engine = MonteCarloEngine(Logits(), sigma=0.5, batch_size=500)
    xs = torch.tensor([[0.2, -0.1], [0.0, 0.3]])
    moments = engine.run(xs, 700, SoftMoments(2, 3, engine.device, candidates, active=[[1], [0]]),
                         [engine.generator(0, i, "s") for i in range(2)])
    assert moments.sums.dtype == torch.float64
    assert float(moments.sums[0, 0].abs().sum()) == 0 and float(moments.sums[1, 1].abs().sum()) == 0
    assert moments.sums[0, 1].sum().item() == pytest.approx(700) and moments.sums[1, 0].sum().item() == pytest.approx(700)
    votes = engine.run(xs, 700, VoteCounter(2, 3, engine.device), [engine.generator(0, i, "s") for i in range(2)])
    np.testing.assert_array_equal(moments.moments()[2], votes.result())
