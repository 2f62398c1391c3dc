"""Running the base model on noisy batches: precision, layout, compilation, memory, output checks.

:class:`ModelRunner` is everything the engine does between "a batch of noisy inputs" and "a
checked (batch, num_classes) float32 tensor of outputs":

* ``precision``: autocast (fp32 / bf16 / fp16) around the forward pass only;
* ``channels_last``: the memory layout of 4-D batches and of the model's 4-D weights;
* ``compile``: ``torch.compile`` with an eager fallback when compilation fails on this machine;
* out of memory: a forward pass that runs out of device memory is retried on halves of the same
  batch (the samples, hence the statistics, do not change);
* checks: the outputs must be (batch, num_classes); a model that fails on the input shape is a
  ShapeError naming it;
* noise-level-conditioned models (``model.takes_sigma``, e.g. rRCM) are called as
  ``model(batch, sigma)``;
* ``fixed_batch`` (floating-point-sound mode, :mod:`robustcert.engine.sound`): every forward pass
  whose outputs enter a bound (``fixed=True``; a selection stage that only picks cA is exempt)
  has exactly that many rows (smaller batches are padded with zero rows whose outputs are
  dropped), never split on out of memory, never falls back from compiled to eager, runs with
  cuDNN's deterministic algorithms and no autotuning, and the first batch is probed: its rows
  must come out bitwise the same when the batch is repeated, reversed, or half replaced. Then a
  row's output is a function of that row alone, so the base classifier is one fixed function F.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Callable

import torch

from ..errors import InvalidArgumentError, ModelOutputError, ResourceError, ShapeError
from .device import as_device, cpu_allocator_tuned, first_line, is_out_of_memory, model_device, resolve_channels_last

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

_COMPILED: "weakref.WeakKeyDictionary[Callable, Callable]" = weakref.WeakKeyDictionary()


def compiled_model(model: Callable) -> Callable:
    """``torch.compile(model)``, shared by every runner of the same model (one compilation cache)."""
    try:
        return _COMPILED[model]
    except (KeyError, TypeError):
        pass
    result = torch.compile(model)
    try:
        _COMPILED[model] = result
    except TypeError:  # not weak-referenceable: compile again next time
        pass
    return result


class ModelRunner:
    """A base model on a device with the engine options applied (see the module docstring).

    Args:
        model: a callable mapping (B, *input_shape) to (B, num_classes) outputs; a
            ``torch.nn.Module`` is put in eval mode.
        device: where the model runs; None means the model's device.
        precision: "fp32" (default), "bf16" or "fp16" (autocast; a different base classifier).
        channels_last: 4-D layout; None means the measured default (:func:`resolve_channels_last`).
        compile: run ``torch.compile(model)``, falling back to eager (with one warning) if it fails.
        sigma: passed to noise-level-conditioned models (``model.takes_sigma``).
        fixed_batch: the one forward shape of the sound mode (module docstring); None: free shapes.
    """

    def __init__(self, model: Callable, device: torch.device | str | None = None, precision: str = "fp32",
                 channels_last: bool | None = None, compile: bool = False, sigma: float | None = None,
                 fixed_batch: int | None = None):
        self.model = model
        self.device = as_device(device, model_device(model))
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = resolve_channels_last(channels_last, self.device, precision)
        self.sigma = sigma
        self.takes_sigma = bool(getattr(model, "takes_sigma", False))  # read once: Module.__getattr__ is slow
        self.forward_batch: int | None = None  # largest forward pass after out-of-memory retries
        self.oom_retries = 0
        self.fixed_batch = fixed_batch
        self.probe: str | None = None  # the sound mode's batch-invariance probe: None until run
        if isinstance(model, torch.nn.Module):
            model.eval()
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
        self.compile_status = "off"
        self._compiled: Callable | None = None
        if compile:
            try:
                self._compiled = compiled_model(model)
                self.compile_status = "on"
            except Exception as exc:  # torch.compile itself unavailable (e.g. unsupported Python)
                self._compile_failed(exc)

    # ----------------------------------------------------------------- layout and precision
    def memory_format(self, ndim: int) -> torch.memory_format:
        """The memory format of ``ndim``-dimensional batches (channels-last applies to 4-D only)."""
        return torch.channels_last if self.channels_last and ndim == 4 else torch.contiguous_format

    def layout(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` in the runner's memory format."""
        return batch.contiguous(memory_format=self.memory_format(batch.ndim))

    def autocast(self):
        """The autocast context of the runner's precision (a no-op for fp32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ----------------------------------------------------------------- calling the model
    def call(self, batch: torch.Tensor, model: Callable | None = None) -> torch.Tensor:
        """One call of ``model`` (default: the eager model), with sigma for conditioned models."""
        model = self.model if model is None else model
        if self.takes_sigma:
            return model(batch, self.sigma)
        return model(batch)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass of the base model on a batch, under autocast, compiled if asked.

        With ``compile``, a failure of the compiled model is checked against the eager model:
        if the eager model succeeds, compilation is what failed, and it is switched off.
        """
        with self.autocast():
            if self._compiled is None:
                return self.call(batch)
            try:
                return self.call(batch, self._compiled)
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            if self.fixed_batch is not None:  # sound mode: switching to eager would change the function
                raise ModelOutputError(f"sound_float: the compiled model failed ({message}); without --compile the "
                                       "run certifies the eager model")
            outputs = self.call(batch)  # raises if the model itself fails
            self._compile_failed(message)
            return outputs

    def outputs(self, batch: torch.Tensor, num_classes: int, fixed: bool = True) -> torch.Tensor:
        """Checked float outputs on a batch, in forward passes of at most ``forward_batch`` samples.

        On out of memory the same batch is retried in halves: the samples do not change.
        With ``fixed_batch`` (and ``fixed``; False for samples no bound rests on) see :meth:`fixed_outputs`.
        """
        if self.fixed_batch is not None and fixed:
            return self.fixed_outputs(batch, num_classes)
        while True:
            limit = min(self.forward_batch or batch.shape[0], batch.shape[0])
            try:
                if limit == batch.shape[0]:
                    return self._checked_forward(batch, num_classes)
                return torch.cat([self._checked_forward(piece, num_classes) for piece in batch.split(limit)])
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            if limit == 1:
                raise ResourceError(f"out of memory on {self.device} even with one sample per forward pass: {message}")
            self.note_out_of_memory("forward batch", limit, limit // 2, message)
            self.forward_batch = limit // 2

    # ----------------------------------------------------------------- sound mode: one forward shape
    def fixed_outputs(self, batch: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Outputs with every forward pass exactly ``fixed_batch`` rows (zero rows pad a short batch;
        their outputs are dropped), under deterministic kernels, the first batch probed (module
        docstring). Out of memory is an error, not a split: a split would change the function."""
        size, rows = self.fixed_batch, batch.shape[0]
        pieces = []
        with deterministic_kernels():
            for start in range(0, rows, size):
                piece = batch[start:start + size]
                if piece.shape[0] < size:
                    padding = torch.zeros((size - piece.shape[0], *piece.shape[1:]), dtype=piece.dtype,
                                          device=piece.device)
                    piece = self.layout(torch.cat([piece, padding]))
                outputs = self.probe_batch_invariance(piece, num_classes) if self.probe is None else \
                    self._fixed_forward(piece, num_classes)
                pieces.append(outputs[: min(size, rows - start)])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _fixed_forward(self, piece: torch.Tensor, num_classes: int) -> torch.Tensor:
        try:
            return self._checked_forward(piece, num_classes)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise ResourceError(f"out of memory on {self.device} with the sound mode's fixed forward batch of "
                                    f"{self.fixed_batch} (a split would change the base classifier): rerun with a "
                                    f"smaller batch ({first_line(exc)})") from None
            raise

    def probe_batch_invariance(self, piece: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The outputs on ``piece``, after refusing a model whose row outputs depend on the rest of the
        batch or change on a repeat (three more forward passes, once per runner).

        Compares bitwise the outputs of ``piece`` with those of the same batch again, reversed, and
        with its second half replaced by other values (the first half's rows reversed, plus 1/4).
        Passing is evidence, not proof, that a row's output is a function of the row alone (the
        argument of the sound mode rests on it; README, Soundness).
        """
        first = self._fixed_forward(piece, num_classes)
        again = self._fixed_forward(piece, num_classes)
        reversed_rows = self._fixed_forward(self.layout(piece.flip(0)), num_classes).flip(0)
        half = piece.shape[0] // 2
        replaced = piece.clone()
        replaced[half:] = piece[: piece.shape[0] - half].flip(0) + 0.25
        replaced_rows = self._fixed_forward(self.layout(replaced), num_classes)
        checks = {"repeated": torch.equal(first, again), "reversed": torch.equal(first, reversed_rows),
                  "others replaced": torch.equal(first[:half], replaced_rows[:half])}
        failed = [name for name, passed in checks.items() if not passed]
        if failed:
            self.probe = f"failed: {', '.join(failed)}"
            raise ModelOutputError(
                f"sound_float: the base model's outputs are not a function of each row alone (bitwise different "
                f"when the batch is {' / '.join(failed)}), so no single base classifier is being smoothed; "
                "use eval-mode models without batch statistics (or a batch of 1)")
        self.probe = "passed (repeated, reversed, half replaced: bitwise equal)"
        return first

    def _checked_forward(self, batch: torch.Tensor, num_classes: int) -> torch.Tensor:
        try:
            outputs = self.forward(batch)
        except (RuntimeError, ValueError) as exc:
            if is_out_of_memory(exc):
                raise
            raise ShapeError(
                f"the base model failed on inputs of shape {tuple(batch.shape[1:])}: {first_line(exc)}"
            ) from exc
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[0] != batch.shape[0]:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ShapeError(f"the base model must return (batch, num_classes) outputs, got {shape}")
        if outputs.shape[1] != num_classes:
            raise ShapeError(
                f"the base model returns {outputs.shape[1]} classes but num_classes={num_classes}"
            )
        if outputs.dtype in (torch.bfloat16, torch.float16):
            outputs = outputs.float()  # accumulators compute in float32 whatever the autocast dtype
        return outputs

    # ----------------------------------------------------------------- failures and report
    def note_out_of_memory(self, what: str, old: int, new: int, message: str) -> None:
        """Count an out-of-memory retry, free cached CUDA memory and warn once per retry."""
        self.oom_retries += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        warnings.warn(f"out of memory on {self.device} with {what}={old} ({message}); retrying with {new}",
                      RuntimeWarning, stacklevel=3)

    def _compile_failed(self, exc: BaseException | str) -> None:
        message = exc if isinstance(exc, str) else first_line(exc)
        self._compiled = None
        self.compile_status = f"failed: {message}"
        warnings.warn(f"torch.compile failed on this machine ({message}); running the model without compilation",
                      RuntimeWarning, stacklevel=3)

    def report(self) -> dict:
        """Precision, layout, compile status, out-of-memory retries (and the CPU allocator state)."""
        report = {
            "device": str(self.device),
            "oom_retries": self.oom_retries,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile_status,
        }
        if self.device.type == "cpu":
            report["cpu_allocator"] = "tuned" if cpu_allocator_tuned() else "default"
        if self.fixed_batch is not None:
            report["sound"] = {"fixed_forward_batch": self.fixed_batch, "batch_invariance_probe": self.probe,
                               "cudnn": "deterministic, no benchmark",
                               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                               "tf32_cudnn": torch.backends.cudnn.allow_tf32}
        return report


@contextlib.contextmanager
def deterministic_kernels():
    """cuDNN's deterministic algorithms and no autotuning (``benchmark`` picks kernels by timing,
    which can change the function between runs); restored afterwards."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
