"""The counter streams of :mod:`robustcert.engine.counter` as fused Triton kernels (CUDA).

One kernel launch fills a chunk of noisy samples: the Philox words, the transform to noise (Box-Muller,
or the sound mode's alias table in integers) and the addition of the clean input, with no
intermediate tensors (the torch-operations reference takes about 250 elementwise kernels). The
kernels read the key and the first sample index from device memory, so a CUDA graph can replay
them for another input or batch after a copy into those two scalars.

Imported only when a CUDA engine samples from counters; Triton's interpreter
(``TRITON_INTERPRET=1``) runs the same kernels on CPU tensors, which is how the tests compare them
with the torch reference on a machine without a GPU. :func:`available` checks a kernel against
the reference on the device before any run uses it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .counter import DISCRETE_TAG, GAUSSIAN_TAG, PHILOX_ROUNDS, counter_fill, discrete_tables, kind_of

BLOCK = 256  # Philox calls (groups of coordinates) per program


@triton.jit
def _counters(key_ptr, first_ptr, skip, count, groups, BLOCK: tl.constexpr):
    """This program's groups: validity, sample j (within the chunk), group g and the Philox inputs."""
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    valid = q < count * groups
    j = q // groups
    g = q - j * groups
    sample = tl.load(first_ptr) + skip + j
    key = tl.load(key_ptr)
    return valid, j, g, key, g.to(tl.uint32), (sample & 0xFFFFFFFF).to(tl.uint32), (sample >> 32).to(tl.uint32)


@triton.jit
def _unit(word):
    """((w >> 8) + 1/2) 2^-24: a uniform in (0, 1) from a 32-bit word."""
    return ((word >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08


@triton.jit
def _gaussian_kernel(out_ptr, clean_ptr, key_ptr, first_ptr, skip, count, width, groups, sigma,
                     ROUNDS: tl.constexpr, TAG: tl.constexpr, BLOCK: tl.constexpr):
    valid, j, g, key, c0, c1, c2 = _counters(key_ptr, first_ptr, skip, count, groups, BLOCK)
    w0, w1, w2, w3 = tl.philox(key, c0, c1, c2, tl.full(c0.shape, TAG, tl.uint32), ROUNDS)
    radius_a = tl.sqrt(tl.log(_unit(w0)) * -2.0)
    angle_a = _unit(w1) * 6.283185307179586
    radius_b = tl.sqrt(tl.log(_unit(w2)) * -2.0)
    angle_b = _unit(w3) * 6.283185307179586
    k = g * 4
    base = j * width + k
    m0 = valid & (k < width)
    tl.store(out_ptr + base, tl.cos(angle_a) * radius_a * sigma + tl.load(clean_ptr + k, mask=m0), mask=m0)
    m1 = valid & (k + 1 < width)
    tl.store(out_ptr + base + 1, tl.sin(angle_a) * radius_a * sigma + tl.load(clean_ptr + k + 1, mask=m1), mask=m1)
    m2 = valid & (k + 2 < width)
    tl.store(out_ptr + base + 2, tl.cos(angle_b) * radius_b * sigma + tl.load(clean_ptr + k + 2, mask=m2), mask=m2)
    m3 = valid & (k + 3 < width)
    tl.store(out_ptr + base + 3, tl.sin(angle_b) * radius_b * sigma + tl.load(clean_ptr + k + 3, mask=m3), mask=m3)


@triton.jit
def _discrete_value(high, low, thresholds_ptr, own_ptr, alias_ptr, shift, mask):
    """N from the 62 bits (high << 30) | (low >> 2) through the alias table (as float32, exact)."""
    coins = ((high.to(tl.uint64) << 30) | (low.to(tl.uint64) >> 2)).to(tl.int64)
    column = coins >> shift
    keep = coins < tl.load(thresholds_ptr + column, mask=mask, other=0)
    return tl.where(keep, tl.load(own_ptr + column, mask=mask, other=0.0), tl.load(alias_ptr + column, mask=mask,
                                                                                other=0.0))


@triton.jit
def _discrete_kernel(out_ptr, grid_ptr, key_ptr, first_ptr, skip, count, width, groups, thresholds_ptr, own_ptr,
                     alias_ptr, shift, levels, ROUNDS: tl.constexpr, TAG: tl.constexpr, BLOCK: tl.constexpr):
    valid, j, g, key, c0, c1, c2 = _counters(key_ptr, first_ptr, skip, count, groups, BLOCK)
    w0, w1, w2, w3 = tl.philox(key, c0, c1, c2, tl.full(c0.shape, TAG, tl.uint32), ROUNDS)
    k = g * 2
    base = j * width + k
    m0 = valid & (k < width)
    n0 = _discrete_value(w0, w1, thresholds_ptr, own_ptr, alias_ptr, shift, m0)
    tl.store(out_ptr + base, tl.math.div_rn(tl.load(grid_ptr + k, mask=m0, other=0.0) + n0, levels), mask=m0)
    m1 = valid & (k + 1 < width)
    n1 = _discrete_value(w2, w3, thresholds_ptr, own_ptr, alias_ptr, shift, m1)
    tl.store(out_ptr + base + 1, tl.math.div_rn(tl.load(grid_ptr + k + 1, mask=m1, other=0.0) + n1, levels), mask=m1)


def triton_fill(noise, out: torch.Tensor, clean: torch.Tensor, key: torch.Tensor, first: torch.Tensor,
                skip: int = 0) -> None:
    """:func:`robustcert.engine.counter.counter_fill` in one kernel: ``out`` (count, width)
    contiguous float32; ``key`` and ``first`` int64 device tensors of one element (sample
    ``first + skip`` is the chunk's first); ``clean`` the flat input (the grid integers K for the
    discretized Gaussian)."""
    count, width = out.shape
    if kind_of(noise) == "gaussian":
        groups = -(-width // 4)
        grid = (triton.cdiv(count * groups, BLOCK),)
        _gaussian_kernel[grid](out, clean, key, first, skip, count, width, groups, float(noise.sigma),
                               ROUNDS=PHILOX_ROUNDS, TAG=GAUSSIAN_TAG, BLOCK=BLOCK)
        return
    thresholds, own, aliases, shift = discrete_tables(noise, out.device)
    groups = -(-width // 2)
    grid = (triton.cdiv(count * groups, BLOCK),)
    _discrete_kernel[grid](out, clean, key, first, skip, count, width, groups, thresholds, own, aliases, shift,
                           float(noise.levels), ROUNDS=PHILOX_ROUNDS, TAG=DISCRETE_TAG, BLOCK=BLOCK)


def check_against_reference(noise, device: torch.device, count: int = 8, width: int = 37) -> str | None:
    """None if the kernel fills a chunk as the torch reference does on ``device`` (integers exactly,
    the Gaussian within float32 rounding of its transcendentals), else why not."""
    key = torch.tensor([0x5DEECE66D1234567], dtype=torch.int64, device=device)
    first = torch.tensor([(1 << 32) - 3], dtype=torch.int64, device=device)  # crosses the 2^32 boundary
    clean = torch.arange(width, dtype=torch.float32, device=device).remainder_(7)
    expected = torch.empty((count, width), dtype=torch.float32, device=device)
    counter_fill(noise, expected, clean, key[0], first[0] + 2)
    got = torch.empty_like(expected)
    triton_fill(noise, got, clean, key, first, skip=2)
    if kind_of(noise) == "gaussian":
        scale = max(1.0, 10 * noise.sigma)
        same = torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    else:
        same = torch.equal(got, expected)
    if same:
        return None
    return f"Triton kernel differs from the reference (max difference {float((got - expected).abs().max()):.3g})"
