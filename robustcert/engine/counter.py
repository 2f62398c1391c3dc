"""Counter-based noise streams: an input's noise as a pure function of (key, sample, coordinate).

The CUDA sampling loop draws noise for a whole batch in one kernel and replays the batch as a
CUDA graph (:mod:`robustcert.engine.step`). A ``torch.Generator`` per input cannot do that: its
values depend on how its draws are cut and it is host state. Here each input has a *key* (the
63-bit :func:`robustcert.engine.sampling.derive_seed` of (seed, index, stage)) and a position (the
samples it has used), and the value of coordinate k of its sample j is

    w0, w1, w2, w3 = Philox4x32-10(key, counter = (g, j mod 2^32, j div 2^32, tag))

(Salmon, Moraes, Dror and Shaw, SC 2011, "Parallel random numbers: as easy as 1, 2, 3"), with
g = k div 4 for Gaussian noise and g = k div 2 for the discretized Gaussian:

* Gaussian (tag 0): the four words give four uniforms u = ((w >> 8) + 1/2) 2^-24 in (0, 1) (the
  midpoints of 2^24 cells: never 0 or 1), and Box-Muller turns (u0, u1) and (u2, u3) into
  z = sqrt(-2 ln u_a) (cos 2 pi u_b, sin 2 pi u_b); coordinate k takes z_(k mod 4) times sigma;
* discretized Gaussian (tag 1, the floating-point-sound mode, :mod:`robustcert.engine.sound`): the
  coordinate takes the 62 fair bits (w_2m << 30) | (w_2m+1 >> 2), m = k mod 2, and the sound
  mode's exact alias table turns them into the integer N.

So an input's samples depend on (seed, index, stage) alone: not on the batch size, on which
inputs share a batch, on the order of draws, or on how the sampling is sharded. Coordinates are
numbered in the memory order of the engine's buffers (channels-last batches interleave channels).

Two implementations of the same stream: :func:`counter_fill` in torch operations (any device;
the reference, and what CPU tests run) and one fused Triton kernel per noise on CUDA
(:mod:`robustcert.engine.counter_triton`). The random words are the same integers in both; the
Gaussian's float transform (log, cos, sin) may differ in the last bit between them, so the engine
records which one ran (``noise_stream`` in its report); the discretized Gaussian is integers up
to one IEEE division, the same in both.

CPU runs keep the per-input ``torch.Generator`` streams (``stream="generator"``): their samples,
and so every committed CPU result, are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Philox4x32 multipliers and key increments (Random123's PHILOX_M4x32_0/1, PHILOX_W32_0/1).
PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
#: The fourth counter word: which noise the words feed (a key never gives two noises the same words).
GAUSSIAN_TAG, DISCRETE_TAG = 0, 1
#: What a run records about the stream (the implementation is appended: "triton" or "torch").
STREAM_NAME = "philox4x32-10 counter: key derive_seed(seed, index, stage), counter (coordinate group, sample)"


@dataclass
class CounterStream:
    """One input's stream for one stage: its key and how many samples it has used so far.

    The engine's counterpart of a ``torch.Generator`` (what :meth:`MonteCarloEngine.generator`
    returns when the engine samples from counters): a later ``run`` with the same stream continues
    where the last one stopped.
    """

    key: int
    position: int = 0


def _mul_hi_lo(multiplier: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The high and low 32 bits of ``multiplier * x`` for 32-bit values held in int64, without
    overflowing int64: x is split into 16-bit halves (each partial product is below 2^48)."""
    high_part = x.bitwise_right_shift(16).mul_(multiplier)  # < 2^48
    low = x.bitwise_and(0xFFFF).mul_(multiplier)  # < 2^48
    low.add_(high_part.bitwise_and(0xFFFF).bitwise_left_shift_(16))  # < 2^49
    high = high_part.bitwise_right_shift_(16).add_(low.bitwise_right_shift(32))
    return high, low.bitwise_and_(MASK32)


def philox4x32(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
               key: tuple[int, int] | tuple[torch.Tensor, torch.Tensor],
               rounds: int = PHILOX_ROUNDS) -> tuple[torch.Tensor, ...]:
    """Philox4x32 (Salmon et al. 2011) on 32-bit words held in int64 tensors (broadcast together).

    Each round: (c0, c1, c2, c3) <- (hi(B c2) ^ c1 ^ k0, lo(B c2), hi(A c0) ^ c3 ^ k1, lo(A c0)),
    A, B = PHILOX_MULTIPLIERS, then the key (k0, k1) grows by PHILOX_KEY_STEPS (mod 2^32).
    """
    k0, k1 = key
    for _ in range(rounds):
        hi_a, lo_a = _mul_hi_lo(PHILOX_MULTIPLIERS[0], c0)
        hi_b, lo_b = _mul_hi_lo(PHILOX_MULTIPLIERS[1], c2)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_STEPS[0]) & MASK32
        k1 = (k1 + PHILOX_KEY_STEPS[1]) & MASK32
    return c0, c1, c2, c3


def key_words(key) -> tuple:
    """(k0, k1): the low and high 32-bit words of a key (an int or an int64 tensor)."""
    return key & MASK32, (key >> 32) & MASK32


def counter_words(count: int, width: int, first, groups_per_word: int, tag: int, key, device) -> torch.Tensor:
    """The Philox words of samples first .. first + count - 1: (count, groups, 4) int64, groups =
    ceil(width / groups_per_word) (``first`` and ``key`` may be device scalars: no host sync)."""
    groups = -(-width // groups_per_word)
    sample = torch.arange(count, dtype=torch.int64, device=device).add_(first).view(count, 1)
    group = torch.arange(groups, dtype=torch.int64, device=device).view(1, groups)
    zeros = torch.zeros((count, groups), dtype=torch.int64, device=device)
    words = philox4x32(group + zeros, (sample & MASK32) + zeros, (sample >> 32) + zeros,
                       torch.full((), tag, dtype=torch.int64, device=device) + zeros, key_words(key))
    return torch.stack(words, dim=2)


def unit_midpoints(words: torch.Tensor) -> torch.Tensor:
    """Uniforms ((w >> 8) + 1/2) 2^-24 in (0, 1), exact in float32, from 32-bit words."""
    return words.bitwise_right_shift(8).to(torch.float32).add_(0.5).mul_(2.0 ** -24)


def gaussian_values(count: int, width: int, first, key, sigma: float, device) -> torch.Tensor:
    """(count, width) float32: sigma times the stream's standard normals of samples first, ..."""
    words = counter_words(count, width, first, 4, GAUSSIAN_TAG, key, device)
    normals = box_muller(unit_midpoints(words))
    return normals.reshape(count, -1)[:, :width].mul_(sigma)


def box_muller(uniforms: torch.Tensor) -> torch.Tensor:
    """(..., 4) uniforms -> (..., 4) normals: z0, z1 from (u0, u1) and z2, z3 from (u2, u3)."""
    radius = uniforms[..., 0::2].log().mul_(-2.0).sqrt_()  # (..., 2): from u0 and u2
    angle = uniforms[..., 1::2].mul(2.0 * math.pi)  # (..., 2): from u1 and u3
    cosine, sine = angle.cos().mul_(radius), angle.sin().mul_(radius)
    return torch.stack((cosine[..., 0], sine[..., 0], cosine[..., 1], sine[..., 1]), dim=-1)


def discrete_coins(count: int, width: int, first, key, device) -> torch.Tensor:
    """(count, width) int64: 62 fair bits per coordinate (two 32-bit words each)."""
    words = counter_words(count, width, first, 2, DISCRETE_TAG, key, device)
    high, low = words[..., 0::2], words[..., 1::2]  # (count, groups, 2): words 0, 2 and 1, 3
    coins = high.bitwise_left_shift(30).bitwise_or_(low.bitwise_right_shift(2))
    return coins.reshape(count, -1)[:, :width]


def discrete_values(coins: torch.Tensor, tables) -> torch.Tensor:
    """The sound mode's integer noise N (float32, exact) from 62-bit coins through the exact alias
    table: the top bits pick a column, the rest are compared with its cut
    (:meth:`robustcert.engine.sound.DiscreteGaussianNoise.draw`, the same rule)."""
    thresholds, own, aliases, shift = tables
    column = coins.bitwise_right_shift(shift)
    keep = coins < thresholds.index_select(0, column.view(-1)).view_as(column)
    return torch.where(keep, own.index_select(0, column.view(-1)).view_as(column),
                       aliases.index_select(0, column.view(-1)).view_as(column))


def counter_fill(noise, out: torch.Tensor, clean: torch.Tensor, key, first) -> None:
    """Fill ``out`` (count, width), contiguous, with noisy copies of the flat input ``clean`` from
    the stream of ``key`` at samples ``first`` .. (torch operations; see the module docstring).

    ``noise``: :class:`robustcert.engine.sampling.GaussianNoise` (x + sigma z) or
    :class:`robustcert.engine.sound.DiscreteGaussianNoise` (``clean`` holds the grid integers K
    as float32; out = (K + N) / L). ``key`` and ``first`` are ints or int64 device scalars.
    """
    count, width = out.shape
    if kind_of(noise) == "gaussian":
        out.copy_(gaussian_values(count, width, first, key, noise.sigma, out.device)).add_(clean)
        return
    coins = discrete_coins(count, width, first, key, out.device)
    out.copy_(discrete_values(coins, discrete_tables(noise, out.device))).add_(clean).div_(noise.levels)


def reference_fill(noise):
    """:func:`counter_fill` with the kernels' signature: ``fill(out, clean, key, first, skip=0)``,
    ``key`` and ``first`` int64 tensors of one element (sample ``first + skip`` comes first)."""
    def fill(out: torch.Tensor, clean: torch.Tensor, key: torch.Tensor, first: torch.Tensor, skip: int = 0) -> None:
        counter_fill(noise, out, clean, key[0], first[0] + skip)
    return fill


def kind_of(noise) -> str | None:
    """Which counter implementation a noise has: "gaussian", "discrete-gaussian", or None (none:
    the engine samples it from per-input generators)."""
    name = getattr(noise, "name", None)
    return name if name in ("gaussian", "discrete-gaussian") else None


def discrete_tables(noise, device: torch.device):
    """The alias table of a DiscreteGaussianNoise on ``device``: (thresholds, own values, alias
    values, shift), shift = B - b (the top b bits of the B-bit coin pick the column)."""
    thresholds, own, aliases = noise._tables(device)
    return thresholds, own, aliases, noise.table.bits - noise.table.column_bits
