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

Seeds: episode e of a run with seed s resets its environment with ``derive_seed(s, e, "env")``
and draws its observation noise from ``numpy.random.default_rng(derive_seed(s, e, "noise"))``.
"""
from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from ..engine import derive_seed
from ..errors import InvalidArgumentError, RobustCertError, check_sigma

ENV_STREAM, NOISE_STREAM = "env", "noise"
ATARI_GAMES = {"pong": "PongNoFrameskip-v4", "freeway": "FreewayNoFrameskip-v4"}


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


def _end_on_first_point(env):
    """Pong "one round" (Kumar et al. 2022): the episode ends at the first point scored (return +-1)."""

    class FirstPoint(gym.Wrapper):
        def step(self, action):
            observation, reward, terminated, truncated, info = self.env.step(action)
            return observation, reward, terminated or reward != 0, truncated, info

    return FirstPoint(env)


def make_clean_env(env_id: str, max_episode_steps: int | None = None, one_round: bool = False):
    """The clean per-step environment: ``gym.make`` (plus AtariPreprocessing for Atari games).

    ``env_id``: a gymnasium id (``CartPole-v1``, ``MountainCarContinuous-v0``, ...), an ALE id
    (``PongNoFrameskip-v4``, ``ALE/Freeway-v5``) or a short Atari name (``pong``, ``freeway``).
    ``one_round`` (Pong): end the episode at the first point. Raises EnvironmentUnavailable.
    """
    env_id = ATARI_GAMES.get(env_id.lower(), env_id)
    atari = "NoFrameskip" in env_id or env_id.startswith("ALE/")
    if atari:
        _register_atari()
    # Atari: the time limit counts agent steps (after frame skipping), so it is applied after preprocessing
    kwargs = {} if max_episode_steps is None or atari else {"max_episode_steps": int(max_episode_steps)}
    if atari and env_id.startswith("ALE/"):
        kwargs["frameskip"] = 1  # AtariPreprocessing does the frame skipping
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvironmentUnavailable(f"cannot make environment {env_id!r}: {exc}") from None
    if atari:
        from gymnasium.wrappers import AtariPreprocessing

        env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True, scale_obs=True,
                                 noop_max=30)
        if one_round:
            env = _end_on_first_point(env)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, int(max_episode_steps))
    elif one_round:
        raise InvalidArgumentError("one_round is only defined for Atari Pong")
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
