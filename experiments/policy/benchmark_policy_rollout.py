"""Episodes per second of the policy-smoothing certification loop: vectorised vs one episode at a time.

The same n episodes (same seeds, so the same returns, checked) are run with num_envs = 1 (one
episode at a time, the policy called on one observation per step) and with larger vector
environments (policy called once per step on the whole batch), side by side in one process, for
the bundled torch MLP policy and for the hand-written numpy controller. Ratios are against
num_envs = 1 in the same run. Each configuration is timed --repeats times; the best time is kept.

    python experiments/policy/benchmark_policy_rollout.py --out results/policy/benchmark.md
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from robustcert import PolicySmooth
from robustcert.rl import env_factory, load_policy
from robustcert.rl.policies import cartpole_pd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--num-envs", default="1,8,64,256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env_fn = env_factory("CartPole-v1", max_episode_steps=200)
    policies = {"bundled MLP cartpole-0.2 (torch)": load_policy("cartpole-0.2").policy,
                "cartpole-pd controller (numpy)": cartpole_pd}
    lines = [f"Certification loop, CartPole-v1 (200-step limit), sigma 0.2, 5-frame stacks, {args.episodes} "
             f"episodes per configuration, best of {args.repeats}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores visible, torch threads 1.", "",
             "| policy | num_envs | episodes/s | steps/s | speed-up vs num_envs=1 |", "|---|---|---|---|---|"]
    for name, policy in policies.items():
        agent = PolicySmooth(policy, sigma=0.2, frame_stack=5)
        reference, base = None, None
        for num_envs in (int(k) for k in args.num_envs.split(",")):
            best = None
            for _ in range(args.repeats):
                start = time.perf_counter()
                episodes = agent.rollout(env_fn, args.episodes, seed=0, num_envs=num_envs)
                elapsed = time.perf_counter() - start
                best = elapsed if best is None else min(best, elapsed)
            if reference is None:
                reference = episodes.returns
            assert np.array_equal(reference, episodes.returns), "batching changed the returns"
            rate = args.episodes / best
            base = base or rate
            steps = episodes.lengths.sum() / best
            lines.append(f"| {name} | {num_envs} | {rate:.1f} | {steps:.0f} | {rate / base:.1f}x |")
            print(lines[-1], flush=True)
    lines += ["", "Returns are identical for every num_envs (per-episode seeds), checked by the script."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
