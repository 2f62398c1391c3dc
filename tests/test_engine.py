"""The Monte Carlo engine: batching, packing, memory, seeds."""
import torch

from robustcert.engine import MonteCarloEngine, VoteCounter, derive_seed, plan_batches, plan_blocks


class Recorder(torch.nn.Module):
    """Records batch sizes and the noisy inputs; votes class 0 for x > 0 else 1."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.clone())
        score = x.flatten(1).sum(1)
        return torch.stack([score, -score], 1)


def test_plan_keeps_chunk_sizes_independent_of_packing():
    plan = plan_batches(3, 250, 1000)
    assert len(plan) == 1 and [s.count for s in plan[0]] == [250, 250, 250]
    plan = plan_batches(2, 2500, 1000)
    assert [[s.count for s in b] for b in plan] == [[1000], [1000], [500], [1000], [1000], [500]]
    plan = plan_batches(4, 600, 1000)
    assert [[(s.row, s.count) for s in b] for b in plan] == [[(0, 600)], [(1, 600)], [(2, 600)], [(3, 600)]]


def test_block_plans_fill_every_batch_and_split_draws_across_batches():
    plan = plan_blocks(3, [64, 36], 128)  # 300 samples: batches of 128, 128, 44
    assert [sum(s.count for s in batch) for batch in plan] == [128, 128, 44]
    assert [(s.row, s.count, s.offset, s.draw) for s in plan[0]] == [(0, 64, 0, 0), (0, 36, 0, 0), (1, 28, 0, 64)]
    assert [(s.row, s.count, s.offset, s.draw) for s in plan[1]][:2] == [(1, 36, 28, 64), (1, 36, 0, 0)]
    big = plan_blocks(1, [256], 100)  # a draw larger than the batch: drawn once, fed in three pieces
    assert [[(s.count, s.offset, s.draw) for s in b] for b in big] == [[(100, 0, 256)], [(100, 100, 256)],
                                                                        [(56, 200, 256)]]


def test_block_draws_give_the_same_samples_at_every_batch_size():
    """Draw sizes fixed by the caller: the samples of each input do not depend on the batch size,
    also for inputs of 15 values (CPU normal_ splits are exact only at multiples of 16 values)."""
    def samples(batch_size):
        model = Recorder()
        engine = MonteCarloEngine(model, 0.5, batch_size, channels_last=False)
        xs = torch.zeros(3, 1, 3, 5)
        engine.run(xs, 100, VoteCounter(3, 2, torch.device("cpu")),
                   [engine.generator(0, i, "estimation") for i in range(3)], blocks=[8, 56, 36])
        return torch.cat(model.batches).reshape(3, 100, -1)

    reference = samples(1000)
    for batch_size in (1, 7, 64, 101):
        assert torch.equal(samples(batch_size), reference)


def test_engine_counts_every_sample_and_handles_the_last_partial_batch():
    model = Recorder()
    engine = MonteCarloEngine(model, sigma=0.5, batch_size=400)
    x = torch.zeros(2, 3)
    gens = [engine.generator(0, i, "test") for i in range(2)]
    counts = engine.run(x, 1000, VoteCounter(2, 2, engine.device), gens).result()
    assert counts.sum(1).tolist() == [1000, 1000]
    assert max(b.shape[0] for b in model.batches) <= 400  # memory O(batch), not O(n)


def test_noise_is_added_around_each_input_with_the_right_scale():
    model = Recorder()
    engine = MonteCarloEngine(model, sigma=0.3, batch_size=5000)
    x = torch.tensor([[1.0, -2.0], [5.0, 5.0]])
    gens = [engine.generator(1, i, "s") for i in range(2)]
    engine.run(x, 2000, VoteCounter(2, 2, engine.device), gens)
    batch = model.batches[0]  # both inputs packed in one batch
    assert batch.shape == (4000, 2)
    for row in range(2):
        samples = batch[2000 * row: 2000 * (row + 1)]
        assert torch.allclose(samples.mean(0), x[row], atol=0.03)
        assert torch.allclose(samples.std(0), torch.tensor(0.3), atol=0.02)


def test_generators_are_distinct_per_index_and_stage():
    seeds = {derive_seed(0, i, stage) for i in range(100) for stage in ("selection", "estimation")}
    assert len(seeds) == 200
    assert derive_seed(0, 5, "selection") == derive_seed(0, 5, "selection")
    # the whole stage name counts, not a prefix
    assert derive_seed(0, 5, "selection-a") != derive_seed(0, 5, "selection-b")
    assert derive_seed(0, 5, "estimation-branch-1") != derive_seed(0, 5, "estimation-branch-2")


def test_accumulation_continues_across_runs():
    engine = MonteCarloEngine(Recorder(), sigma=0.5, batch_size=100)
    counter = VoteCounter(1, 2, engine.device)
    gens = [engine.generator(0, 0, "s")]
    engine.run(torch.zeros(1, 2), 150, counter, gens)
    engine.run(torch.zeros(1, 2), 150, counter, gens)
    assert counter.result().sum() == 300


def test_noise_level_conditioned_models_receive_sigma():
    class Conditioned(torch.nn.Module):
        takes_sigma = True

        def forward(self, x, sigma):
            self.seen = sigma
            return torch.zeros(x.shape[0], 2)

    model = Conditioned()
    engine = MonteCarloEngine(model, sigma=0.42, batch_size=10)
    engine.run(torch.zeros(1, 3), 10, VoteCounter(1, 2, engine.device), [engine.generator(0, 0, "s")])
    assert model.seen == 0.42
