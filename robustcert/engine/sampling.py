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

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check_sigma


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


class GaussianNoise:
    """Isotropic Gaussian noise N(0, sigma^2 I) (Cohen et al. 2019), in input (pixel) units.

    The interface every noise of the engine has: ``sample_shape`` (the shape of one noisy
    sample given the input's; the same for additive noise) and ``perturb`` (fill a chunk of
    noisy samples of one input from its generator).
    """

    name = "gaussian"

    def __init__(self, sigma: float):
        self.sigma = check_sigma(sigma)

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        """Fill the contiguous tensor ``out`` with i.i.d. noise from ``generator``."""
        out.normal_(0.0, self.sigma, generator=generator)

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        """``out`` (count, per_sample), contiguous: ``count`` noisy copies of the flat input ``clean``."""
        self.draw(out, generator)
        out.add_(clean)


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
