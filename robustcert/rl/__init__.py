"""Reinforcement-learning support for policy smoothing (Kumar, Levine and Feizi, ICLR 2022).

Needs gymnasium (the ``rl`` extra). ``envs``: the noisy-observation wrapper and environment
factories (classic control, Atari through ale-py); ``policies``: batched policies (callables,
torch modules, stable-baselines3 models) and their loading; ``rollout``: the one batched, seeded
episode loop; ``attack``: an adaptive gradient attack that spends an episode's l2 budget.
"""
from .attack import GradientAttack
from .envs import NoisyObservation, env_factory, make_clean_env, make_env
from .policies import BUILTIN_CONTROLLERS, LoadedPolicy, PolicyMLP, TorchPolicy, load_policy, save_policy
from .rollout import Episodes, run_episodes

__all__ = [
    "BUILTIN_CONTROLLERS", "Episodes", "GradientAttack", "LoadedPolicy", "NoisyObservation", "PolicyMLP",
    "TorchPolicy", "env_factory", "load_policy", "make_clean_env", "make_env", "run_episodes", "save_policy",
]
