"""Engine options: precision, channels-last, torch.compile (with its fallback), batch "auto",
and the retry at half the forward batch on out-of-memory errors (CPU; see test_engine_cuda.py)."""
import numpy as np
import pytest
import torch

import robustcert.engine.runner as runner_module
from robustcert import InvalidArgumentError, Smooth
from robustcert.engine import MonteCarloEngine, VoteCounter, is_out_of_memory, resolve_channels_last
from robustcert.errors import ResourceError, ShapeError
from robustcert.models import load_model


class Sign(torch.nn.Module):
    """Votes 0 when the sum of the input is > 0, else 1; records forward batch sizes."""

    def __init__(self, fail_above: int | None = None, error=RuntimeError):
        super().__init__()
        self.fail_above, self.error, self.sizes = fail_above, error, []

    def forward(self, x):
        if self.fail_above is not None and x.shape[0] > self.fail_above:
            raise self.error(f"CUDA out of memory. Tried to allocate {x.shape[0]} GiB")
        self.sizes.append(x.shape[0])
        score = x.flatten(1).sum(1)
        return torch.stack([score, -score], 1)


def votes(model, batch_size=1000, n=2600, **options):
    engine = MonteCarloEngine(model, sigma=1.0, batch_size=batch_size, **options)
    x = torch.tensor([[0.3, -0.1, 0.2], [-0.5, 0.0, 0.1]])
    counts = engine.run(x, n, VoteCounter(2, 2, engine.device), [engine.generator(7, i, "s") for i in range(2)])
    return counts.result(), engine


@pytest.mark.parametrize("error", [RuntimeError, torch.cuda.OutOfMemoryError])
def test_out_of_memory_retries_the_same_samples_at_half_the_forward_batch(error):
    expected, _ = votes(Sign())
    with pytest.warns(RuntimeWarning, match="out of memory"):
        counts, engine = votes(Sign(fail_above=300, error=error))
    np.testing.assert_array_equal(counts, expected)  # same noise, same votes: nothing lost or doubled
    report = engine.report()
    assert report["forward_batch"] == 250 and report["oom_retries"] == 2 and report["batch_size"] == 1000
    assert counts.sum() == 2 * 2600


def test_out_of_memory_at_one_sample_is_a_clear_error_and_other_errors_are_not_retried():
    with pytest.raises(ResourceError, match="one sample"), pytest.warns(RuntimeWarning):
        votes(Sign(fail_above=0), batch_size=4, n=8)
    with pytest.raises(ShapeError, match="failed on inputs"):  # a real model error is not an OOM
        votes(torch.nn.Linear(5, 2))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_noise_buffer_that_cannot_be_allocated_halves_the_batch(monkeypatch):
    real_empty = torch.empty

    def limited_empty(shape, *args, **kwargs):
        if shape[0] > 600:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", limited_empty)
    with pytest.warns(RuntimeWarning, match="batch_size=1000"):
        counts, engine = votes(Sign())
    assert engine.report()["batch_size"] == 500 and counts.sum() == 2 * 2600


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(model, **kwargs):
        def compiled(*args):
            raise RuntimeError("BackendCompilerFailed: no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(runner_module, "_COMPILED", runner_module.weakref.WeakKeyDictionary())
    expected, _ = votes(Sign())
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        counts, engine = votes(Sign(), compile=True)
    np.testing.assert_array_equal(counts, expected)
    assert engine.report()["compile"].startswith("failed: BackendCompilerFailed")
    with pytest.raises(ShapeError):  # the eager model's own failure is still reported as such
        votes(torch.nn.Linear(5, 2), compile=True)


def test_compile_runs_for_real():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    expected, _ = votes(model, batch_size=500, n=500)
    counts, engine = votes(model, batch_size=500, n=500, compile=True)  # one batch shape: one compilation
    assert engine.report()["compile"] == "on"
    assert np.abs(counts - expected).max() <= 2  # same samples; compiled kernels may round differently


def test_auto_batch_on_cpu_is_measured_once_before_sampling_and_recorded():
    smoothed = Smooth(Sign(), 2, 1.0)
    chosen = smoothed.batch_size_for("auto", (3,))
    assert chosen in [2 ** k for k in range(3, 13)]
    assert smoothed.batch_size_for("auto", (3,)) == chosen  # resolved once per model and input shape
    counts, engine = votes(Sign(), batch_size=chosen, n=300)
    assert counts.sum() == 600 and engine.report()["batch_size"] == chosen
    assert smoothed.certify(torch.zeros(3), n0=10, n=50, batch_size="auto").samples_used == 60
    report = smoothed.engine_report()
    assert report["batch_size"] == chosen
    assert report["auto_batch"]["rule"] == "cpu measurement" and report["auto_batch"]["chosen"] == chosen


def test_precision_and_channels_last_on_the_digits_model(digits_test):
    x = digits_test[0][:2]
    reference = Smooth(load_model("bundled:digits-0.25"), 10, 0.25, channels_last=False)
    base = reference.certify_batch(x, n0=50, n=400, batch_size=250, seed=1)
    layout = Smooth(load_model("bundled:digits-0.25"), 10, 0.25, channels_last=True)
    for a, b in zip(base, layout.certify_batch(x, n0=50, n=400, batch_size=250, seed=1)):
        assert np.abs(np.subtract(a.counts, b.counts)).max() <= 2  # same samples, another kernel layout
    bf16 = Smooth(load_model("bundled:digits-0.25"), 10, 0.25, precision="bf16")
    certs = bf16.certify_batch(x, n0=50, n=400, batch_size=250, seed=1)
    for a, b in zip(base, certs):
        assert sum(b.counts) == 400 and a.details["selected_class"] == b.details["selected_class"]
    report = bf16.engine_report()
    assert report["precision"] == "bf16" and report["channels_last"] is True
    with pytest.raises(InvalidArgumentError, match="precision"):
        Smooth(load_model("bundled:digits-0.25"), 10, 0.25, precision="fp8").certify(x[0], n0=1, n=1)


def test_channels_last_default_is_the_measured_one():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_channels_last(None, cpu, "fp32") and resolve_channels_last(None, cuda, "bf16")
    assert resolve_channels_last(None, cuda, "fp32")  # measured on an H200: 1.2-1.5x faster at fp32 too
    assert not resolve_channels_last(False, cpu, "fp32") and not resolve_channels_last(False, cuda, "bf16")
