"""The sampling loop's hot path (issue 26), on CPU.

* CPU samples are exactly those of the loop before it: a reference written the old way (one
  generator per input, draws of min(batch, remaining), drawn whole when split) sees the same bits.
* Counter streams (what CUDA samples from): Philox4x32-10 known answers, independence of batch
  size / packing / draw sizes, the law of the noise, the Triton kernels against the torch reference
  (Triton's interpreter, on CPU).
* The CUDA-graph step's bookkeeping, run on CPU with a stand-in for graph capture (replay = the
  recorded step called again): same votes as the eager loop, fallbacks, NaN detection.
"""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.stats import chi2, kstest, norm

import robustcert.engine.monte_carlo as monte_carlo
import robustcert.engine.step as step_module
from robustcert import Smooth
from robustcert.engine import (
    DiscreteGaussianNoise, GaussianNoise, LaplaceNoise, MonteCarloEngine, VoteCounter, input_generator, plan_batches,
    plan_blocks,
)
from robustcert.engine.counter import counter_fill, philox4x32
from robustcert.errors import InvalidArgumentError, ModelOutputError
from robustcert.models import load_model


class Recorder(torch.nn.Module):
    """Records every batch it sees; scores (sum, -sum, first value)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.detach().clone())
        flat = x.flatten(1)
        score = flat.sum(1)
        return torch.stack([score, -score, flat[:, 0]], 1)


def reference_inputs(xs, n, batch_size, seed, stage, noise, blocks=None):
    """The batches the model saw before issue 26, rebuilt from the rule: per input its own generator,
    draws in order (min(batch, remaining), or ``blocks`` drawn whole and split), packed by the plan."""
    flat = xs.reshape(len(xs), -1)
    generators = [input_generator(torch.device("cpu"), seed, i, stage) for i in range(len(xs))]
    draws = {}
    for row in range(len(xs)):
        sizes = list(blocks) if blocks else [min(batch_size, n - s) for s in range(0, n, batch_size)]
        chunks = []
        for size in sizes:
            chunk = torch.empty(size, flat.shape[1])
            noise.perturb(chunk, flat[row], generators[row])
            chunks.append(chunk)
        draws[row] = torch.cat(chunks)
    plan = plan_batches(len(xs), n, batch_size) if blocks is None else plan_blocks(len(xs), list(blocks), batch_size)
    used = {row: 0 for row in draws}
    batches = []
    for segments in plan:
        rows = []
        for seg in segments:
            rows.append(draws[seg.row][used[seg.row]:used[seg.row] + seg.count])
            used[seg.row] += seg.count
        batches.append(torch.cat(rows).reshape(-1, *xs.shape[1:]))
    return batches


@pytest.mark.parametrize("noise", [GaussianNoise(0.5), LaplaceNoise(0.5), DiscreteGaussianNoise(0.5, 16)],
                         ids=["gaussian", "laplace", "discrete-gaussian"])
@pytest.mark.parametrize("n, batch_size, blocks", [(700, 300, None), (120, 1000, None), (250, 250, None),
                                                   (700, 128, (64, 600, 36))])
def test_cpu_samples_are_exactly_those_of_the_loop_before_issue_26(noise, n, batch_size, blocks):
    xs = (torch.arange(3 * 15, dtype=torch.float32).reshape(3, 1, 3, 5) % 16) / 16  # on the grid k/16
    model = Recorder()
    engine = MonteCarloEngine(model, 0.5, batch_size, noise=noise, channels_last=False)
    assert engine.stream == "generator" and engine.report()["noise_stream"].startswith("torch.Generator")
    engine.run(xs, n, VoteCounter(3, 3, engine.device), [engine.generator(4, i, "s") for i in range(3)],
               blocks=blocks)
    expected = reference_inputs(xs, n, batch_size, 4, "s", noise, blocks)
    assert len(model.batches) == len(expected)
    for seen, wanted in zip(model.batches, expected):
        assert torch.equal(seen, wanted)


def test_cpu_votes_are_unchanged_and_counted_once_per_sample(digits_test):
    """Same seed, same votes: the digits model's certificates equal a vote count made the old way
    (argmax per sample of the reference batches), packed or not."""
    model = load_model("bundled:digits-0.25")
    xs = digits_test[0][:4]
    certs = Smooth(model, 10, 0.25, channels_last=False).certify_batch(xs, n0=100, n=1300, batch_size=500, seed=2)
    for stage, n, key in (("selection", 100, "selection_counts"), ("estimation", 1300, None)):
        batches = reference_inputs(xs, n, 500, 2, stage, GaussianNoise(0.25))
        plan = plan_batches(4, n, 500)
        votes = np.zeros((4, 10), dtype=np.int64)
        with torch.no_grad():
            for segments, batch in zip(plan, batches):
                predictions = model(batch).argmax(1).numpy()
                for seg in segments:
                    votes[seg.row] += np.bincount(predictions[seg.start:seg.start + seg.count], minlength=10)
        for i, cert in enumerate(certs):
            assert (cert.details[key] if key else cert.counts) == votes[i].tolist()


# --------------------------------------------------------------------------- counter streams
def test_philox_matches_the_random123_known_answers():
    def words(ctr, key):
        return [int(w) for w in philox4x32(*[torch.tensor([c], dtype=torch.int64) for c in ctr], key)]

    assert words((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert words((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF)) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert words((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def counter_samples(batch_size, rows, n=300, blocks=None, noise=None, runs=1):
    model = Recorder()
    engine = MonteCarloEngine(model, 0.5, batch_size, noise=noise, channels_last=False, stream="counter")
    xs = (torch.arange(4 * 15, dtype=torch.float32).reshape(4, 1, 3, 5) % 16) / 16
    streams = [engine.generator(0, i, "s") for i in rows]
    for _ in range(runs):
        engine.run(xs[rows], n, VoteCounter(len(rows), 3, engine.device), streams, blocks=blocks)
    return torch.cat(model.batches).reshape(-1, 15), engine


@pytest.mark.parametrize("noise", [None, DiscreteGaussianNoise(0.5, 16)], ids=["gaussian", "discrete-gaussian"])
def test_counter_samples_do_not_depend_on_batch_size_packing_or_draw_sizes(noise):
    reference, engine = counter_samples(1000, [0, 1, 2, 3], noise=noise)
    assert engine.stream == "counter" and "philox4x32-10" in engine.report()["noise_stream"]
    reference = reference.reshape(4, 300, 15)
    for batch_size in (7, 64, 299):
        for rows in ([0, 1, 2, 3], [2], [3, 1]):
            got, _ = counter_samples(batch_size, rows, noise=noise)
            assert torch.equal(got.reshape(len(rows), 300, 15), reference[rows])
    got, _ = counter_samples(64, [1, 2], blocks=[10, 200, 90], noise=noise)
    assert torch.equal(got.reshape(2, 300, 15), reference[[1, 2]])
    continued, _ = counter_samples(1000, [3], n=100, noise=noise, runs=3)  # a later run continues the stream
    assert torch.equal(continued, reference[3])


def test_counter_gaussian_noise_has_the_gaussian_law():
    noise = GaussianNoise(0.7)
    out = torch.empty(4000, 25)  # 25 values per sample: a partial last group of 4
    counter_fill(noise, out, torch.zeros(25), key=12345, first=10)
    values = out.flatten().double().numpy() / 0.7
    assert abs(values.mean()) < 4 / math.sqrt(values.size) and abs(values.std() - 1) < 0.01
    assert kstest(values, "norm").pvalue > 1e-3
    pairs = out[:, :24].reshape(-1, 2).double().numpy()  # the two values of a Box-Muller pair
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 0.01
    other = torch.empty(4000, 25)
    counter_fill(noise, other, torch.zeros(25), key=12346, first=10)
    assert abs(np.corrcoef(out.flatten().numpy(), other.flatten().numpy())[0, 1]) < 0.01


def test_counter_discrete_gaussian_has_the_discretized_law():
    noise = DiscreteGaussianNoise(0.25, 16)
    out = torch.empty(2000, 101)
    counter_fill(noise, out, torch.zeros(101), key=7, first=0)
    integers = (out * 16).round().numpy()
    assert np.array_equal(integers, out.numpy() * 16)  # (K + N) / L with integer N
    values, counts = np.unique(integers, return_counts=True)
    expected = (norm.cdf((values + 0.5) / 4) - norm.cdf((values - 0.5) / 4)) * integers.size
    keep = expected > 20
    assert chi2.sf((((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum(), keep.sum() - 1) > 1e-3


def test_counter_stream_is_refused_for_a_noise_without_a_kernel():
    with pytest.raises(InvalidArgumentError, match="no counter stream"):
        MonteCarloEngine(Recorder(), 0.5, 10, noise=LaplaceNoise(0.5), stream="counter")
    with pytest.raises(InvalidArgumentError, match="stream must be"):
        MonteCarloEngine(Recorder(), 0.5, 10, stream="philox")
    engine = MonteCarloEngine(Recorder(), 0.5, 10, stream="counter")
    with pytest.raises(ValueError, match="counter streams"):
        engine.run(torch.zeros(1, 3), 5, VoteCounter(1, 3, engine.device), [torch.Generator()])


def test_engine_perturb_draws_what_the_loop_draws():
    for stream in ("generator", "counter"):
        model = Recorder()
        engine = MonteCarloEngine(model, 0.5, 100, stream=stream)
        x = torch.rand(1, 12)
        engine.run(x, 60, VoteCounter(1, 3, engine.device), [engine.generator(1, 0, "s")])
        out = torch.empty(60, 12)
        engine.perturb(out, x[0], engine.generator(1, 0, "s"))
        assert torch.equal(out, model.batches[0])


def test_triton_kernels_equal_the_torch_reference_in_the_interpreter():
    """The CUDA kernels (robustcert.engine.counter_triton) run by Triton's CPU interpreter: the
    discrete Gaussian bit for bit, the Gaussian within float32 rounding of its transcendentals."""
    pytest.importorskip("triton")
    script = textwrap.dedent("""
        import torch
        from robustcert.engine import DiscreteGaussianNoise, GaussianNoise
        from robustcert.engine.counter import counter_fill
        from robustcert.engine.counter_triton import check_against_reference, triton_fill
        for noise in (GaussianNoise(0.25), DiscreteGaussianNoise(0.5, 255)):
            assert check_against_reference(noise, torch.device("cpu"), count=5, width=70) is None, noise.name
        noise = DiscreteGaussianNoise(0.25, 16)
        out, ref = torch.empty(6, 9), torch.empty(6, 9)
        grid = torch.arange(9, dtype=torch.float32)
        key, first = torch.tensor([2**62 + 12345]), torch.tensor([2**32 - 2])
        triton_fill(noise, out, grid, key, first, skip=1)
        counter_fill(noise, ref, grid, 2**62 + 12345, 2**32 - 1)
        assert torch.equal(out, ref)
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


# --------------------------------------------------------------------------- the graph step, on CPU
class StandIn:
    """What ``torch.cuda.CUDAGraph`` does for the step, without a GPU: replay calls the body again."""

    replays = 0

    def __init__(self, body):
        self.body = body

    def replay(self):
        StandIn.replays += 1
        self.body()


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Let the engine build its graph step on CPU, with :class:`StandIn` as the captured graph."""
    monkeypatch.setattr(monte_carlo, "GRAPH_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(step_module, "capture", lambda body, device, warmup=1: (body(), StandIn(body))[1])
    StandIn.replays = 0


def graph_votes(model, graphs, n=2300, batch_size=500, rows=(0, 1, 2), runs=1):
    engine = MonteCarloEngine(model, 0.5, batch_size, stream="counter", graphs=graphs)
    xs = torch.tensor([[0.3, -0.1, 0.2], [-0.5, 0.0, 0.1], [0.1, 0.1, -0.3]])[list(rows)]
    counter = VoteCounter(len(rows), 3, engine.device)
    streams = [engine.generator(7, i, "s") for i in rows]
    for _ in range(runs):
        engine.run(xs, n, counter, streams)
    return counter.result(), engine


def test_graph_step_gives_the_eager_votes(cpu_graphs):
    expected, eager = graph_votes(Recorder(), graphs=False)
    assert eager.report()["cuda_graphs"] == "off"
    counts, engine = graph_votes(Recorder(), graphs=None, runs=1)
    np.testing.assert_array_equal(counts, expected)
    assert engine.report()["cuda_graphs"].startswith("votes equal to eager, logits bitwise equal")
    assert StandIn.replays >= 9  # 3 inputs x 4 full batches, minus the eager first one, plus the check
    expected_two, _ = graph_votes(Recorder(), graphs=False, runs=2)
    counts_two, _ = graph_votes(Recorder(), graphs=None, runs=2)  # streams continue across runs
    np.testing.assert_array_equal(counts_two, expected_two)
    assert counts.sum() == 3 * 2300


def test_graph_step_falls_back_to_eager_when_capture_fails(cpu_graphs, monkeypatch):
    def broken(body, device, warmup=1):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(step_module, "capture", broken)
    expected, _ = graph_votes(Recorder(), graphs=False)
    with pytest.warns(RuntimeWarning, match="CUDA graph of the sampling step failed"):
        counts, engine = graph_votes(Recorder(), graphs=None)
    np.testing.assert_array_equal(counts, expected)
    assert engine.report()["cuda_graphs"].startswith("failed: operation not permitted")


def test_graph_step_is_refused_when_its_votes_differ_from_eager(cpu_graphs):
    class Drifting(Recorder):
        """A model whose outputs change after its first call: its graph replay cannot match eager."""

        calls = 0

        def forward(self, x):
            Drifting.calls += 1
            out = super().forward(x)
            return out if Drifting.calls == 1 else out[:, [1, 0, 2]]

    with pytest.warns(RuntimeWarning, match="votes differ"):
        counts, engine = graph_votes(Drifting(), graphs=None, n=1000)
    assert engine.report()["cuda_graphs"].startswith("failed: the graph's votes differ")
    assert counts.sum() == 3 * 1000


@pytest.mark.filterwarnings("ignore:CUDA graph of the sampling step failed")  # NaN in the first batch: no graph
def test_nan_detection_in_eager_and_graphed_batches(cpu_graphs):
    class NaNAt(Recorder):
        def __init__(self, call, value=float("nan")):
            super().__init__()
            self.call, self.value = call, value

        def forward(self, x):
            out = super().forward(x).clone()
            if len(self.batches) == self.call:
                out[len(out) // 2, 1] = self.value
            return out

    # 15 batches (3 inputs x (4 full + 1 of 300)); with graphs the calls are: 1 the first full batch
    # (eager), 2 the capture, 3 the check replay, then replays and the eager batches of 300 (call 17)
    for graphs, calls in ((False, (1, 8, 15)), (None, (1, 10, 17))):
        for call in calls:
            with pytest.raises(ModelOutputError, match="NaN or infinite"):
                graph_votes(NaNAt(call), graphs=graphs)
        with pytest.raises(ModelOutputError):
            graph_votes(NaNAt(12, float("-inf")), graphs=graphs)
        assert graph_votes(NaNAt(99), graphs=graphs)[0].sum() == 3 * 2300


def test_nan_check_finds_inf_anywhere_and_accepts_huge_finite_outputs():
    class Outputs(torch.nn.Module):
        def __init__(self, values):
            super().__init__()
            self.values, self.call = values, 0

        def forward(self, x):
            value = self.values[min(self.call, len(self.values) - 1)]
            self.call += 1
            out = torch.zeros(len(x), 2)
            out[0, 0] = value
            return out

    def run(values):
        engine = MonteCarloEngine(Outputs(values), 0.5, 10)
        return engine.run(torch.zeros(1, 3), 40, VoteCounter(1, 2, engine.device), [engine.generator(0, 0, "s")])

    assert run([3e38, 3e38, 3e38, -3e38]).result().sum() == 40  # a float32 sum would overflow; float64 does not
    for values in ([0, float("inf"), 0, 0], [0, 0, 0, float("-inf")], [float("inf"), float("-inf")]):
        with pytest.raises(ModelOutputError):
            run(values)


def test_dataset_sidecar_records_the_noise_stream_and_graph_status(tmp_path):
    from robustcert import certify_dataset

    smoothed = Smooth(load_model("bundled:digits-0.25"), 10, 0.25)
    certify_dataset(smoothed, "digits", tmp_path / "c.tsv", n0=20, n=200, max_inputs=2, progress=False)
    run = json.loads((tmp_path / "c.tsv.json").read_text())["runs"][-1]
    assert run["engine"]["noise_stream"].startswith("torch.Generator per input: derive_seed(seed, index, stage)")
    assert run["engine"]["cuda_graphs"] == "off (cpu)"
