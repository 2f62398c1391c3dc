"""The rollout loop of policy smoothing: batched, seeded episodes of a smoothed (and maybe attacked) agent.

One loop for every environment type. Episodes run in a gymnasium ``SyncVectorEnv`` of K slots
with autoreset DISABLED: when a slot's episode ends, the loop itself resets that slot with the
next episode's seed (``reset(seed=..., options={"reset_mask": ...})``), so episode e always gets
the environment seed ``derive_seed(seed, e, "env")`` and the noise stream
``derive_seed(seed, e, "noise")`` whatever K is: results do not depend on the batching. Slots
left without an episode at the end of a run idle (their steps are ignored).

At every step, for all slots at once (Kumar, Levine and Feizi 2022, threat model and defence):

    o_t  (clean per-step observations, K x obs_shape)
    eps_t = adversary.perturb(...)         optional; projected so that sqrt(sum_t ||eps_t||^2) <= B
    z_t  = o_t + eps_t + delta_t           delta_t ~ N(0, sigma^2 I), the episode's own stream
    agent input = frame stack of z_{t-k+1..t} (padded with z_0 at the start), or z_t when k = 1
    a_t  = policy(agent inputs)            one batched call

The noise is the same, value for value, as ``make_env(env_id, sigma, frame_stack)`` (the
NoisyObservation wrapper before FrameStackObservation) gives for the same seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from ..engine import derive_seed
from ..errors import InvalidArgumentError, ModelOutputError, check_budget, check_count, check_sigma
from .envs import episode_seeds, is_noisy, observation_noise


class Adversary(Protocol):
    """An adaptive observation attack with a total l2 budget over the episode.

    ``perturb`` sees, for every slot, the clean observation o_t, the agent's memory (the last k-1
    noisy frames, or None when k = 1), whether the episode starts now, the remaining budget
    sqrt(B^2 - sum_{s<t} ||eps_s||^2) and the step index; it returns eps_t (K x obs_shape).
    The loop projects eps_t onto the remaining budget, whatever the adversary returns.
    """

    budget: float

    def perturb(self, clean: np.ndarray, history: np.ndarray | None, start: np.ndarray,
                remaining: np.ndarray, step: np.ndarray) -> np.ndarray: ...


@dataclass
class Episodes:
    """Per-episode outcomes of a run, indexed by episode number (``first_episode`` ...)."""

    returns: np.ndarray
    lengths: np.ndarray
    perturbation_norms: np.ndarray
    seconds: float
    num_envs: int

    @property
    def episodes_per_second(self) -> float:
        return len(self.returns) / max(self.seconds, 1e-12)


class _NoiseStreams:
    """Per-slot observation noise, drawn in chunks from each episode's own generator.

    numpy's generators give the same sequence whether values are drawn one observation at a time
    (as the NoisyObservation wrapper does) or ``chunk`` observations at a time.
    """

    def __init__(self, num_slots: int, shape: tuple[int, ...], sigma: float, chunk: int):
        self.shape, self.sigma, self.chunk = shape, sigma, chunk
        self.generators: list[np.random.Generator | None] = [None] * num_slots
        self.buffers = [np.empty((0, *shape), np.float32)] * num_slots
        self.positions = np.zeros(num_slots, dtype=np.int64)

    def start(self, slot: int, noise_seed: int) -> None:
        self.generators[slot] = np.random.default_rng(noise_seed)
        self.buffers[slot] = np.empty((0, *self.shape), np.float32)
        self.positions[slot] = 0

    def draw(self, slots: np.ndarray, out: np.ndarray) -> None:
        for slot in slots:
            if self.positions[slot] >= len(self.buffers[slot]):
                self.buffers[slot] = observation_noise(self.generators[slot], (self.chunk, *self.shape), self.sigma)
                self.positions[slot] = 0
            out[slot] = self.buffers[slot][self.positions[slot]]
            self.positions[slot] += 1


def project_to_budget(eps: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """Scale each row of eps down so that ||eps_k|| <= remaining_k (rows within budget unchanged)."""
    flat = eps.reshape(len(eps), -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    # a hair inside the ball, so that float32 rounding never overspends the budget
    scale = np.where(norms > remaining, remaining * (1 - 1e-6) / np.maximum(norms, 1e-30), 1.0)
    return (flat * scale[:, None]).astype(np.float32).reshape(eps.shape)


def _check_actions(actions, num_slots: int, action_space) -> np.ndarray:
    actions = np.asarray(actions)
    if isinstance(action_space, gym.spaces.Discrete):
        if actions.shape != (num_slots,):
            raise ModelOutputError(f"the policy must return one discrete action per observation "
                                   f"(shape ({num_slots},)), got shape {actions.shape}")
        low, high = int(action_space.start), int(action_space.start + action_space.n) - 1
        if not np.all((actions >= low) & (actions <= high)):  # e.g. a policy with more outputs than actions
            raise ModelOutputError(f"the policy returned action {actions[(actions < low) | (actions > high)][0]}, "
                                   f"but the environment's actions are {low}..{high}")
        return actions.astype(np.int64)
    expected = (num_slots, *action_space.shape)
    if actions.shape != expected:
        raise ModelOutputError(f"the policy must return actions of shape {expected}, got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ModelOutputError("the policy returned NaN or infinite actions")
    return actions.astype(action_space.dtype)


def run_episodes(env_fn: Callable, policy: Callable, sigma: float, n_episodes: int, seed: int,
                 frame_stack: int = 1, num_envs: int = 64, adversary: Adversary | None = None,
                 first_episode: int = 0, progress: Callable[[int], None] | None = None,
                 noise_chunk: int = 64) -> Episodes:
    """Run ``n_episodes`` smoothed episodes (see the module docstring); returns their outcomes.

    Args:
        env_fn: zero-argument callable building the CLEAN per-step environment.
        policy: batched callable (K, *agent_obs_shape) float32 -> K actions.
        sigma: smoothing noise level (observation units).
        frame_stack: k >= 1 noisy frames the agent sees (layout (k, *obs_shape), oldest first).
        num_envs: vector-environment slots K (1 = one episode at a time).
        adversary: optional attack (:class:`Adversary`); its ``budget`` is enforced here.
        first_episode: number of the first episode (episodes e = first .. first + n - 1).
        progress: called with the number of episodes finished at each step where some finish.
    """
    sigma = check_sigma(sigma)
    n_episodes = check_count(n_episodes, "n_episodes")
    frame_stack = check_count(frame_stack, "frame_stack")
    num_slots = min(check_count(num_envs, "num_envs"), n_episodes)
    budget = check_budget(adversary.budget, "adversary budget") if adversary is not None else 0.0

    envs = SyncVectorEnv([env_fn] * num_slots, copy=False, autoreset_mode=AutoresetMode.DISABLED)
    try:
        if is_noisy(envs.envs[0]):
            raise InvalidArgumentError("env_fn must build the clean environment: it already adds observation "
                                       "noise (NoisyObservation), which the smoothing loop adds itself")
        shape = envs.single_observation_space.shape
        if shape is None:
            raise InvalidArgumentError("policy smoothing needs array (Box) observations")
        return _run(envs, shape, policy, sigma, n_episodes, seed, frame_stack, num_slots, adversary, budget,
                    first_episode, progress, noise_chunk)
    finally:
        envs.close()


def _run(envs, shape, policy, sigma, n_episodes, seed, frame_stack, num_slots, adversary, budget, first_episode,
         progress, noise_chunk) -> Episodes:
    clock = time.perf_counter()
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    spent_norms = np.zeros(n_episodes)
    episode = np.full(num_slots, -1, dtype=np.int64)     # episode number in each slot, -1 = idle
    steps = np.zeros(num_slots, dtype=np.int64)
    slot_return = np.zeros(num_slots)
    spent2 = np.zeros(num_slots)                           # sum_t ||eps_t||^2 so far
    noise = _NoiseStreams(num_slots, shape, sigma, noise_chunk)
    stack = np.zeros((num_slots, frame_stack, *shape), np.float32) if frame_stack > 1 else None
    next_episode, finished = 0, 0

    def assign(slots: np.ndarray) -> list[int | None]:
        """Give each slot the next episode (or make it idle); returns the reset seeds."""
        nonlocal next_episode
        seeds: list[int | None] = [None] * num_slots
        for slot in slots:
            if next_episode < n_episodes:
                number = first_episode + next_episode
                episode[slot], next_episode = number, next_episode + 1
                seeds[slot], noise_seed = episode_seeds(seed, number)
                noise.start(slot, noise_seed)
            else:
                episode[slot] = -1
                seeds[slot] = derive_seed(seed, int(slot), "idle")
            steps[slot], slot_return[slot], spent2[slot] = 0, 0.0, 0.0
        return seeds

    observations, _ = envs.reset(seed=assign(np.arange(num_slots)))
    drawn = np.zeros((num_slots, *shape), np.float32)
    while (episode >= 0).any():
        active = episode >= 0
        clean = np.asarray(observations, dtype=np.float32).reshape(num_slots, *shape)
        start = steps == 0
        perturbed = clean
        if adversary is not None:
            history = stack[:, 1:].copy() if stack is not None else None
            remaining = np.sqrt(np.maximum(budget**2 - spent2, 0.0)) * active
            eps = np.asarray(adversary.perturb(clean, history, start, remaining, steps.copy()), dtype=np.float32)
            if eps.shape != clean.shape or not np.all(np.isfinite(eps)):
                raise ModelOutputError(f"the adversary must return finite perturbations of shape {clean.shape}")
            eps = project_to_budget(eps, remaining)
            spent2 += np.square(eps.reshape(num_slots, -1).astype(np.float64)).sum(axis=1)
            perturbed = clean + eps
        drawn[:] = 0.0
        noise.draw(np.nonzero(active)[0], drawn)
        noisy = perturbed + drawn
        if stack is not None:
            stack[:, :-1] = stack[:, 1:].copy()
            stack[:, -1] = noisy
            stack[start] = noisy[start][:, None]
            agent_inputs = stack
        else:
            agent_inputs = noisy
        actions = _check_actions(policy(agent_inputs), num_slots, envs.single_action_space)
        observations, rewards, terminated, truncated, _ = envs.step(actions)
        slot_return += np.where(active, rewards, 0.0)
        steps += 1
        done = np.asarray(terminated) | np.asarray(truncated)
        for slot in np.nonzero(done & active)[0]:
            row = episode[slot] - first_episode
            returns[row], lengths[row], spent_norms[row] = slot_return[slot], steps[slot], np.sqrt(spent2[slot])
            finished += 1
        if done.any():
            if progress is not None and (done & active).any():
                progress(finished)
            mask = done.copy()
            observations, _ = envs.reset(seed=assign(np.nonzero(mask)[0]), options={"reset_mask": mask})
    return Episodes(returns, lengths, spent_norms, time.perf_counter() - clock, num_slots)
