"""Engine checks that need a CUDA device (marker ``cuda``; skipped without one).

Run them with ``python -m pytest -m cuda tests/test_engine_cuda.py`` (experiments/bench/gpu_check.sh).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from robustcert import Smooth
from robustcert.engine import MonteCarloEngine, VoteCounter
from robustcert.errors import ModelOutputError
from robustcert.models import load_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICE = torch.device("cuda")


def digits_model():
    return load_model("bundled:digits-0.25", device=DEVICE)


def test_the_sampling_loop_never_synchronises_with_the_host(digits_test):
    engine = MonteCarloEngine(digits_model(), sigma=0.25, batch_size=500)
    xs = digits_test[0][:4].to(DEVICE)
    generators = [engine.generator(0, i, "s") for i in range(4)]
    counter = VoteCounter(4, 10, DEVICE)
    with torch.inference_mode():
        engine.accumulate(xs, 1200, counter, generators)  # warm-up: cuDNN plans, allocator, the graph capture
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            flag = engine.accumulate(xs, 1200, counter, generators)  # graphed full batches, packed eager ones
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert not bool(flag) and counter.result().sum() == 4 * 2400
    report = engine.report()
    print("stream:", report["noise_stream"], "| graphs:", report["cuda_graphs"])
    assert engine.stream == "counter" and report["cuda_graphs"].startswith("votes equal to eager")


def test_same_seed_same_certificate_and_every_sample_counted(digits_test):
    smoothed = Smooth(digits_model(), 10, 0.25)
    x = digits_test[0][:3]
    first = smoothed.certify_batch(x, n0=100, n=5000, batch_size=2000, seed=4)
    second = smoothed.certify_batch(x, n0=100, n=5000, batch_size=2000, seed=4)
    assert [c.counts for c in first] == [c.counts for c in second]
    assert all(sum(c.counts) == 5000 for c in first)


def test_bf16_channels_last_is_a_close_base_classifier(digits_test):
    x = digits_test[0][:20]
    fp32 = Smooth(digits_model(), 10, 0.25, precision="fp32").certify_batch(x, n0=100, n=2000, batch_size=4000)
    bf16 = Smooth(digits_model(), 10, 0.25, precision="bf16", channels_last=True).certify_batch(
        x, n0=100, n=2000, batch_size=4000)
    agree = np.mean([a.prediction == b.prediction for a, b in zip(fp32, bf16)])
    assert agree >= 0.9
    assert all(sum(c.counts) == 2000 for c in bf16)


def test_cuda_out_of_memory_is_retried_on_the_same_samples():
    class Greedy(torch.nn.Module):
        """Asks for an impossible amount of memory when a forward pass has more than 256 samples."""

        def forward(self, x):
            if x.shape[0] > 256:
                torch.empty(1 << 50, dtype=torch.uint8, device=x.device)  # 1 PiB
            score = x.flatten(1).sum(1)
            return torch.stack([score, -score], 1)

    x = torch.tensor([[0.2, -0.1, 0.0]], device=DEVICE)

    def votes(model):
        engine = MonteCarloEngine(model, sigma=1.0, batch_size=1000, device=DEVICE)
        counts = engine.run(x, 3000, VoteCounter(1, 2, DEVICE), [engine.generator(1, 0, "s")]).result()
        return counts, engine.report()

    expected, _ = votes(_Plain())
    with pytest.warns(RuntimeWarning, match="out of memory"):
        counts, report = votes(Greedy())
    np.testing.assert_array_equal(counts, expected)
    assert report["forward_batch"] == 250 and report["oom_retries"] == 2


class _Plain(torch.nn.Module):
    def forward(self, x):
        score = x.flatten(1).sum(1)
        return torch.stack([score, -score], 1)


def test_auto_batch_uses_free_memory(digits_test):
    smoothed = Smooth(digits_model(), 10, 0.25)
    cert = smoothed.certify(digits_test[0][0], n0=100, n=20_000, batch_size="auto")
    report = smoothed.engine_report()
    assert report["auto_batch"]["rule"] == "cuda free memory"
    assert 1024 <= report["batch_size"] <= 32768 and sum(cert.counts) == 20_000


def test_compile_on_cuda_matches_eager(digits_test):
    x = digits_test[0][:2]
    eager = Smooth(digits_model(), 10, 0.25).certify_batch(x, n0=100, n=4000, batch_size=2000)
    compiled = Smooth(digits_model(), 10, 0.25, compile=True)
    with_compile = compiled.certify_batch(x, n0=100, n=4000, batch_size=2000)
    status = compiled.engine_report()["compile"]
    # an eager fallback would compare eager with eager: the compiled model must really have run
    assert status == "on", f"torch.compile fell back to eager on this machine: {status}"
    for a, b in zip(eager, with_compile):
        assert np.abs(np.subtract(a.counts, b.counts)).max() <= 20


def test_nccl_run_of_one_process_equals_the_plain_run(tmp_path):
    args = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "2000", "--max", "6",
            "--seed", "2", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    plain = subprocess.run([sys.executable, "-m", "robustcert", *args, "--out", str(tmp_path / "a.tsv")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          "-m", "robustcert", "--", *args, "--distributed", "--out", str(tmp_path / "b.tsv")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    strip = lambda p: [line.split("\t")[:-1] for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "a.tsv") == strip(tmp_path / "b.tsv")
    record = json.loads((tmp_path / "b.tsv.json").read_text())
    assert record["runs"][-1]["distributed"]["backend"] == "nccl"


def test_sequential_samples_do_not_depend_on_the_batch_size_on_cuda(digits_test):
    """Sequential rounds draw fixed sizes (plan_blocks): on CUDA, where Philox offsets depend on each
    call's size, the certificates must still be the same at every batch size and grouping; the
    split draws run without a host sync."""
    smoothed = Smooth(digits_model(), 10, sigma=0.25)
    xs = digits_test[0][:6]
    options = dict(n0=100, n=20_000, alpha=0.001, seed=2, sequential=True, target_radius=0.5)
    reference = smoothed.certify_batch(xs, batch_size=10_000, **options)
    for batch_size, rows in ((1000, [0, 1, 2, 3, 4, 5]), (77, [4, 1]), (4096, [5])):
        certs = smoothed.certify_batch(xs[rows], batch_size=batch_size, indices=rows, **options)
        for cert in certs:
            assert cert.counts == reference[cert.index].counts and cert.details == reference[cert.index].details
    engine = MonteCarloEngine(digits_model(), sigma=0.25, batch_size=100)
    generators = [engine.generator(0, i, "s") for i in range(3)]
    counter = VoteCounter(3, 10, DEVICE)
    inputs = digits_test[0][:3].to(DEVICE)
    with torch.inference_mode():
        engine.accumulate(inputs, 300, counter, generators, blocks=[64, 236])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            engine.accumulate(inputs, 300, counter, generators, blocks=[64, 236])  # draws split across batches
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert counter.result().sum() == 3 * 600


def test_sound_mode_on_cuda_samples_the_discretized_gaussian_and_is_one_base_classifier(digits_test):
    """The floating-point-sound mode on CUDA: 62-bit draws and the alias table on the device fit the
    discretized Gaussian; the sampling loop does not synchronise after the first batch (the probe);
    cifar_resnet110 passes the batch-invariance probe under deterministic cuDNN and an input gets
    the same votes alone and packed with others."""
    from scipy.stats import chi2, norm

    from robustcert.engine import DiscreteGaussianNoise
    from robustcert.models import build_model

    noise = DiscreteGaussianNoise(0.25, 16)
    out = torch.empty(1000, 1000, device=DEVICE)
    noise.draw(out, torch.Generator(device=DEVICE).manual_seed(0))
    values, counts = np.unique(out.cpu().numpy(), return_counts=True)
    expected = (norm.cdf((values + 0.5) / 4) - norm.cdf((values - 0.5) / 4)) * out.numel()
    keep = expected > 20
    assert chi2.sf((((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum(), keep.sum() - 1) > 1e-3

    smoothed = Smooth(digits_model(), 10, 0.25, sound_float=True, quantization=16)
    engine = smoothed.engine(500)
    xs = digits_test[0][:4].to(DEVICE)
    generators = [engine.generator(0, i, "s") for i in range(4)]
    counter = VoteCounter(4, 10, DEVICE)
    with torch.inference_mode():
        engine.accumulate(xs, 1200, counter, generators)  # warm-up, the probe and the graph capture
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            engine.accumulate(xs, 1200, counter, generators)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert counter.result().sum() == 4 * 2400 and engine.runner.probe.startswith("passed")
    print("sound mode stream:", engine.report()["noise_stream"], "| graphs:", engine.report()["cuda_graphs"])

    torch.manual_seed(0)
    resnet = build_model("cifar_resnet110").to(DEVICE).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1)) / 255.0
    alone = Smooth(resnet, 10, 0.25, sound_float=True).certify_batch(images[1:2], n0=50, n=1000, batch_size=400,
                                                                     seed=2, indices=[1])[0]
    packed = Smooth(resnet, 10, 0.25, sound_float=True).certify_batch(images, n0=50, n=1000, batch_size=400, seed=2)
    assert packed[1].counts == alone.counts and sum(alone.counts) == 1000


# --------------------------------------------------------------------------- issue 26: counter streams, graphs
def test_counter_kernels_on_cuda_equal_the_reference_and_ignore_batches(digits_test):
    """The Triton kernels against the torch reference on the device (integers bit for bit), and an
    input's certificate the same at every batch size and grouping (the counter stream's promise)."""
    from robustcert.engine import DiscreteGaussianNoise, GaussianNoise
    from robustcert.engine.counter_triton import check_against_reference

    for noise in (GaussianNoise(0.25), DiscreteGaussianNoise(0.25, 16), DiscreteGaussianNoise(0.5, 255)):
        assert check_against_reference(noise, DEVICE, count=64, width=3 * 32 * 32 + 1) is None, noise.name
    smoothed = Smooth(digits_model(), 10, 0.25)
    xs = digits_test[0][:6]
    reference = smoothed.certify_batch(xs, n0=100, n=5000, batch_size=10_000, seed=3)
    assert smoothed.engine_report()["noise_stream"].endswith("triton")
    for batch_size, rows in ((777, [0, 1, 2, 3, 4, 5]), (2048, [4, 1]), (100, [5])):
        certs = smoothed.certify_batch(xs[rows], n0=100, n=5000, batch_size=batch_size, seed=3, indices=rows)
        for cert in certs:
            assert cert.counts == reference[cert.index].counts
            assert cert.details["selection_counts"] == reference[cert.index].details["selection_counts"]


@pytest.mark.parametrize("compile", [False, True], ids=["eager-model", "compiled-model"])
def test_cuda_graph_step_gives_the_eager_loop_votes(digits_test, compile):
    from robustcert.models import build_model

    torch.manual_seed(0)
    resnet = build_model("cifar_resnet110").to(DEVICE).eval()
    images = torch.rand(2, 3, 32, 32)
    cases = [(digits_model(), digits_test[0][:3], 20_000, 4000)]
    if not compile:  # compiling cifar_resnet110 takes minutes: the digits CNN checks the compiled path
        cases.append((resnet, images, 3000, 1000))
    for model, xs, n, batch in cases:
        eager = Smooth(model, 10, 0.25, graphs=False, compile=compile)
        graphed = Smooth(model, 10, 0.25, compile=compile)
        expected = eager.certify_batch(xs, n0=100, n=n, batch_size=batch, seed=1)
        got = graphed.certify_batch(xs, n0=100, n=n, batch_size=batch, seed=1)
        assert [c.counts for c in got] == [c.counts for c in expected]
        report = graphed.engine_report()
        print(type(model).__name__, "compile", compile, "| graphs:", report["cuda_graphs"])
        assert report["cuda_graphs"].startswith("votes equal to eager")
        assert eager.engine_report()["cuda_graphs"] == "off"


def test_cuda_graph_capture_failure_falls_back_to_the_same_votes(digits_test, monkeypatch):
    import robustcert.engine.step as step_module

    def broken(body, device, warmup=1):
        raise RuntimeError("capture refused (test)")

    xs = digits_test[0][:2]
    expected = Smooth(digits_model(), 10, 0.25).certify_batch(xs, n0=100, n=6000, batch_size=2000, seed=5)
    monkeypatch.setattr(step_module, "capture", broken)
    smoothed = Smooth(digits_model(), 10, 0.25)
    with pytest.warns(RuntimeWarning, match="CUDA graph of the sampling step failed"):
        got = smoothed.certify_batch(xs, n0=100, n=6000, batch_size=2000, seed=5)
    assert [c.counts for c in got] == [c.counts for c in expected]
    assert smoothed.engine_report()["cuda_graphs"] == "failed: capture refused (test)"


def test_nan_outputs_are_found_in_graph_replays():
    class RareNaN(torch.nn.Module):
        """NaN whenever a sample's first value exceeds ``threshold`` (a property of the noise, so it
        happens inside graph replays too)."""

        def __init__(self, threshold):
            super().__init__()
            self.threshold = threshold

        def forward(self, x):
            first = x.flatten(1)[:, :1]
            out = torch.cat([first, -first], 1)
            return torch.where(first > self.threshold, torch.full_like(out, float("nan")), out)

    x = torch.zeros(1, 64, device=DEVICE)

    def run(threshold):
        engine = MonteCarloEngine(RareNaN(threshold), sigma=1.0, batch_size=500, device=DEVICE)
        engine.run(x, 20_000, VoteCounter(1, 2, DEVICE), [engine.generator(0, 0, "s")])
        return engine

    assert run(100.0).report()["cuda_graphs"].startswith("votes equal")
    with pytest.raises(ModelOutputError, match="NaN or infinite"):
        run(3.3)  # about 5 samples in 10^4 above 3.3 sigma: in several of the 40 batches, most of them replays


def test_sound_mode_cost_on_cuda_is_reported(digits_test):
    """The sound mode's counter kernel and graph on CUDA: same votes alone and packed, graph used."""
    smoothed = Smooth(digits_model(), 10, 0.25, sound_float=True, quantization=16)
    xs = digits_test[0][:3]
    packed = smoothed.certify_batch(xs, n0=100, n=20_000, batch_size=5000, seed=2)
    alone = smoothed.certify_batch(xs[1:2], n0=100, n=20_000, batch_size=5000, seed=2, indices=[1])[0]
    assert packed[1].counts == alone.counts
    report = smoothed.engine_report()
    print("sound:", report["noise_stream"], "|", report["cuda_graphs"])
    assert report["noise_stream"].endswith("triton") and report["cuda_graphs"].startswith("votes equal")
