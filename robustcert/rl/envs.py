"""Environments for policy smoothing: the noisy-observation wrapper and environment factories.

Threat model and defence (Kumar, Levine and Feizi, ICLR 2022): at step t the environment emits an
observation o_t, the adversary adds eps_t (sqrt(sum_t ||eps_t||^2) <= B over the episode), and
the agent sees o_t + eps_t + delta_t with fresh delta_t ~ N(0, sigma^2 I). Noise is added to each
*per-step* observation, BEFORE any frame stacking: a frame stack is part of the agent (its memory
of noisy observations), so every frame is noised exactly once.

* :class:`NoisyObservation` is that defence as a gymnasium wrapper (use it to train on noise or to
  watch a smoothed agent): ``make_env("CartPole-v1", sigma=0.2, frame_stack=5)`` builds
  env -> NoisyObservation -> FrameStackObservation.
* The certification loop (:func:`robustcert.rl.rollout.run_episodes`) applies the same noise,
  drawn from the same per-episode stream, to whole batches of observations itself, so that an
  adversary can be inserted before the noise; ``tests/test_policy.py`` checks that both give
  identical observations.
* Environment factories return the *clean* per-step environment (``env_factory``); Atari games
  get ``AtariPreprocessing`` (84x84 grey frames scaled to [0,1], frame skip 4) before the noise.
* The environments of the seed paper have names (:data:`PAPER_ENVS`: ``cartpole``,
  ``mountaincar``, ``pong``, ``freeway``), each an :class:`EnvSpec` with the paper's setting
  (time limit, Pong's one round, Freeway's difficulty, Mountain Car's goal reward) and a true
  lower bound v_0 of every episode's return, which the certificate needs.

Seeds: episode e of a run with seed s resets its environment with ``derive_seed(s, e, "env")``
and draws its observation noise from ``numpy.random.default_rng(derive_seed(s, e, "noise"))``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import gymnasium as gym
import numpy as np

from ..engine import derive_seed
from ..errors import InvalidArgumentError, RobustCertError, check_sigma

ENV_STREAM, NOISE_STREAM = "env", "noise"


class EnvironmentUnavailable(RobustCertError):
    """An environment cannot be built (unknown id, missing optional dependency)."""


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """(environment reset seed, observation-noise seed) of one episode of a run."""
    return derive_seed(seed, episode, ENV_STREAM), derive_seed(seed, episode, NOISE_STREAM)


def observation_noise(generator: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """sigma * N(0, I) of the given shape in float32: the one noise convention of this package."""
    return np.float32(sigma) * generator.standard_normal(shape, dtype=np.float32)


class NoisyObservation(gym.ObservationWrapper):
    """Adds fresh N(0, sigma^2 I) noise to every observation (Kumar et al. 2022, policy smoothing).

    The noise generator is reseeded at every ``reset``: from ``options["noise_seed"]`` when given
    (the certification loop's per-episode stream), else from the reset seed, else from the OS.
    Observations become float32 and unbounded.
    """

    def __init__(self, env, sigma: float):
        super().__init__(env)
        self.sigma = check_sigma(sigma)
        shape = env.observation_space.shape
        if shape is None:
            raise InvalidArgumentError("NoisyObservation needs an array (Box) observation space")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
        self.noise_generator = np.random.default_rng()

    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        noise_seed = options.pop("noise_seed", None)
        if noise_seed is None and seed is not None:
            noise_seed = derive_seed(seed, 0, NOISE_STREAM)
        self.noise_generator = np.random.default_rng(noise_seed)
        return super().reset(seed=seed, options=options or None)

    def observation(self, observation):
        clean = np.asarray(observation, dtype=np.float32)
        return clean + observation_noise(self.noise_generator, clean.shape, self.sigma)


def is_noisy(env) -> bool:
    """True when ``env`` already contains a NoisyObservation wrapper (noise would be added twice)."""
    while env is not None:
        if isinstance(env, NoisyObservation):
            return True
        env = getattr(env, "env", None)
    return False


def _register_atari():
    try:
        import ale_py
    except ImportError:
        raise EnvironmentUnavailable(
            "Atari environments need ale-py and opencv-python-headless: pip install 'robustcert[rl]'"
        ) from None
    gym.register_envs(ale_py)
    return gym


class ReseedWithoutReload(gym.Wrapper):
    """An ALE game reset with a seed at the cost of a plain reset (~0.04 s instead of ~0.4 s).

    ale-py reloads the ROM at every seeded reset, and the rollout loop seeds every episode. Here
    a seeded reset after the first one only reseeds (``seed_game``: the emulator's generator and
    the environment's own, from which the no-op starts and the sticky actions draw, exactly as
    a seeded reset does) and resets the game. With the emulator's own sticky actions off
    (``make_clean_env`` moves them into ``StickyAction``), an episode is the same, frame for
    frame, as after a fresh ``reset(seed)``, whatever ran before it in the emulator
    (tests/test_policy_seed_envs.py; without the reseeding it is not).
    """

    def __init__(self, env):
        super().__init__(env)
        self.loaded = False

    def reset(self, *, seed=None, options=None):
        if seed is None or not self.loaded:
            self.loaded = self.loaded or seed is not None
            return self.env.reset(seed=seed, options=options)
        self.env.unwrapped.seed_game(seed)
        return self.env.reset(options=options)


def _end_on_first_point(env):
    """Pong "one round" (Kumar et al. 2022): the episode ends at the first point scored (return +-1)."""

    class FirstPoint(gym.Wrapper):
        def step(self, action):
            observation, reward, terminated, truncated, info = self.env.step(action)
            return observation, reward, terminated or reward != 0, truncated, info

    return FirstPoint(env)


class GoalReward(gym.Wrapper):
    """Reward 1 at the step that reaches the goal (the episode terminates there), 0 at every other.

    Mountain Car as certified by Kumar et al. (2022): the return is 1 if the car reaches the flag
    within the time limit, else 0, so it does not depend on the action cost of
    MountainCarContinuous-v0 (-0.1 a^2 per step, on the unclipped action).
    """

    def step(self, action):
        observation, _, terminated, truncated, info = self.env.step(action)
        return observation, float(terminated), terminated, truncated, info


@dataclass(frozen=True)
class EnvSpec:
    """A named environment of the seed paper (Kumar, Levine and Feizi 2022), as certified here.

    Attributes:
        name: the short name (``--env NAME``).
        gym_id: the gymnasium / ALE id it is built from; ``make_kwargs`` go to ``gym.make``.
        max_episode_steps: the episode time limit in agent steps (after Atari frame skipping).
        return_lower_bound: v_0, a lower bound of EVERY episode's return (attacked or not),
            which the certificate starts from (``PolicySmooth.certify``).
        one_round: Pong: the episode ends at the first point.
        goal_reward: the return is 1 on reaching the goal, else 0 (:class:`GoalReward`).
        noop_action: the action of the ``noop`` agent (doing nothing); None: the first action
            (discrete) or zeros (continuous).
        setting: the paper's setting and how this one differs (one line, for the run record).
    """

    name: str
    gym_id: str
    max_episode_steps: int
    return_lower_bound: float
    make_kwargs: dict = field(default_factory=dict)
    one_round: bool = False
    goal_reward: bool = False
    noop_action: float | int | None = None
    setting: str = ""

    @property
    def atari(self) -> bool:
        return is_atari(self.gym_id)


PAPER_ENVS: dict[str, EnvSpec] = {spec.name: spec for spec in (
    EnvSpec("cartpole", "CartPole-v1", 200, 0.0,
            setting="CartPole-v1, 200-step episodes, reward 1 per step; no no-op action (noop pushes left)"),
    EnvSpec("mountaincar", "MountainCarContinuous-v0", 999, 0.0, goal_reward=True, noop_action=0.0,
            setting="MountainCarContinuous-v0, 999 steps, return 1 if the car reaches the flag else 0; "
                    "noop applies force 0"),
    EnvSpec("pong", "PongNoFrameskip-v4", 1000, -1.0, one_round=True,
            setting="Pong one round: the episode ends at the first point (+1 won, -1 lost), or at "
                    "1000 agent steps with return 0 (a time limit the paper does not state)"),
    EnvSpec("freeway", "ALE/Freeway-v5", 250, 0.0,
            make_kwargs={"difficulty": 1, "repeat_action_probability": 0.25},
            setting="Freeway 'hard' (difficulty 1), sticky actions 0.25, 250 agent steps, +1 per crossing"),
)}


def paper_env(env_id: str) -> EnvSpec | None:
    """The :class:`EnvSpec` named ``env_id`` (case-insensitive), or None for any other id."""
    return PAPER_ENVS.get(str(env_id).lower())


def is_atari(env_id: str) -> bool:
    return "NoFrameskip" in env_id or env_id.startswith("ALE/")


def make_clean_env(env_id: str, max_episode_steps: int | None = None, one_round: bool = False):
    """The clean per-step environment: ``gym.make`` (plus AtariPreprocessing for Atari games).

    ``env_id``: a name of :data:`PAPER_ENVS` (``cartpole``, ``mountaincar``, ``pong``,
    ``freeway``: the paper's setting, ``max_episode_steps`` overriding its time limit), a
    gymnasium id (``CartPole-v1``, ``MountainCarContinuous-v0``, ...) or an ALE id
    (``PongNoFrameskip-v4``, ``ALE/Freeway-v5``). ``one_round`` (Pong): end the episode at the
    first point. Raises EnvironmentUnavailable.
    """
    spec = paper_env(env_id)
    kwargs: dict = {}
    if spec is not None:
        env_id, kwargs, one_round = spec.gym_id, dict(spec.make_kwargs), one_round or spec.one_round
        max_episode_steps = spec.max_episode_steps if max_episode_steps is None else max_episode_steps
    atari = is_atari(env_id)
    if atari:
        _register_atari()
    # Atari: the time limit counts agent steps (after frame skipping), so it is applied after preprocessing
    if max_episode_steps is not None and not atari:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    sticky = 0.0
    if atari:
        kwargs["frameskip"] = 1  # AtariPreprocessing does the frame skipping
        registered = gym.spec(env_id).kwargs if env_id in gym.registry else {}
        sticky = float(kwargs.pop("repeat_action_probability", registered.get("repeat_action_probability", 0.0)))
        kwargs["repeat_action_probability"] = 0.0  # drawn by StickyAction below, from the episode's seed
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvironmentUnavailable(f"cannot make environment {env_id!r}: {exc}") from None
    if atari:
        from gymnasium.wrappers import AtariPreprocessing, StickyAction

        env = ReseedWithoutReload(env)
        if sticky > 0:
            env = StickyAction(env, sticky)  # per emulator frame, like ALE's own sticky actions
        env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, scale_obs=True,
                                 noop_max=30)
        if one_round:
            env = _end_on_first_point(env)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, int(max_episode_steps))
    elif one_round:
        raise InvalidArgumentError("one_round is only defined for Atari Pong")
    if spec is not None and spec.goal_reward:
        env = GoalReward(env)
    return env


def env_factory(env_id: str, max_episode_steps: int | None = None, one_round: bool = False) -> Callable:
    """A zero-argument callable that builds the clean environment (what ``PolicySmooth.certify`` takes).

    Builds one environment right away so that a bad id fails here with a clear message.
    """
    make_clean_env(env_id, max_episode_steps, one_round).close()

    def build():
        return make_clean_env(env_id, max_episode_steps, one_round)

    return build


def make_env(env_id: str, sigma: float | None = None, frame_stack: int = 1, max_episode_steps: int | None = None,
             one_round: bool = False):
    """The smoothed agent's view as one gymnasium env: clean env -> NoisyObservation -> frame stack.

    Frame stacking (``FrameStackObservation``, padded with the first noisy observation) comes
    AFTER the noise, so each frame is noised once, as in the certification loop.
    """
    env = make_clean_env(env_id, max_episode_steps, one_round)
    if sigma is not None:
        env = NoisyObservation(env, sigma)
    if frame_stack > 1:
        from gymnasium.wrappers import FrameStackObservation

        env = FrameStackObservation(env, frame_stack, padding_type="reset")
    return env
