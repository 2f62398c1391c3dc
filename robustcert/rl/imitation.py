"""DAgger (Ross, Gordon and Bagnell 2011) of a scripted expert into a policy that sees only noisy observations.

How the bundled Mountain Car, Pong and Freeway policies were trained (experiments/weights/).
The expert reads the true state (the emulator's RAM, or Mountain Car's (position, velocity));
the learner sees what the smoothed agent sees at certification: its own stack of k noisy per-step observations z_t = o_t + delta_t,
delta_t ~ N(0, sigma^2 I), padded with z_0 at the start of an episode (robustcert.rl.rollout).

    for i = 0 .. iterations-1:
        run episodes acting with the expert w.p. beta_i, else with the learner (beta_0 = 1)
        record every visited clean observation o_t with the expert's action a*_t
        train the learner on ALL records so far: loss(learner(noisy stack), a*) with fresh noise
        at every epoch (the noise is independent of the clean frames, so this samples the same
        inputs the agent gets)

An expert may also expose ``features``: numbers it read from the true state at the last call
(Pong: ball and paddle positions and velocities). Then a linear auxiliary head on the learner's
hidden layer is trained to predict them (mean squared error, beside the action loss) and thrown
away afterwards: it shapes the hidden layer, the saved policy is the learner alone.

The certificate is about the learned policy alone: the expert is never used at certification.

An expert is a callable built from an environment (``make_expert(env)``) with ``reset()`` at
every episode start and ``expert()`` -> its action in the environment's current state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .envs import env_factory, make_clean_env, paper_env
from .policies import TorchPolicy, save_policy
from .rollout import run_episodes


@dataclass
class Demonstrations:
    """Clean observations (stored as ``dtype``, times ``scale``) and expert actions, episode by episode."""

    scale: float = 1.0
    dtype: type = np.float32
    observations: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    features: list = field(default_factory=list)

    def add_episode(self, observations: list, actions: list, features: list) -> None:
        if observations:
            stored = np.asarray(observations, dtype=np.float32) * self.scale
            self.observations.append(np.rint(stored).astype(self.dtype) if self.dtype != np.float32 else stored)
            self.actions.append(np.asarray(actions))
            self.features.append(np.asarray(features, dtype=np.float32).reshape(len(actions), -1))

    def __len__(self) -> int:
        return sum(len(a) for a in self.actions)

    def arrays(self):
        """(observations, actions, expert features, offset of each record in its episode) over all episodes."""
        offsets = np.concatenate([np.arange(len(a)) for a in self.actions])
        return (np.concatenate(self.observations), np.concatenate(self.actions), np.concatenate(self.features),
                offsets)


def noisy_stacks(observations: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor, frame_stack: int,
                 sigma: float, scale: float, generator: torch.Generator) -> torch.Tensor:
    """The agent inputs of records ``rows``: stacks of k noisy frames, padded with z_0 like the rollout loop.

    Position j of the stack of record t holds frame t-k+1+j; positions before the episode start
    repeat frame 0 WITH THE SAME noise draw (the loop copies z_0), hence the gather of the noise.
    """
    k = frame_stack
    back = torch.arange(k - 1, -1, -1)                                   # k-1 .. 0 frames back
    lag = torch.minimum(back.unsqueeze(0), offsets[rows].unsqueeze(1))  # no further back than frame 0
    frames = observations[rows.unsqueeze(1) - lag].float() / scale       # (B, k, *shape)
    noise = sigma * torch.randn(frames.shape, generator=generator)
    first = (k - 1 - torch.minimum(offsets[rows], torch.tensor(k - 1))).view(-1, 1)  # position of frame 0
    source = torch.maximum(torch.arange(k).unsqueeze(0), first)         # padded positions use frame 0's draw
    noise = torch.gather(noise, 1, source.view(*source.shape, *([1] * (noise.ndim - 2))).expand_as(noise))
    stacks = frames + noise
    return stacks if k > 1 else stacks[:, 0]


def collect(env_name: str, make_expert: Callable, learner: torch.nn.Module | None, sigma: float, frame_stack: int,
            steps: int, beta: float, seed: int, num_envs: int, data: Demonstrations, discrete: bool = True) -> dict:
    """Play ``steps`` agent steps in ``num_envs`` environments and record every (o_t, a*_t) in ``data``.

    Args:
        make_expert: builds an expert from an environment (module docstring).
        learner: acts (on its own noisy stack, noise drawn here) where the expert does not; None: expert only.
        beta: probability that the expert's action is played at a step (the learner's otherwise).
        seed: seeds the environments' resets, the noise and the choices between expert and learner.
        discrete: the learner's outputs are logits (else continuous actions).

    Returns:
        ``{"episodes": finished episodes, "mean_return": their mean return}``.
    """
    rng = np.random.default_rng(seed)
    envs = [make_clean_env(env_name) for _ in range(num_envs)]
    experts = [make_expert(env) for env in envs]
    learner_policy = TorchPolicy(learner, discrete=discrete) if learner is not None else None
    records = [([], [], []) for _ in envs]
    returns, current = [], np.zeros(num_envs)
    observations = [None] * num_envs
    stacks = [None] * num_envs

    def reset(i):
        observation, _ = envs[i].reset(seed=int(rng.integers(2**31)))
        experts[i].reset()
        observations[i] = observation
        noisy = observation + sigma * rng.standard_normal(observation.shape).astype(np.float32)
        stacks[i] = np.repeat(noisy[None], frame_stack, axis=0)
        current[i] = 0.0

    for i in range(num_envs):
        reset(i)
    done_steps = 0
    while done_steps < steps:
        expert_actions = [expert() for expert in experts]
        actions = list(expert_actions)
        if learner_policy is not None and beta < 1:
            inputs = np.stack(stacks) if frame_stack > 1 else np.stack(stacks)[:, 0]
            learned = learner_policy(inputs)
            actions = [a if rng.random() < beta else learned[i] for i, a in enumerate(expert_actions)]
        for i, env in enumerate(envs):
            records[i][0].append(observations[i])
            records[i][1].append(expert_actions[i])
            records[i][2].append(getattr(experts[i], "features", ()))
            action = actions[i] if discrete else np.asarray(actions[i], np.float32).reshape(env.action_space.shape)
            observation, reward, terminated, truncated, _ = env.step(action)
            current[i] += reward
            done_steps += 1
            if terminated or truncated:
                data.add_episode(*records[i])
                records[i] = ([], [], [])
                returns.append(current[i])
                reset(i)
            else:
                observations[i] = observation
                noisy = observation + sigma * rng.standard_normal(observation.shape).astype(np.float32)
                stacks[i] = np.concatenate([stacks[i][1:], noisy[None]])
    for i in range(num_envs):  # unfinished episodes still teach the learner
        data.add_episode(*records[i])
        envs[i].close()
    return {"episodes": len(returns), "mean_return": float(np.mean(returns)) if returns else float("nan")}


def train(model: torch.nn.Module, data: Demonstrations, loss_fn: Callable, sigma: float, frame_stack: int,
          epochs: int, batch_size: int, lr: float, seed: int, auxiliary: torch.nn.Module | None = None) -> float:
    """Epochs of minibatch Adam on all records of ``data``, with fresh observation noise at every epoch.

    Args:
        loss_fn: ``loss_fn(model outputs, expert actions)``.
        auxiliary: a head on ``model.embed`` trained to predict the expert's features (module docstring).

    Returns:
        The mean loss of the last epoch.
    """
    observations, actions, features, offsets = data.arrays()
    observations, offsets = torch.as_tensor(observations), torch.as_tensor(offsets)
    targets, features = torch.as_tensor(actions), torch.as_tensor(features)
    generator = torch.Generator().manual_seed(seed)
    parameters = list(model.parameters()) + (list(auxiliary.parameters()) if auxiliary is not None else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            inputs = noisy_stacks(observations, offsets, rows, frame_stack, sigma, data.scale, generator)
            if auxiliary is None:
                loss = loss_fn(model(inputs), targets[rows])
            else:
                hidden = model.embed(inputs)
                loss = loss_fn(model.head[-1](hidden), targets[rows]) + torch.nn.functional.mse_loss(
                    auxiliary(hidden), features[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
    model.eval()
    return total / len(order)


def evaluate(env_name: str, model: torch.nn.Module, sigma: float, frame_stack: int, episodes: int, seed: int,
             discrete: bool = True) -> np.ndarray:
    """Returns of ``episodes`` smoothed episodes of the learner alone, in the certification loop itself."""
    return run_episodes(env_factory(env_name), TorchPolicy(model, discrete=discrete), sigma, episodes, seed=seed,
                        frame_stack=frame_stack, num_envs=min(episodes, 32)).returns


def dagger(env_name: str, make_expert: Callable, model: torch.nn.Module, loss_fn: Callable, *, sigma: float,
           frame_stack: int, iterations: int, steps: int, epochs: int, batch_size: int, lr: float,
           eval_episodes: int, seed: int, data: Demonstrations, num_envs: int = 8, discrete: bool = True,
           auxiliary_features: int = 0, first_iteration: int = 0, log: Callable[[str], None] = print) -> list[dict]:
    """The DAgger loop of the module docstring, training ``model`` in place; beta_i = 0.5^i.

    Seeds: seed + 1000 i (collection), seed + 1000 i + 1 (training noise), 10000 + seed + i
    (evaluation of the learner alone): never the certification seed 0.

    Args:
        steps: agent steps collected per iteration.
        epochs: training epochs over all records, per iteration.
        data: the records (new ones are appended).
        auxiliary_features: > 0: the number of the expert's features, predicted by an auxiliary head.
        first_iteration: > 0 continues a run (``model`` already trained): iterations first .. first + n - 1.
        log: receives one line per iteration.

    Returns:
        One dict per iteration (beta, records, collection and evaluation returns, loss, seconds).
    """
    auxiliary = torch.nn.Linear(model.hidden, auxiliary_features) if auxiliary_features else None
    history = []
    for i in range(first_iteration, first_iteration + iterations):
        start = time.time()
        beta = 0.5 ** i
        collected = collect(env_name, make_expert, model if i else None, sigma, frame_stack, steps, beta,
                            seed + 1000 * i, num_envs, data, discrete)
        loss = train(model, data, loss_fn, sigma, frame_stack, epochs, batch_size, lr, seed + 1000 * i + 1, auxiliary)
        returns = evaluate(env_name, model, sigma, frame_stack, eval_episodes, 10_000 + seed + i, discrete)
        row = {"iteration": i, "beta": beta, "records": len(data), "collect_episodes": collected["episodes"],
               "collect_mean_return": collected["mean_return"], "loss": loss,
               "learner_mean_return": float(returns.mean()), "seconds": time.time() - start}
        history.append(row)
        log(f"{env_name} sigma {sigma:g} iteration {i}: beta {beta:.3f}, {len(data)} records, collection mean return "
            f"{collected['mean_return']:.2f} ({collected['episodes']} episodes), loss {loss:.4f}, learner alone "
            f"{returns.mean():.2f} over {len(returns)} episodes ({time.time() - start:.0f} s)")
    return history


def validate_and_save(env_name: str, model: torch.nn.Module, path, *, sigma: float, frame_stack: int,
                      observation_shape, training: str, history: list[dict], episodes: int, seed: int,
                      discrete: bool = True) -> np.ndarray:
    """Validate the learner alone on fresh episodes, save it with its training record (``save_policy``).

    Args:
        env_name: a name of :data:`robustcert.rl.envs.PAPER_ENVS` (its time limit is recorded).
        path: the checkpoint to write.
        training: how the policy was trained, recorded in the checkpoint.
        history: the DAgger history (:func:`dagger`'s rows), recorded in the checkpoint.
        episodes: validation episodes.
        seed: the validation episodes run with seed 20000 + ``seed``.

    Returns:
        The validation episodes' returns (their mean is recorded in the checkpoint).
    """
    check = evaluate(env_name, model, sigma, frame_stack, episodes, 20_000 + seed, discrete)
    save_policy(model, path, env=env_name, observation_shape=list(observation_shape), frame_stack=frame_stack,
                max_episode_steps=paper_env(env_name).max_episode_steps, sigma=sigma, training=training,
                dagger_history=history, validation_mean_return=float(check.mean()), validation_episodes=len(check))
    return check
