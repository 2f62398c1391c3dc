"""Base classifiers whose smoothed behaviour is known in closed form: what certificates are
checked against (the test suite, experiments/foundation/foundation_report.py,
experiments/threat-models/gpu_threat_models_check.py).

* :class:`LinearBinary`: f(x) = 1[w.x + b > 0]; smoothed with N(0, sigma^2 I) its top-class
  probability is Phi(|w.x + b| / (sigma ||w||)) and its exact robust radius the distance to the
  hyperplane (Cohen et al. 2019, Example), so a certified radius can be compared with the truth.
* :class:`SubsetIndex`: classifies a randomized-ablation sample by which pixels it kept, checking
  the encoding on the way (Levine and Feizi 2020): every kept set is one class, so the votes show
  the law of the kept sets directly.
"""
from __future__ import annotations

import itertools

import torch
from scipy.stats import norm


class LinearBinary(torch.nn.Module):
    """f(x) = 1 if w.x + b > 0 else 0, as two logits (-(w.x+b), w.x+b).

    Smoothed with N(0, sigma^2 I): P(f(x+d) = 1) = Phi((w.x + b) / (sigma ||w||)) exactly, so the
    exact certified radius of the smoothed classifier is |w.x + b| / ||w||, the distance to the
    decision boundary (Cohen et al. 2019, Example).

    Args:
        w: the weights (flattened; inputs are flattened the same way).
        b: the offset.
    """

    def __init__(self, w, b: float = 0.0):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32).flatten())
        self.b = float(b)

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], dim=1)

    def distance(self, x) -> float:
        """The l2 distance of one input to the decision boundary (the exact robust radius)."""
        x = torch.as_tensor(x, dtype=torch.float32).flatten()
        return abs(float(x @ self.w) + self.b) / float(self.w.norm())

    def p_top(self, x, sigma: float) -> float:
        """The smoothed classifier's top-class probability at one input, Phi(distance / sigma)."""
        return float(norm.cdf(self.distance(x) / sigma))


def point_at_distance(model: LinearBinary, distance: float, shape) -> torch.Tensor:
    """A point on the class-1 side of the boundary at the given l2 distance, of ``shape``."""
    w = model.w / model.w.norm()
    start = -model.b * model.w / model.w.norm() ** 2  # a point on the boundary
    return (start + distance * w).reshape(shape)


class SubsetIndex(torch.nn.Module):
    """Classifies an ablated input by WHICH pixels were kept (one class per subset, through the
    bit pattern of the kept set), after checking the encoding: a kept pixel holds (x, 1 - x) in its
    2C channels, an ablated one zeros; anything else is the extra last class. Works on any device.

    Args:
        clean: the clean input (C, *spatial) the samples are ablations of (few pixels: one class
            per subset of ``keep`` of them).
        keep: the pixels each sample keeps.
    """

    def __init__(self, clean: torch.Tensor, keep: int):
        super().__init__()
        self.clean, self.keep = clean, keep
        pixels = clean[0].numel()
        self.subsets = list(itertools.combinations(range(pixels), keep))
        lookup = torch.full((2 ** pixels,), len(self.subsets), dtype=torch.long)
        for i, subset in enumerate(self.subsets):
            lookup[sum(1 << p for p in subset)] = i
        self.lookup = lookup.to(clean.device)
        self.powers = (2 ** torch.arange(pixels, device=clean.device)).long()

    def forward(self, z):
        channels = self.clean.shape[0]
        x = self.clean.reshape(1, channels, -1)
        first, second = z[:, :channels].reshape(len(z), channels, -1), z[:, channels:].reshape(len(z), channels, -1)
        kept = (first + second).sum(1) > 0.5 * channels
        good = torch.where(kept[:, None], (first == x) & (second == 1 - x), (first == 0) & (second == 0)).all(dim=(1, 2))
        index = torch.where(good, self.lookup[(kept.long() * self.powers).sum(1)], len(self.subsets))
        return torch.nn.functional.one_hot(index, len(self.subsets) + 1).float()
