"""Policy smoothing: certified episode return of an RL agent (Kumar, Levine and Feizi, ICLR 2022).

Threat model: at every step an adversary adds eps_t to the observation, adaptively, with
sqrt(sum_t ||eps_t||^2) <= B over the episode. Defence: the agent acts on o_t + eps_t + delta_t,
fresh delta_t ~ N(0, sigma^2 I) at every step (before any frame stacking).

CERTIFY(policy, sigma, env, n, budgets, alpha, v_0):
    R_1..R_n      <- returns of n smoothed episodes (clean environment, seeded per episode)
    v_1<...<v_k   <- the distinct returns above v_0 (v_0: a known lower bound on every return)
    p_i           <- lower bounds on P(R >= v_i), ALL i simultaneously at 1 - alpha:
                     "dkw":             max(S_n(v_i) - sqrt(ln(1/alpha) / (2n)), 0)   (Massart 1990)
                     "clopper-pearson": CP_lower(#{R >= v_i}, n, alpha / n)        (union over count levels)
    for each B:   E_attacked[R] >= v_0 + sum_i (v_i - v_{i-1}) Phi(Phi^-1(p_i) - B/sigma)
                  q-quantile:  largest v_i with Phi(Phi^-1(p_i) - B/sigma) >= 1 - q

How alpha is spent: once, on the simultaneous band {p_i}. Every budget's expected-return bound and
every quantile bound is a deterministic monotone function of that one band, so all rows of the
result hold together with probability >= 1 - alpha (no extra split over budgets or quantiles).
With ``thresholds`` (a grid declared before sampling), the band is computed on that grid
instead (Clopper-Pearson: alpha / m per grid point).

Example::

    from robustcert import PolicySmooth
    from robustcert.rl import env_factory, load_policy
    agent = PolicySmooth(load_policy("cartpole-0.2").policy, sigma=0.2, frame_stack=5)
    table = agent.certify(env_factory("CartPole-v1", max_episode_steps=200), n_episodes=1000,
                          budgets=[0, 0.1, 0.2, 0.4], alpha=0.05, seed=0, return_lower_bound=0)
    table[["budget", "certified_return", "certified_q50"]]
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import InvalidArgumentError, check_alpha, check_count, check_sigma
from ..radius import certified_expected_return, certified_quantile
from ..stats import clopper_pearson_survival_lower, dkw_epsilon, dkw_survival_lower, empirical_survival

BOUNDS = ("dkw", "clopper-pearson")
DEFAULT_QUANTILES = (0.1, 0.25, 0.5)


def quantile_column(q: float) -> str:
    """``certified_q10`` for q = 0.1: certified P_attacked(R >= value) >= 1 - q."""
    return f"certified_q{q * 100:g}"


def alpha_spending(alpha: float, bound: str, n: int, grid_size: int | None = None) -> dict[str, float]:
    """The one bound CERTIFY spends alpha on (the shares sum to alpha)."""
    if bound == "dkw":
        return {f"one-sided DKW band on P(R >= t), all t at once (Massart 1990), eps = {dkw_epsilon(n, alpha):.6g}": alpha}
    if grid_size is None:
        return {f"Clopper-Pearson lower bounds on P(R >= t), alpha/{n} for each of the n = {n} count levels": alpha}
    return {f"Clopper-Pearson lower bounds on P(R >= t), alpha/{grid_size} at each of {grid_size} declared thresholds": alpha}


def survival_band(returns, alpha: float, bound: str = "dkw", return_lower_bound: float = 0.0,
                  thresholds: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(levels v_1 < ... < v_k above v_0, simultaneous lower bounds p_i on P(R >= v_i))."""
    returns = np.asarray(returns, dtype=float)
    if bound not in BOUNDS:
        raise InvalidArgumentError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if thresholds is None:
        levels = np.unique(returns)
        levels = levels[levels > return_lower_bound]
        grid = levels
    else:
        grid = np.unique(np.asarray(thresholds, dtype=float))
        if len(grid) == 0 or not np.all(np.isfinite(grid)):
            raise InvalidArgumentError("thresholds must be a non-empty list of finite numbers")
        levels = grid[grid > return_lower_bound]
    if bound == "dkw":
        p_lower = dkw_survival_lower(returns, grid, alpha)
    else:
        p_lower = clopper_pearson_survival_lower(returns, grid, alpha, fixed_grid=thresholds is not None)
    return levels, p_lower[grid > return_lower_bound]


def certify_returns(returns, budgets: Sequence[float], sigma: float, alpha: float = 0.05,
                    return_lower_bound: float = 0.0, bound: str = "dkw",
                    quantiles: Sequence[float] = DEFAULT_QUANTILES,
                    thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """The certificate table from the clean smoothed returns (see the module docstring).

    One row per budget B: ``budget``, ``certified_return`` (lower bound on E_attacked[R]),
    ``certified_qXX`` (P_attacked(R >= value) >= 1 - XX/100), and the run's ``clean_mean``
    (empirical, not a bound), ``sigma``, ``n``, ``alpha``, ``bound``, ``return_lower_bound``.
    ``frame.attrs`` holds ``alpha_spending``, the levels and their bounds.
    """
    sigma = check_sigma(sigma)
    alpha = check_alpha(alpha)
    returns = np.asarray(returns, dtype=float).ravel()
    n = check_count(len(returns), "number of episodes")
    if not np.all(np.isfinite(returns)):
        raise InvalidArgumentError("episode returns contain NaN or infinite values")
    v0 = float(return_lower_bound)
    if not np.isfinite(v0):
        raise InvalidArgumentError(f"return_lower_bound must be finite, got {return_lower_bound!r}")
    if returns.min() < v0:
        raise InvalidArgumentError(
            f"return_lower_bound={v0:g} is not a lower bound on the return: an episode returned {returns.min():g}"
        )
    budgets = [float(b) for b in budgets]
    if not budgets:
        raise InvalidArgumentError("give at least one budget")
    quantiles = [check_alpha(q, "quantile") for q in quantiles]
    levels, p_lower = survival_band(returns, alpha, bound, v0, thresholds)
    rows = []
    for budget in budgets:
        row = {"budget": budget, "certified_return": certified_expected_return(levels, p_lower, budget, sigma, v0)}
        for q in quantiles:
            row[quantile_column(q)] = certified_quantile(levels, p_lower, budget, sigma, v0, q)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["clean_mean"] = float(returns.mean())
    frame["sigma"], frame["n"], frame["alpha"], frame["bound"], frame["return_lower_bound"] = sigma, n, alpha, bound, v0
    frame.attrs.update(
        method="policy-smoothing",
        alpha_spending=alpha_spending(alpha, bound, n, None if thresholds is None else len(np.unique(thresholds))),
        levels=levels.tolist(), p_lower=p_lower.tolist(),
        empirical_survival=empirical_survival(returns, levels).tolist(),
    )
    return frame


class PolicySmooth:
    """A smoothed agent: ``policy`` acting on observations with fresh N(0, sigma^2 I) noise each step.

    Args:
        policy: a batched callable (K, *agent_obs_shape) -> K actions, a torch module (argmax of
            its logits) or a stable-baselines3 model (see :mod:`robustcert.rl.policies`).
        sigma: noise level, in observation units.
        frame_stack: the agent sees its last k noisy observations (noise before stacking).
        num_envs: vectorised environment slots (episodes run K at a time, policy batched over them).
    """

    method = "policy-smoothing"

    def __init__(self, policy, sigma: float, frame_stack: int = 1, num_envs: int = 64, discrete: bool = True):
        from ..rl.policies import as_policy

        self.policy = as_policy(policy, discrete)
        self.sigma = check_sigma(sigma)
        self.frame_stack = check_count(frame_stack, "frame_stack")
        self.num_envs = check_count(num_envs, "num_envs")

    @staticmethod
    def _env_fn(env_fn) -> Callable:
        if isinstance(env_fn, str):
            from ..rl.envs import env_factory

            return env_factory(env_fn)
        if not callable(env_fn):
            raise InvalidArgumentError("env_fn must be a gymnasium id or a zero-argument callable building the env")
        return env_fn

    def rollout(self, env_fn, n_episodes: int, seed: int = 0, adversary=None, num_envs: int | None = None,
                first_episode: int = 0, progress: Callable[[int], None] | None = None):
        """Run smoothed (optionally attacked) episodes: :class:`robustcert.rl.rollout.Episodes`."""
        from ..rl.rollout import run_episodes

        return run_episodes(self._env_fn(env_fn), self.policy, self.sigma, n_episodes, seed, self.frame_stack,
                            num_envs or self.num_envs, adversary, first_episode, progress)

    def certify(self, env_fn, n_episodes: int, budgets: Sequence[float], alpha: float = 0.05, seed: int = 0,
                return_lower_bound: float = 0.0, bound: str = "dkw",
                quantiles: Sequence[float] = DEFAULT_QUANTILES, thresholds: Sequence[float] | None = None,
                num_envs: int | None = None, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
        """Certified expected return and quantiles under attack, one row per budget (see module docstring).

        ``env_fn`` builds the CLEAN per-step environment (or is a gymnasium id); ``return_lower_bound``
        must hold for every possible episode (0 for CartPole, -21 for a full Pong game).
        """
        alpha = check_alpha(alpha)
        if bound not in BOUNDS:
            raise InvalidArgumentError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
        episodes = self.rollout(env_fn, n_episodes, seed, num_envs=num_envs, progress=progress)
        frame = certify_returns(episodes.returns, budgets, self.sigma, alpha, return_lower_bound, bound, quantiles,
                                thresholds)
        values, counts = np.unique(episodes.returns, return_counts=True)
        frame.attrs.update(seed=seed, frame_stack=self.frame_stack, episodes_per_second=episodes.episodes_per_second,
                           seconds=episodes.seconds, num_envs=episodes.num_envs,
                           returns_histogram={f"{v:g}": int(c) for v, c in zip(values, counts)},
                           mean_length=float(episodes.lengths.mean()))
        return frame
