"""Train the bundled CartPole policies on noisy observations (policy smoothing, Kumar et al. 2022).

The agent sees a stack of its last 5 noisy observations (noise N(0, sigma^2 I) added to each
per-step observation before stacking, as at certification) and is a PolicyMLP 20 -> 16 -> 2 (tanh).
Training: the cross-entropy method (CEM) on the 370 weights, with a diagonal Gaussian search
distribution; each iteration evaluates the whole population in ONE batched call of the
certification rollout loop (robustcert.rl.run_episodes), one episode per vector-env slot, so that
slot i runs member i // episodes_per_member. Episodes last at most 200 steps (the published
CartPole setup). Training seeds (10000 + iteration) never overlap the certification seed (0).

    python experiments/weights/train_cartpole_policy.py                   # both sigmas, ~1-2 min each on 1 core
    python experiments/weights/train_cartpole_policy.py --sigmas 0.2 --iterations 20

Writes robustcert/rl/weights/cartpole-<sigma>.pt ({'arch': 'policy_mlp', 'state_dict', metadata}).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from robustcert.rl import env_factory, run_episodes
from robustcert.rl.policies import WEIGHTS_DIR, PolicyMLP, TorchPolicy, save_policy

ENV_ID, MAX_STEPS, FRAME_STACK, HIDDEN = "CartPole-v1", 200, 5, (16,)


class Population(torch.nn.Module):
    """P one-hidden-layer MLPs evaluated at once: row i of a batch goes to member i // per_member."""

    def __init__(self, flat: torch.Tensor, input_dim: int, hidden: int, actions: int, per_member: int):
        super().__init__()
        p = flat.shape[0]
        sizes = [input_dim * hidden, hidden, hidden * actions, actions]
        w1, b1, w2, b2 = torch.split(flat, sizes, dim=1)
        self.w1, self.b1 = w1.view(p, hidden, input_dim), b1.view(p, 1, hidden)
        self.w2, self.b2 = w2.view(p, actions, hidden), b2.view(p, 1, actions)
        self.per_member = per_member

    def forward(self, x):
        p = self.w1.shape[0]
        x = x.flatten(1).view(p, self.per_member, -1)
        h = torch.tanh(torch.baddbmm(self.b1, x, self.w1.transpose(1, 2)))
        return torch.baddbmm(self.b2, h, self.w2.transpose(1, 2)).reshape(p * self.per_member, -1)


def to_policy_mlp(flat: torch.Tensor, input_dim: int, hidden: int, actions: int) -> PolicyMLP:
    model = PolicyMLP(input_dim, actions, (hidden,))
    w1, b1, w2, b2 = torch.split(flat, [input_dim * hidden, hidden, hidden * actions, actions])
    state = {"net.0.weight": w1.view(hidden, input_dim), "net.0.bias": b1,
             "net.2.weight": w2.view(actions, hidden), "net.2.bias": b2}
    model.load_state_dict({k: v.clone() for k, v in state.items()})
    return model


def train(sigma: float, iterations: int, population: int, per_member: int, elite_frac: float, seed: int):
    input_dim, hidden, actions = 4 * FRAME_STACK, HIDDEN[0], 2
    dim = input_dim * hidden + hidden + hidden * actions + actions
    generator = torch.Generator().manual_seed(seed)
    mean, std = torch.zeros(dim), torch.full((dim,), 0.5)
    env_fn = env_factory(ENV_ID, max_episode_steps=MAX_STEPS)
    n_elite = max(2, int(elite_frac * population))
    for it in range(iterations):
        samples = mean + std * torch.randn(population, dim, generator=generator)
        samples[0] = mean  # keep the current mean in the population
        policy = TorchPolicy(Population(samples, input_dim, hidden, actions, per_member))
        episodes = run_episodes(env_fn, policy, sigma, population * per_member, seed=10_000 + it,
                                frame_stack=FRAME_STACK, num_envs=population * per_member)
        fitness = episodes.returns.reshape(population, per_member).mean(axis=1)
        elite = samples[torch.as_tensor(np.argsort(-fitness)[:n_elite].copy())]
        mean = elite.mean(dim=0)
        extra = 0.05 * max(0.0, 1 - it / (0.7 * iterations))  # decaying extra noise against premature collapse
        std = elite.std(dim=0) + extra
        print(f"sigma {sigma} it {it:2d}: mean-member return {fitness[0]:6.1f}, best {fitness.max():6.1f}, "
              f"population mean {fitness.mean():6.1f}", flush=True)
    return to_policy_mlp(mean, input_dim, hidden, actions)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.2,0.4")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--population", type=int, default=48)
    parser.add_argument("--episodes-per-member", type=int, default=8)
    parser.add_argument("--elite-frac", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for sigma in (float(s) for s in args.sigmas.split(",")):
        start = time.time()
        model = train(sigma, args.iterations, args.population, args.episodes_per_member, args.elite_frac, args.seed)
        check = run_episodes(env_factory(ENV_ID, max_episode_steps=MAX_STEPS), TorchPolicy(model), sigma, 200,
                             seed=20_000, frame_stack=FRAME_STACK, num_envs=100)
        path = args.out_dir / f"cartpole-{sigma:g}.pt"
        save_policy(model, path, env=ENV_ID, max_episode_steps=MAX_STEPS, frame_stack=FRAME_STACK, sigma=sigma,
                    training=f"CEM, {args.iterations} iterations x {args.population} members x "
                             f"{args.episodes_per_member} episodes, seed {args.seed}",
                    validation_mean_return=float(check.returns.mean()))
        print(f"sigma {sigma}: validation mean return {check.returns.mean():.1f} over 200 episodes "
              f"(seed 20000); {time.time() - start:.0f} s; saved {path}", flush=True)


if __name__ == "__main__":
    main()
