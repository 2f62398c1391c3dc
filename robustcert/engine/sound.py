"""Floating-point-sound noise for quantized inputs (Voracek and Hein, ICLR 2023, "Sound randomized
smoothing in floating-point arithmetic").

Why the standard sampler is not sound. Cohen et al.'s theorem assumes that the noisy input at x'
has the law of the one at x shifted by x' - x. In floating point the engine computes
fl(x + fl(delta)), whose law is NOT a shift: e.g. for x_i = 2^-5 every fl(x_i + delta_i) is a
multiple of 2^-29, for x_i = 0 it mostly is not. A base classifier may read such rounding
footprints, and then a point certified at radius 1.26 has a differently classified point 0.80
away (the paper's numbers; tests/test_sound_float.py builds such a classifier with a footprint
test of our own). The Clopper-Pearson step is fine; the Neyman-Pearson step fails.

The sound procedure, for inputs on a grid x = K / L (K integer, e.g. L = 255 for 8-bit images):

    N_i  ~ the discretized Gaussian, P(N_i = j) = Phi((j + 1/2) / (L sigma)) - Phi((j - 1/2) / (L sigma)),
           i.e. the law of round(L delta_i), delta_i ~ N(0, sigma^2); drawn from fair coins only
    M    = K + N                   (exact, in integers)
    z    = M / L                   (the network input: a function of the integer M alone)

Since K + round(L delta) = round(L (x + delta)) for integer K, the smoothed classifier is
g(x)_c = P[F(round(L (x + delta)) / L) = c]: Gaussian smoothing of the deterministic base
classifier h(u) = F(round(L u) / L). Cohen et al.'s Theorem 1 applies to h unchanged, and the
engine computes g exactly at every grid point, so a certificate holds for every x' = K'/L with
||x' - x||_2 < R (pixel units, as in the standard mode). Off-grid inputs are refused: the integer
sampler does not compute g there.

Fair coins and the correction term. N is drawn by inverse transform from U uniform on
[0, 2^B), B = 62 random bits: thresholds T_j = nint(2^B Phi((j + 1/2) / (L sigma))) for
j = -J..J-1, J = ceil(tail_sds L sigma), computed with mpmath at 256 bits from the exact value of
the double sigma; N = #{j : T_j <= U} - J, so the implemented law puts the integer weight
w_j = T_j - T_{j-1} on j (the end values absorb the tails). It is sampled in O(1) per coordinate
by an exact integer alias table (Walker 1977; Vose 1991) with 2^b columns: the top b bits of U
pick a column, the other B - b bits are compared with the column's integer cut. Per coordinate
the implemented law is within total variation

    eps_1 = (2J + 1) 2^(1-B) + 2 Phi(-(J + 1/2) / (L sigma))

of the discretized Gaussian: each threshold is within 1/2 unit (plus mpmath's error) of
2^B Phi(.), so each w_j is within 2 units of 2^B P(N = j) apart from the tail mass the two end
values absorb, and the total variation is at most (2J + 1) 2^(1-B) / 2 (a factor 2 to spare)
plus the tail mass 2 Phi(-(J + 1/2)/(L sigma)). Over the d independent coordinates of a sample
it is at most eps = d eps_1, so every event's probability, pA included, moves by at most eps. A certificate therefore uses
pA_lower - eps (abstaining when that is <= 1/2): at sigma = 0.5, L = 255, d = 3072,
eps = 4e-12, a change in the 11th digit of the radius. eps is spent on no share of alpha: it
is a deterministic bound, not a probability.

What else must hold: the base model's output on a row must be a function of that row alone.
Batch shape, out-of-memory splits, compilation and kernel autotuning change outputs by ~1e-6;
the runner's sound mode (:class:`robustcert.engine.runner.ModelRunner`, ``fixed_batch``) fixes
them (README, "Soundness").
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from ..errors import InvalidArgumentError, check_count, check_sigma

#: Random bits per noise coordinate (the resolution of the implemented probabilities).
RANDOM_BITS = 62
#: Noise values beyond this many standard deviations are clipped to the end values.
TAIL_SDS = 12.0
#: mpmath working precision (bits) for Phi.
MP_PRECISION = 256
#: The largest J (noise values -J..J): the tables are built once, with mpmath, in about 0.3 ms per value.
MAX_HALF_WIDTH = 1 << 16
#: How far an input may be from the grid, in grid units (L |x - K/L|), and still count as the grid
#: point K/L: the float32 rounding of K/L (half an ulp of numbers <= 1 is 2^-24, so L 2^-24 in grid
#: units; twice that for an input computed in float32, such as pixel / 255). Anything farther is
#: refused: the certificate would be about another input. The distance accepted is recorded
#: (:func:`grid_rounding`).
FLOAT32_ROUNDING = 2.0 ** -23


def as_levels(quantization) -> int:
    """The grid of the inputs as a number of levels L (inputs are K / L with integer K).

    ``quantization`` is L itself (an integer >= 1, e.g. 255 for 8-bit images), or the step 1/L
    as a number < 1 (e.g. 1/255).
    """
    if isinstance(quantization, bool) or not isinstance(quantization, (int, float)) or not math.isfinite(quantization) \
            or quantization <= 0:
        raise InvalidArgumentError(f"quantization must be a number of levels L >= 1 (e.g. 255) or a step 1/L "
                                   f"(e.g. 1/255), got {quantization!r}")
    if quantization < 1:
        levels = round(1 / quantization)
        if abs(1 / quantization - levels) > 1e-6 * levels:
            raise InvalidArgumentError(f"quantization step {quantization!r} is not 1/L for a whole number L")
        return levels
    if float(quantization) != int(quantization):
        raise InvalidArgumentError(f"quantization must be a whole number of levels (e.g. 255), got {quantization!r}")
    return check_count(int(quantization), "quantization")


@dataclass(frozen=True)
class DiscreteGaussianTable:
    """The implemented law of N (integer weights w_j on j = -J..J summing to 2^B) and its alias table."""

    sigma: float
    levels: int
    bits: int
    half_width: int          # J
    weights: tuple[int, ...]  # w_{-J}, ..., w_J
    tail: float              # Phi(-(J + 1/2) / (L sigma))
    column_bits: int         # b: 2^b alias columns
    cuts: tuple[int, ...]    # per column: keep the column's own value when the low B - b bits are < cut
    aliases: tuple[int, ...]  # per column: the value index taken otherwise

    @property
    def tv_per_coordinate(self) -> float:
        """eps_1 = (2J + 1) 2^(1-B) + 2 tail (module docstring)."""
        return (2 * self.half_width + 1) * 2.0 ** (1 - self.bits) + 2 * self.tail

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the weights and the alias table (what a run records and compares on resume)."""
        return hashlib.sha256(repr((self.weights, self.cuts, self.aliases)).encode()).hexdigest()


def alias_table(weights: list[int], column_bits: int, bits: int) -> tuple[list[int], list[int]]:
    """An exact alias table for integer weights summing to 2^bits over at most 2^column_bits values.

    Every column holds 2^(bits - column_bits) units: ``cut`` of them for the column's own value,
    the rest for ``alias``. Vose's method in integers: a column below the unit takes the rest from
    a column above it, which keeps integer weights, so the table's law is exactly ``weights``.
    """
    columns, unit = 1 << column_bits, 1 << (bits - column_bits)
    if sum(weights) != 1 << bits or len(weights) > columns or min(weights) < 0:
        raise ValueError("weights must be >= 0, sum to 2^bits and fit in the columns")
    remaining = list(weights) + [0] * (columns - len(weights))
    small = [i for i, w in enumerate(remaining) if w < unit]
    large = [i for i, w in enumerate(remaining) if w >= unit]
    cuts, aliases = [unit] * columns, list(range(columns))
    while small and large:
        low, high = small.pop(), large.pop()
        cuts[low], aliases[low] = remaining[low], high
        remaining[high] -= unit - remaining[low]
        (small if remaining[high] < unit else large).append(high)
    for index in small + large:  # exact arithmetic leaves these at exactly one unit
        if remaining[index] != unit:
            raise ValueError("alias table construction lost mass")  # cannot happen with integer weights
        cuts[index], aliases[index] = unit, index
    return cuts, aliases


@functools.lru_cache(maxsize=32)
def discrete_gaussian_table(sigma: float, levels: int, bits: int = RANDOM_BITS,
                            tail_sds: float = TAIL_SDS) -> DiscreteGaussianTable:
    """Thresholds, weights and alias table of the discretized Gaussian round(L delta), delta ~ N(0, sigma^2)."""
    import mpmath

    sigma = check_sigma(sigma)
    half_width = max(1, math.ceil(tail_sds * levels * sigma))
    if half_width > MAX_HALF_WIDTH:
        raise InvalidArgumentError(f"sound_float: quantization x sigma = {levels} x {sigma} needs {2 * half_width + 1} "
                                   f"noise values; at most {2 * MAX_HALF_WIDTH + 1} are supported")
    with mpmath.workprec(MP_PRECISION):
        exact = Fraction(sigma)  # the double's exact value
        scale = mpmath.mpf(exact.numerator) / exact.denominator * levels
        total = mpmath.mpf(2) ** bits
        thresholds = [int(mpmath.nint(total * mpmath.ncdf((j + mpmath.mpf(1) / 2) / scale)))
                      for j in range(-half_width, half_width)]
        tail = float(mpmath.ncdf(-(half_width + mpmath.mpf(1) / 2) / scale))
    edges = [0, *thresholds, 1 << bits]
    weights = [b - a for a, b in zip(edges, edges[1:])]
    column_bits = max(1, (len(weights) - 1).bit_length())
    cuts, aliases = alias_table(weights, column_bits, bits)
    return DiscreteGaussianTable(sigma, levels, bits, half_width, tuple(weights), tail, column_bits, tuple(cuts),
                                 tuple(aliases))


def grid_indices(inputs: torch.Tensor, levels: int, check: bool = True) -> torch.Tensor:
    """K = round(L x) as int64; with ``check``, every x must be within the float32 rounding of
    K / L (:data:`FLOAT32_ROUNDING`; one host synchronisation: check once per batch of inputs, not
    per chunk)."""
    scaled = inputs.double() * levels
    grid = torch.round(scaled)
    if check and inputs.numel():
        worst = float(((scaled - grid).abs() / levels).max())  # pixel units
        if worst > FLOAT32_ROUNDING:
            raise InvalidArgumentError(
                f"sound_float: inputs must lie on the grid k/{levels} (quantization={levels}), up to float32 rounding; "
                f"one is {worst:.3g} away from its grid point (e.g. 8-bit images: 255; the bundled digits: 16 or a "
                "multiple such as 256)")
    return grid.to(torch.int64)


def grid_rounding(inputs: torch.Tensor, levels: int) -> list[float]:
    """Per input, the l2 distance (pixel units) from x to the grid point K/L the sound mode
    certifies in its place (0 for an input exactly on the grid)."""
    scaled = inputs.double() * levels
    return ((scaled - torch.round(scaled)) / levels).flatten(1).norm(dim=1).tolist()


class DiscreteGaussianNoise:
    """Discretized Gaussian noise on the input grid k/L, sampled from fair coins, added in integers
    (module docstring). The engine's noise interface (:class:`robustcert.engine.sampling.GaussianNoise`):
    ``perturb`` fills a chunk with z = (K + N) / L.

    Args:
        sigma: the standard deviation of the Gaussian being discretized (pixel units).
        quantization: the input grid, L levels (255) or the step 1/L (:func:`as_levels`).
    """

    name = "discrete-gaussian"

    def __init__(self, sigma: float, quantization):
        self.sigma = check_sigma(sigma)
        self.levels = as_levels(quantization)
        self.table = discrete_gaussian_table(self.sigma, self.levels)
        self._device_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def correction(self, dimension: int) -> float:
        """eps = d eps_1: the most any event's probability differs from the exact discretized Gaussian's."""
        return check_count(dimension, "dimension") * self.table.tv_per_coordinate

    def _tables(self, device: torch.device):
        """Per column: the absolute keep threshold (column's first unit + cut), its own value and its
        alias's value (float32: |values| < 2^24 are exact), on ``device``."""
        if device not in self._device_tables:
            table = self.table
            unit = 1 << (table.bits - table.column_bits)
            thresholds = torch.tensor([c * unit + cut for c, cut in enumerate(table.cuts)], dtype=torch.int64,
                                      device=device)
            own = torch.arange(len(table.cuts), dtype=torch.float32, device=device) - table.half_width
            aliases = torch.tensor(table.aliases, dtype=torch.float32, device=device) - table.half_width
            self._device_tables[device] = (thresholds, own, aliases)
        return self._device_tables[device]

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fill the float32 tensor ``out`` with integer noise N (exact small integers), B random bits each."""
        thresholds, own, aliases = self._tables(out.device)
        table = self.table
        # for ranges >= 2^28 torch draws 64 random bits and reduces them modulo the range, on CPU and
        # CUDA (ATen DistributionsHelper.h, cuda/DistributionTemplates.h); 2^B divides 2^64: exact
        # B fair bits (given a fair generator, the assumption of every randomized-smoothing tool)
        coins = torch.randint(0, 1 << table.bits, (out.numel(),), dtype=torch.int64, device=out.device,
                              generator=generator)
        column = coins >> (table.bits - table.column_bits)  # the top b bits pick the column
        keep = coins < thresholds.index_select(0, column)  # the low bits against its cut
        torch.where(keep, own.index_select(0, column), aliases.index_select(0, column), out=out.view(-1))
        return out

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        """``out`` (count, per_sample) float32, contiguous: noisy copies (K + N) / L of the flat grid
        input ``clean``. The sum K + N of integers below 2^24 is exact in float32, so the network input
        fl(M / L) is a function of the integer M alone."""
        self.draw(out, generator)
        out.add_(grid_indices(clean, self.levels, check=False).to(out.dtype))
        out.div_(self.levels)

    def describe(self) -> dict:
        """What a certificate records about the sampler."""
        table = self.table
        return {"noise": "discretized Gaussian round(L delta), delta ~ N(0, sigma^2), added to K = L x in integers; "
                         "network input (K + N) / L",
                "levels": self.levels, "sigma_hex": float.hex(self.sigma), "random_bits": table.bits,
                "half_width": table.half_width, "alias_columns": 1 << table.column_bits,
                "table_sha256": table.digest, "tv_per_coordinate": table.tv_per_coordinate}
