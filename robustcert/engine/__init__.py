"""The Monte Carlo engine, in four concerns (one module each):

* :mod:`.sampling`: seeded noise (per-input generators from (seed, index, stage)), the noise
  distribution, and how samples are packed into batches;
* :mod:`.runner`: running the base model (autocast, layout, compile fallback, out-of-memory
  splitting, output checks);
* :mod:`.accumulators`: reducing outputs into per-input statistics on the device;
* :mod:`.device`: device, batch-size (``"auto"``) and CPU policy;
* :mod:`.sound`: the floating-point-sound noise for quantized inputs (Voracek and Hein 2023);
* :mod:`.counter` (and :mod:`.counter_triton`, CUDA): counter-based noise streams, an input's
  sample a function of (seed, index, stage, sample, coordinate) alone;
* :mod:`.step`: the steady-state batch as one CUDA graph;

and :mod:`.monte_carlo`, the one sampling loop that joins them (:class:`MonteCarloEngine`).
"""
from .accumulators import Accumulator, VoteCounter
from .counter import CounterStream
from .device import (
    AUTO, as_device, auto_batch_size, configure_cpu, default_threads, first_line, inputs_per_call, is_out_of_memory,
    model_device, resolve_channels_last, tune_cpu_allocator,
)
from .monte_carlo import MonteCarloEngine
from .runner import PRECISIONS, ModelRunner, compiled_model
from .sampling import (
    AblationNoise, AdditiveNoise, GaussianNoise, LaplaceNoise, Noise, Segment, UniformNoise, ablate, derive_seed,
    fresh_seed, input_generator, plan_batches, plan_blocks,
)
from .sound import DiscreteGaussianNoise, as_levels, grid_indices, grid_rounding

__all__ = [
    "AUTO", "AblationNoise", "Accumulator", "AdditiveNoise", "CounterStream", "DiscreteGaussianNoise",
    "GaussianNoise", "LaplaceNoise", "ModelRunner", "MonteCarloEngine", "Noise", "PRECISIONS", "Segment",
    "UniformNoise", "ablate",
    "VoteCounter", "as_device", "as_levels", "auto_batch_size", "compiled_model", "configure_cpu", "default_threads",
    "derive_seed", "first_line", "fresh_seed", "grid_indices", "grid_rounding", "input_generator", "inputs_per_call", "is_out_of_memory",
    "model_device",
    "plan_batches", "plan_blocks", "resolve_channels_last", "tune_cpu_allocator",
]
