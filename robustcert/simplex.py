"""Simplex maps and the soft-output accumulator of Lipschitz-variance-margin smoothing.

Delattre, Araujo, Barthelemy and Allauzen (ICLR 2024), "The Lipschitz-Variance-Margin Tradeoff
for Enhanced Randomized Smoothing", smooth a *soft* output S(t z(x)) of the base model's logits
z(x) instead of hard votes. S maps R^C onto the probability simplex; ``t`` multiplies the logits
(t -> infinity tends to hardmax, t -> 0 to the uniform point for softmax):

* ``softmax``:   S(v)_c = exp(v_c) / sum_j exp(v_j);
* ``sparsemax``: S(v) = argmin_{p in simplex} ||p - v||_2 (Martins and Astudillo 2016): the
  Euclidean projection onto the simplex, p_c = max(v_c - tau, 0) with tau such that sum p = 1;
* ``hardmax``:   S(v) = one-hot(argmax v) (lowest index on ties); the temperature is irrelevant.

The registry is extensible: :func:`register_simplex_map`. Each map records ``margin_lipschitz``,
an l2 Lipschitz constant of v -> S(v)_a - S(v)_b (every pair a != b) at t = 1, used when the
base model's logit Lipschitz constant is known:

* softmax: 1/sqrt(2). The Jacobian J = diag(p) - p p^T has x^T J x = Var_p(x) <= (max x - min x)^2/4
  <= 1/2 for unit x (Popoviciu), so ||J|| <= 1/2, and ||e_a - e_b|| = sqrt(2); attained at
  p_a = p_b = 1/2.
* sparsemax: sqrt(2). On a fixed support J is an orthogonal projection, J(e_a - e_b) = e_a - e_b
  when a, b are both in the support.
* hardmax: not Lipschitz (infinity): the general constant of smoothing applies.

:class:`SoftMoments` is the engine accumulator: per input, per candidate (map, temperature) and
per class, the sum and the sum of squares of the mapped outputs (float64, on the device), plus
the hard argmax votes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import InvalidArgumentError


def softmax(v: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension."""
    return torch.softmax(v, dim=-1)


def sparsemax(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sparsemax).

    Martins and Astudillo (2016), Algorithm 1: with v sorted decreasingly as z_(1) >= z_(2) >= ...,
    the support size is k = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}, the threshold
    tau = (sum_{j<=k} z_(j) - 1) / k, and sparsemax(v)_c = max(v_c - tau, 0).
    """
    z, _ = torch.sort(v, dim=-1, descending=True)
    ranks = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cumulative = z.cumsum(dim=-1)
    support = (1 + ranks * z > cumulative).sum(dim=-1, keepdim=True)  # the condition holds on a prefix
    support = support.clamp_(min=1)  # k >= 1 always holds; guards NaN rows (reported by the engine)
    tau = (cumulative.gather(-1, support - 1) - 1) / support.to(v.dtype)
    return torch.clamp(v - tau, min=0)


def hardmax(v: torch.Tensor) -> torch.Tensor:
    """One-hot encoding of the argmax of each row (lowest index on ties)."""
    return torch.nn.functional.one_hot(v.argmax(dim=-1), v.shape[-1]).to(v.dtype)


@dataclass(frozen=True)
class SimplexMap:
    """A map from logits onto the probability simplex.

    Attributes:
        name: registry key.
        function: (batch, C) -> (batch, C), rows on the simplex.
        margin_lipschitz: l2 Lipschitz constant of v -> S(v)_a - S(v)_b for all a != b
            (math.inf when unknown or not Lipschitz).
        uses_temperature: False for maps invariant to scaling the logits (hardmax).
        binary: True when every output coordinate is 0 or 1 (exact binomial bounds apply).
    """

    name: str
    function: Callable[[torch.Tensor], torch.Tensor]
    margin_lipschitz: float = math.inf
    uses_temperature: bool = True
    binary: bool = False


SIMPLEX_MAPS: dict[str, SimplexMap] = {}


def register_simplex_map(name: str, function: Callable[[torch.Tensor], torch.Tensor],
                         margin_lipschitz: float = math.inf, uses_temperature: bool = True,
                         binary: bool = False) -> SimplexMap:
    """Add a simplex map to the registry (replacing one of the same name) and return it.

    ``function`` must map every row of logits onto the simplex (values in [0,1] summing to 1);
    the soundness of the certificates rests on that range. Leave ``margin_lipschitz`` at
    infinity unless you have proved a constant.
    """
    if not callable(function):
        raise InvalidArgumentError(f"simplex map {name!r} must be callable")
    if not (margin_lipschitz > 0):
        raise InvalidArgumentError(f"margin_lipschitz of {name!r} must be > 0, got {margin_lipschitz!r}")
    entry = SimplexMap(name, function, float(margin_lipschitz), uses_temperature, binary)
    SIMPLEX_MAPS[name] = entry
    return entry


def get_simplex_map(name: str) -> SimplexMap:
    """The registered map called ``name`` (InvalidArgumentError if unknown)."""
    if name not in SIMPLEX_MAPS:
        raise InvalidArgumentError(f"unknown simplex map {name!r}; known: {', '.join(sorted(SIMPLEX_MAPS))}")
    return SIMPLEX_MAPS[name]


register_simplex_map("softmax", softmax, margin_lipschitz=1 / math.sqrt(2))
register_simplex_map("sparsemax", sparsemax, margin_lipschitz=math.sqrt(2))
register_simplex_map("hardmax", hardmax, uses_temperature=False, binary=True)


@dataclass(frozen=True)
class Candidate:
    """One soft output: a simplex map at a temperature (None for maps that ignore it)."""

    map: str
    temperature: float | None

    @property
    def label(self) -> str:
        """``softmax(t=0.5)``; distinct candidates get distinct labels (certificates key their alpha
        shares by label), so a temperature that ``:g`` would round is written in full."""
        if self.temperature is None:
            return self.map
        short = f"{self.temperature:g}"
        return f"{self.map}(t={short if float(short) == self.temperature else repr(self.temperature)})"

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """S(t z) in float64, clamped to [0,1] against rounding."""
        entry = get_simplex_map(self.map)
        scaled = logits.double() if self.temperature is None else logits.double() * self.temperature
        return entry.function(scaled).clamp_(0.0, 1.0)


def candidate_grid(maps: Sequence[str], temperatures: Sequence[float]) -> list[Candidate]:
    """Every (map, temperature) pair in order; maps without a temperature appear once."""
    if isinstance(maps, str):
        maps = [maps]
    if not maps:
        raise InvalidArgumentError("at least one simplex map is required")
    try:
        temperatures = [float(t) for t in temperatures]
    except (TypeError, ValueError):  # "abc", [None], a bare number
        raise InvalidArgumentError(f"temperatures must be a list of finite numbers > 0, got {temperatures!r}") from None
    if not temperatures or any(not math.isfinite(t) or t <= 0 for t in temperatures):
        raise InvalidArgumentError(f"temperatures must be finite numbers > 0, got {temperatures}")
    grid: list[Candidate] = []
    for name in maps:
        entry = get_simplex_map(name)
        for t in temperatures if entry.uses_temperature else [None]:
            candidate = Candidate(name, t)
            if candidate not in grid:
                grid.append(candidate)
    return grid


class SoftMoments:
    """Engine accumulator of soft outputs (Accumulator protocol of robustcert.engine).

    For input i, candidate k and class c: ``sums[i, k, c]`` = sum over samples of S_k(z)_c and
    ``squares[i, k, c]`` = sum of S_k(z)_c^2 (float64, on the device, no host sync), and
    ``votes[i, c]`` = number of samples whose argmax logit is c. ``active[i]`` lists the
    candidates computed for input i (all of them by default), so an estimation stage can
    compute only the candidate selected for each input.
    """

    def __init__(self, num_inputs: int, num_classes: int, device: torch.device,
                 candidates: Sequence[Candidate], active: Sequence[Sequence[int]] | None = None):
        self.num_classes = num_classes
        self.candidates = list(candidates)
        shape = (num_inputs, len(self.candidates), num_classes)
        self.sums = torch.zeros(shape, dtype=torch.float64, device=device)
        self.squares = torch.zeros(shape, dtype=torch.float64, device=device)
        self.votes = torch.zeros(num_inputs, num_classes, dtype=torch.int64, device=device)
        self.samples = torch.zeros(num_inputs, dtype=torch.int64, device=device)
        self._ones = torch.ones(0, dtype=torch.int64, device=device)
        everything = list(range(len(self.candidates)))
        self.active = [list(a) for a in active] if active is not None else [everything] * num_inputs
        if len(self.active) != num_inputs:
            raise ValueError("one list of active candidates per input is required")

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        logits = outputs[start:stop]
        if self._ones.numel() < stop - start:
            self._ones = torch.ones(stop - start, dtype=torch.int64, device=self.votes.device)
        self.votes[row].scatter_add_(0, logits.argmax(dim=1), self._ones[: stop - start])
        self.samples[row] += stop - start
        for k in self.active[row]:
            mapped = self.candidates[k].apply(logits)
            self.sums[row, k] += mapped.sum(dim=0)
            self.squares[row, k] += (mapped * mapped).sum(dim=0)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host copies (at the end): means and unbiased sample variances, shape (inputs, candidates,
        classes), and the argmax votes (inputs, classes). Variances are 0 when n < 2."""
        n = self.samples.cpu().numpy().astype(np.float64)[:, None, None]
        sums, squares = self.sums.cpu().numpy(), self.squares.cpu().numpy()
        means = sums / np.maximum(n, 1)
        variances = np.where(n > 1, (squares - sums * means) / np.maximum(n - 1, 1), 0.0)
        return np.clip(means, 0.0, 1.0), np.clip(variances, 0.0, None), self.votes.cpu().numpy()
