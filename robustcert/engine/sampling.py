"""Seeded noise sampling: per-input random streams, the noise distribution, batch plans.

Reproducibility rule: each input owns a ``torch.Generator`` derived from (seed, index, stage)
(:func:`derive_seed`), so an input's samples do not depend on which other inputs share the run,
their order, the batch they are packed into, or sharding across processes. Two ways to cut an
input's n samples into *draws* (one generator call each):

* :func:`plan_batches` (fixed-n methods): draws of ``min(batch_size, remaining)``; same seed,
  index, stage, n, batch size and device give the same samples.
* :func:`plan_blocks` (sequential rounds): draws of sizes fixed by the caller, independent of the
  batch size; batches are filled completely, a draw that crosses a batch boundary being drawn
  whole and then split. Same seed, index, stage, draw sizes and device give the same samples
  whatever the batch size.

The draw sizes matter because a generator's values depend on how its draws are cut: torch's CPU
``Tensor.normal_`` fills blocks of 16 values (a split at a multiple of 16 values keeps them, any
other split changes them), and CUDA's Philox offsets depend on each call's size and launch grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import InvalidArgumentError, ShapeError, check_count, check_sigma


def derive_seed(seed: int, index: int, stage: str) -> int:
    """A 63-bit seed for one input and one sampling stage, derived from the run's seed.

    numpy's SeedSequence hashes (seed, index, stage) so that neighbouring indices give
    statistically independent streams. The whole stage name is used (as one arbitrary-size
    integer), so names that share a prefix, e.g. "selection-a" and "selection-b", never share
    a stream.
    """
    stage_key = int.from_bytes(stage.encode("utf-8"), "little")
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index), stage_key]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def fresh_seed() -> int:
    """A random seed from the OS, to be recorded in certificates when the user gives none."""
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


def input_generator(device: torch.device, seed: int, index: int, stage: str) -> torch.Generator:
    """The generator of one input for one stage (e.g. "selection", "estimation") on ``device``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, index, stage))
    return generator


@runtime_checkable
class Noise(Protocol):
    """What the engine needs of a noise distribution: the sampler side of every noise.

    :class:`GaussianNoise`, :class:`LaplaceNoise`, :class:`UniformNoise` (additive, any layout),
    :class:`AblationNoise` and :class:`robustcert.engine.DiscreteGaussianNoise` implement it; the
    radius and norm a noise certifies are the method's (:mod:`robustcert.methods.noises`).

    Attributes:
        name: recorded as the run's ``noise`` (``gaussian``).
        sigma: the level a noise-conditioned model is given (``model(x, sigma)``); None if none.

    A noise that treats several values together (ablation keeps a pixel's channels together) also
    defines ``laid_out(input_shape, channels_last)``: a copy for one input shape and buffer layout,
    which the engine makes before sampling.
    """

    name: str
    sigma: float | None

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one noisy sample (what the model receives) for an input of ``input_shape``."""

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        """Fill ``out`` (count, per_sample), contiguous, with ``count`` noisy samples of the flat input
        ``clean``, drawn from the input's ``generator``."""


class AdditiveNoise:
    """Noise added to the input, of per-coordinate standard deviation ``sigma`` (pixel units).

    The interface every noise of the engine has: ``sample_shape`` (the shape of one noisy
    sample given the input's; the same for additive noise) and ``perturb`` (fill a chunk of
    noisy samples of one input from its generator). An additive noise writes ``draw``.
    """

    name = "additive"

    def __init__(self, sigma: float):
        self.sigma = check_sigma(sigma)

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        """Fill the contiguous tensor ``out`` with i.i.d. noise from ``generator``."""
        raise NotImplementedError

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        """``out`` (count, per_sample), contiguous: ``count`` noisy copies of the flat input ``clean``."""
        self.draw(out, generator)
        out.add_(clean)


class GaussianNoise(AdditiveNoise):
    """Isotropic Gaussian noise N(0, sigma^2 I) (Cohen et al. 2019), in input (pixel) units."""

    name = "gaussian"

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        out.normal_(0.0, self.sigma, generator=generator)


GRID_BITS = 24  # float32 holds every integer below 2^24 exactly


def fill_symmetric_grid(out: torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``out`` (float32 or wider) with i.i.d. values uniform on the 2^24 cell midpoints
    (2j + 1) / 2^24 - 1, j = 0 .. 2^24 - 1, of the interval (-1, 1).

    Every step is exact in float32 (integers below 2^25, then a power-of-two scaling), so the
    values are exactly symmetric about 0 and never reach -1, 0 or 1; ``Tensor.uniform_`` instead
    gives [0, 1) on a grid that includes 0, whose inverse-CDF transforms can return infinity.
    """
    out.random_(0, 2 ** GRID_BITS, generator=generator)
    out.mul_(2.0).sub_(2 ** GRID_BITS - 1).mul_(2.0 ** -GRID_BITS)


class UniformNoise(AdditiveNoise):
    """Uniform noise on the cube [-lambda, lambda]^d with lambda = sqrt(3) sigma (Yang et al. 2020,
    "Randomized smoothing of all shapes and sizes"): per-coordinate standard deviation sigma.

    Drawn as lambda times :func:`fill_symmetric_grid` (the uniform law on 2^24 equal cells, each
    at its midpoint).
    """

    name = "uniform"

    def __init__(self, sigma: float):
        super().__init__(sigma)
        self.half_width = math.sqrt(3.0) * self.sigma

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        fill_symmetric_grid(out, generator)
        out.mul_(self.half_width)


class LaplaceNoise(AdditiveNoise):
    """Isotropic Laplace noise, density proportional to exp(-||z||_1 / b) with scale
    b = sigma / sqrt(2) (Teng et al. 2020, "l1 adversarial robustness certificates: a randomized
    smoothing approach"): per-coordinate standard deviation sigma (the variance is 2 b^2).

    Inverse CDF of a symmetric uniform w in (-1, 1) (:func:`fill_symmetric_grid`):
    z = sign(w) * b * (-ln(1 - |w|)), since -ln(1 - U) is Exp(1) for U uniform on (0, 1) and the
    sign is independent of |w|. The grid is finite, so |z| <= b ln(2^24) = 16.6 b: the tail beyond
    has probability e^-16.6 = 6e-8 per coordinate (torch's own Gaussian sampler also draws from
    float grids; the floating-point caveats of randomized smoothing apply to every additive noise).
    """

    name = "laplace"

    def __init__(self, sigma: float):
        super().__init__(sigma)
        self.scale = self.sigma / math.sqrt(2.0)

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        fill_symmetric_grid(out, generator)
        magnitude = out.abs().neg_().log1p_().mul_(-self.scale)  # b * (-ln(1 - |w|)), one temporary
        torch.copysign(magnitude, out, out=out)


class AblationNoise:
    """Randomized ablation (Levine and Feizi, AAAI 2020, "Robustness certificates for sparse
    adversarial attacks by randomized ablation"): keep ``keep`` of the d pixels of an input,
    chosen uniformly at random without replacement, and mark the others as absent.

    Encoding (the paper's public code): an input (C, *spatial) in [0, 1] becomes (2C, *spatial):
    a kept pixel holds (x, 1 - x) over its C channels, an ablated pixel holds zeros in all 2C
    channels. A kept pixel's two halves sum to 1, so "absent" differs from every pixel value,
    black included. The channels of a pixel are kept or ablated together; d = prod(spatial)
    counts pixels (784 for MNIST, 1024 for CIFAR-10).

    The engine fills its buffers in memory order (channels-last 4-D batches interleave
    channels), so the noise must know where each value sits: :meth:`laid_out` returns a copy for
    one input shape and layout, which the engine makes before sampling.

    The kept set of a sample is the ``keep`` largest of d i.i.d. uniform 62-bit integers (a
    uniformly random subset; two keys tie with probability below d^2 / 2^63, where the smaller
    index wins).
    """

    name = "ablation"
    sigma = None  # no noise level; the engine passes sigma only to noise-conditioned models

    def __init__(self, keep: int, input_shape: tuple[int, ...] | None = None, channels_last: bool = False):
        self.keep = check_count(keep, "keep")
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.channels_last = bool(channels_last)
        if self.input_shape is not None:
            self.sample_shape(self.input_shape)  # checks the shape and keep <= pixels

    @staticmethod
    def pixels(input_shape: tuple[int, ...]) -> int:
        """d: the number of pixels of an input (C, *spatial)."""
        if len(input_shape) < 2:
            raise ShapeError(f"randomized ablation needs inputs (channels, *spatial), got shape {tuple(input_shape)}")
        return math.prod(input_shape[1:])

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        pixels = self.pixels(input_shape)
        if self.keep > pixels:
            raise InvalidArgumentError(f"keep = {self.keep} is more than the {pixels} pixels of an input "
                                       f"of shape {tuple(input_shape)}")
        return (2 * input_shape[0], *input_shape[1:])

    def laid_out(self, input_shape: tuple[int, ...], channels_last: bool) -> "AblationNoise":
        """This noise for inputs of ``input_shape`` filled into buffers of the given layout."""
        return AblationNoise(self.keep, input_shape, channels_last)

    def keep_mask(self, count: int, pixels: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
        """(count, pixels): 1 at the ``keep`` pixels kept by each of ``count`` samples, else 0."""
        keys = torch.randint(0, 2 ** 62, (count, pixels), generator=generator, device=device)
        kept = keys.topk(self.keep, dim=1, sorted=False).indices
        return torch.zeros((count, pixels), dtype=dtype, device=device).scatter_(1, kept, 1.0)

    def encode(self, out: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> None:
        """Write ablated copies into ``out`` (count, 2 C d), in this layout's memory order, from
        ``clean``: one flat input (C d values, same order) or one per row (count, C d); ``mask``
        (count, d) marks the kept pixels."""
        channels = self.input_shape[0]
        pixels = self.pixels(self.input_shape)
        if self.channels_last:  # memory order (pixel, channel): 2C consecutive values per pixel
            x = clean.reshape(-1, pixels, channels)
            encoded = out.view(len(out), pixels, 2, channels)
            kept = mask.view(len(out), pixels, 1)
            encoded[:, :, 0, :] = x * kept
            encoded[:, :, 1, :] = (1.0 - x) * kept
        else:  # memory order (channel, pixel)
            x = clean.reshape(-1, channels, pixels)
            encoded = out.view(len(out), 2, channels, pixels)
            kept = mask.view(len(out), 1, pixels)
            encoded[:, 0] = x * kept
            encoded[:, 1] = (1.0 - x) * kept

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        """``out`` (count, per_sample), contiguous: ``count`` ablated copies of the flat input ``clean``."""
        if self.input_shape is None:
            raise RuntimeError("AblationNoise.perturb needs laid_out(input_shape, channels_last) first")
        pixels = self.pixels(self.input_shape)
        rows = max(1, (1 << 20) // pixels)  # bounds the temporary keys to 8 MiB per step
        for start in range(0, len(out), rows):
            chunk = out[start:start + rows]
            self.encode(chunk, clean, self.keep_mask(len(chunk), pixels, generator, out.device, out.dtype))


def ablate(xs: torch.Tensor, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ablated copies (N, 2C, *spatial) of a batch of different inputs (N, C, *spatial), one random
    kept set each, in the encoding of :class:`AblationNoise` (for training base models)."""
    noise = AblationNoise(keep, tuple(xs.shape[1:]))
    mask = noise.keep_mask(len(xs), noise.pixels(noise.input_shape), generator, xs.device, xs.dtype)
    out = torch.empty((len(xs), *noise.sample_shape(noise.input_shape)), dtype=xs.dtype, device=xs.device)
    noise.encode(out.view(len(xs), -1), xs.reshape(len(xs), -1), mask)
    return out


@dataclass
class Segment:
    """``count`` samples of input ``row``, placed at ``[start, start + count)`` of a batch.

    ``draw`` > 0: the samples are ``[offset, offset + count)`` of one draw of ``draw`` samples
    that crosses a batch boundary (drawn whole once, at its first segment, then split); 0: the
    segment is a whole draw of its own.
    """

    row: int
    start: int
    count: int
    offset: int = 0
    draw: int = 0


def plan_batches(num_inputs: int, n: int, batch_size: int) -> list[list[Segment]]:
    """Split n samples per input into chunks of ``min(batch_size, remaining)`` and pack them.

    Chunks of consecutive inputs share a batch when they fit (first fit, in order). The chunk
    sizes of an input depend only on n and batch_size, never on its neighbours.
    """
    batches: list[list[Segment]] = []
    current: list[Segment] = []
    used = 0
    for row in range(num_inputs):
        remaining = n
        while remaining > 0:
            count = min(batch_size, remaining)
            if used + count > batch_size:
                batches.append(current)
                current, used = [], 0
            current.append(Segment(row, used, count))
            used += count
            remaining -= count
    if current:
        batches.append(current)
    return batches


def plan_blocks(num_inputs: int, blocks: list[int], batch_size: int) -> list[list[Segment]]:
    """Every input draws ``blocks`` (draw sizes, in order); batches are filled completely.

    Inputs follow each other in order, and a draw that does not fit in the rest of a batch is
    split across batches (segments with ``draw`` set), so only the last batch is partly filled.
    An input's samples depend on ``blocks``, never on ``batch_size`` or its neighbours.
    """
    batches: list[list[Segment]] = []
    current: list[Segment] = []
    used = 0
    for row in range(num_inputs):
        for size in blocks:
            offset = 0
            while offset < size:
                count = min(size - offset, batch_size - used)
                whole = offset == 0 and count == size
                current.append(Segment(row, used, count, 0 if whole else offset, 0 if whole else size))
                used, offset = used + count, offset + count
                if used == batch_size:
                    batches.append(current)
                    current, used = [], 0
    if current:
        batches.append(current)
    return batches
