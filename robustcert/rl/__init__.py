"""Reinforcement-learning support for policy smoothing (Kumar, Levine and Feizi, ICLR 2022).

Needs gymnasium (the ``rl`` extra). ``envs``: the noisy-observation wrapper, environment
factories (classic control, Atari through ale-py) and the seed paper's environments by name
(``PAPER_ENVS``); ``policies``: batched policies (callables, torch modules such as PolicyMLP and
AtariCNN, stable-baselines3 models, the noop agent) and their loading; ``rollout``: the one
batched, seeded episode loop; ``attack``: an adaptive gradient attack that spends an episode's
l2 budget; ``imitation``: DAgger of a scripted expert into a policy that sees noisy observations
(how the bundled Mountain Car, Pong and Freeway policies were trained).
"""
from .attack import GradientAttack
from .envs import PAPER_ENVS, EnvSpec, NoisyObservation, env_factory, make_clean_env, make_env, paper_env
from .policies import (
    BUILTIN_CONTROLLERS, AtariCNN, LoadedPolicy, NoopPolicy, PolicyMLP, TorchPolicy, load_policy, save_policy,
)
from .rollout import Episodes, run_episodes

__all__ = [
    "BUILTIN_CONTROLLERS", "PAPER_ENVS", "AtariCNN", "EnvSpec", "Episodes", "GradientAttack", "LoadedPolicy",
    "NoisyObservation", "NoopPolicy", "PolicyMLP", "TorchPolicy", "env_factory", "load_policy", "make_clean_env",
    "make_env", "paper_env", "run_episodes", "save_policy",
]
