"""Environment steps per second of the certification loop against a plain gymnasium loop, same policy, same episodes.

For each seed-paper environment and its bundled policy:

* plain loop: ``make_env(env, sigma, frame_stack)`` (the gymnasium wrapper chain clean env ->
  NoisyObservation -> FrameStackObservation), one episode after the other, the policy called on
  one observation per step, episode e reset with the certification loop's seeds
  (``episode_seeds(0, e)``), so both loops play exactly the same episodes (checked: same returns);
* robustcert.rl.run_episodes with num_envs = K (a SyncVectorEnv of K slots, the noise drawn in
  chunks per episode, the policy called once per step on all K observations).

Each configuration is timed --repeats times, best kept; the clock is the process CPU time by
default (the machine is shared, and everything runs on one thread), or wall time (--clock wall).
Atari games: also the cost of one seeded reset (every episode has one), ale-py's own (which
reloads the ROM) against robustcert.rl.envs.ReseedWithoutReload (which reseeds without reloading).

    python experiments/policy/benchmark_seed_envs.py --out results/policy/benchmark-seed-envs.md
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robustcert.rl import env_factory, load_policy, make_env, run_episodes
from robustcert.rl.envs import ReseedWithoutReload, episode_seeds, make_clean_env
from robustcert.rl.policies import bundled_policy_names

EPISODES = {"mountaincar": 64, "freeway": 16, "pong": 8}


def plain_loop(env_name: str, policy, sigma: float, frame_stack: int, episodes: int) -> tuple[np.ndarray, int]:
    """Returns and total steps of ``episodes`` episodes in the plain gymnasium loop, one step at a time."""
    env = make_env(env_name, sigma=sigma, frame_stack=frame_stack)
    returns, steps = np.zeros(episodes), 0
    for episode in range(episodes):
        env_seed, noise_seed = episode_seeds(0, episode)
        observation, _ = env.reset(seed=env_seed, options={"noise_seed": noise_seed})
        done = False
        while not done:
            action = policy(np.asarray(observation, np.float32)[None])[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            returns[episode] += reward
            steps += 1
            done = terminated or truncated
    env.close()
    return returns, steps


def seeded_reset_seconds(env_name: str, resets: int, clock) -> tuple[float, float]:
    """Mean seconds of a seeded reset of the emulator: ale-py's own, and through ReseedWithoutReload."""
    env = make_clean_env(env_name)
    wrapper = env
    while not isinstance(wrapper, ReseedWithoutReload):
        wrapper = wrapper.env
    env.reset(seed=0)
    seconds = []
    for reset in (lambda seed: wrapper.env.reset(seed=seed), lambda seed: wrapper.reset(seed=seed)):
        start = clock()
        for seed in range(1, resets + 1):
            reset(seed)
        seconds.append((clock() - start) / resets)
    env.close()
    return seconds[0], seconds[1]


def timed(function, repeats: int, clock):
    best, result = None, None
    for _ in range(repeats):
        start = clock()
        result = function()
        elapsed = clock() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="mountaincar,freeway,pong")
    parser.add_argument("--num-envs", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    lines = [f"Environment steps per second ({args.clock} clock, best of {args.repeats}), bundled policies, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads 1.", "",
             "| env | policy | episodes | loop | env steps/s | speed-up vs plain loop |", "|---|---|---|---|---|---|"]
    for env_name in args.envs.split(","):
        name = next(n for n in bundled_policy_names() if n.startswith(f"{env_name}-"))
        loaded = load_policy(name)
        sigma, k, episodes = float(loaded.metadata["sigma"]), loaded.frame_stack, EPISODES[env_name]
        probe = env_factory(env_name)()
        loaded.policy.discrete = isinstance(probe.action_space, gym.spaces.Discrete)
        probe.close()
        seconds, (reference, steps) = timed(lambda: plain_loop(env_name, loaded.policy, sigma, k, episodes),
                                            args.repeats, clock)
        base = steps / seconds
        lines.append(f"| {env_name} | {name} | {episodes} | plain gymnasium loop | {base:.0f} | 1.0x |")
        print(lines[-1], flush=True)
        for num_envs in (int(x) for x in args.num_envs.split(",")):
            seconds, result = timed(lambda: run_episodes(env_factory(env_name), loaded.policy, sigma, episodes, seed=0,
                                                         frame_stack=k, num_envs=num_envs), args.repeats, clock)
            assert np.array_equal(result.returns, reference), "the two loops played different episodes"
            rate = result.lengths.sum() / seconds
            lines.append(f"| {env_name} | {name} | {episodes} | run_episodes, num_envs={num_envs} | {rate:.0f} | "
                         f"{rate / base:.1f}x |")
            print(lines[-1], flush=True)
    lines += ["", "Both loops play the same episodes (same seeds): their returns are identical, checked by the script.",
              "", "| game | seeded reset, ale-py (reloads the ROM) | seeded reset, ReseedWithoutReload | ratio |",
              "|---|---|---|---|"]
    for env_name in (e for e in args.envs.split(",") if make_clean_env(e).unwrapped.__class__.__name__ == "AtariEnv"):
        reload, reseed = seeded_reset_seconds(env_name, 10, clock)
        lines.append(f"| {env_name} | {reload * 1000:.0f} ms | {reseed * 1000:.0f} ms | {reload / reseed:.1f}x |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
