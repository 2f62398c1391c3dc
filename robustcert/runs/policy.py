"""A policy-smoothing run (Kumar et al. 2022) from specifications, written to a TSV and sidecar:
what ``robustcert certify-policy`` does, as one Python call (:func:`certify_policy_file`).

The TSV has one row per budget B (certified expected return, certified quantiles, the clean
statistics) in full precision: a rounded bound could round up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from ..engine import as_device, configure_cpu
from ..errors import InvalidArgumentError, check_alpha, check_count, check_sigma, require_extra
from ..methods.policy import PolicySmooth, alpha_spending
from ..files import check_output, ending_fields, output_lock, timestamp, write_sidecar, write_text_atomically
from .provenance import device_name, package_versions, python_command


def certify_policy_file(env_id: str, policy_spec: str, sigma: float, out: str | Path, **options) -> pd.DataFrame:
    """Certify the return of a smoothed agent in an environment, write the table to ``out`` (+ sidecar),
    holding ``out``'s lock for the whole run (:func:`robustcert.files.output_lock`: a second
    writer is refused). The arguments are those of :func:`_certify_policy_file`."""
    with output_lock(out, "policy certificate"):
        return _certify_policy_file(env_id, policy_spec, sigma, out, **options)


def _certify_policy_file(env_id: str, policy_spec: str, sigma: float, out: str | Path, *, episodes: int = 1000,
                        budgets: Sequence[float], alpha: float = 0.05, seed: int = 0, bound: str = "dkw",
                        return_lower_bound: float | None = None, quantiles: Sequence[float] = (0.1, 0.25, 0.5),
                        thresholds: Sequence[float] | None = None, frame_stack: int | None = None,
                        max_episode_steps: int | None = None, one_round: bool = False, num_envs: int = 64,
                        device="cpu", threads: int | None = None, trust_checkpoint: bool = False,
                        progress: Callable[[int], None] | None = None, command: str | None = None) -> pd.DataFrame:
    """Certify the return of a smoothed agent in an environment, write the table to ``out`` (+ sidecar).

    ``policy_spec``: a bundled policy (``cartpole-0.2``), a built-in controller (``cartpole-pd``),
    a ``.pt`` PolicyMLP state_dict or TorchScript file, or a stable-baselines3 ``.zip`` (needs
    ``trust_checkpoint``: SB3 archives unpickle objects); ``noop`` plays the environment's no-op
    action. ``env_id``: a gymnasium id or a name of the seed paper's environments
    (:data:`robustcert.rl.envs.PAPER_ENVS`), whose known lower bound of the return is the default
    ``return_lower_bound`` (v_0; other environments: 0). ``progress(episodes_done)`` is called
    as episodes finish. ``threads``: torch threads for the run (None: the default rule of
    :func:`robustcert.engine.device.default_threads`), restored afterwards and recorded in the
    sidecar. Returns the table (one row per budget).
    """
    gym = require_extra("gymnasium", "rl", "certify-policy")

    from ..rl.envs import env_factory, paper_env
    from ..rl.policies import NoopPolicy, TorchPolicy, check_policy_input, load_policy

    out = Path(out)
    check_output(out, resume=False, kind="certify-policy")
    sigma, alpha, episodes = check_sigma(sigma), check_alpha(alpha), check_count(episodes, "episodes")
    if max_episode_steps is not None:
        check_count(max_episode_steps, "max_episode_steps")  # 0 was a gymnasium traceback, -1 accepted
    quantiles = [check_alpha(q, "quantile") for q in quantiles]
    if threads is not None:
        check_count(threads, "threads")
    device = as_device(device)
    loaded = load_policy(policy_spec, device=device, trust_checkpoint=trust_checkpoint)
    frame_stack = check_count(frame_stack if frame_stack is not None else (loaded.frame_stack or 1), "frame_stack")
    if max_episode_steps is None:
        max_episode_steps = loaded.metadata.get("max_episode_steps")
    spec = paper_env(env_id)
    return_lower_bound = resolve_return_lower_bound(return_lower_bound, spec)
    env_fn = env_factory(env_id, max_episode_steps, one_round)
    probe = env_fn()
    probe.close()
    if isinstance(loaded.policy, TorchPolicy):  # a torch policy's outputs are logits only for discrete actions
        loaded.policy.discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    if isinstance(loaded.policy, NoopPolicy):
        loaded.policy = loaded.policy.for_env(probe.action_space, spec.noop_action if spec else None)
    check_policy_input(loaded, env_id, probe.observation_space.shape, probe.action_space, frame_stack)
    agent = PolicySmooth(loaded.policy, sigma, frame_stack=frame_stack, num_envs=check_count(num_envs, "num_envs"))
    if spec is not None and max_episode_steps is None:
        max_episode_steps = spec.max_episode_steps
    parameters = {"env": env_id, "env_setting": spec.setting if spec else None, "sigma": sigma, "episodes": episodes,
                  "budgets": list(budgets), "alpha": alpha,
                  "seed": seed, "bound": bound, "return_lower_bound": return_lower_bound,
                  "quantiles": quantiles, "thresholds": None if thresholds is None else list(thresholds),
                  "frame_stack": frame_stack, "max_episode_steps": max_episode_steps, "one_round": one_round,
                  "alpha_spending": alpha_spending(alpha, bound, episodes,
                                                   None if thresholds is None else len(set(thresholds)))}
    started = timestamp()
    threads_before = torch.get_num_threads()
    cpu = configure_cpu(threads)
    try:
        table = agent.certify(env_fn, episodes, list(budgets), alpha, seed, return_lower_bound, bound, quantiles,
                              None if thresholds is None else list(thresholds), progress=progress)
    finally:
        torch.set_num_threads(threads_before)
    command = command or python_command()
    record = {
        "command": command, "kind": "certify-policy", "method": PolicySmooth.method,
        "parameters": parameters,
        "model": {"spec": loaded.source, "sha256": loaded.sha256, "metadata": loaded.metadata},
        "data": {"spec": env_id},
        "runs": [{"started": started, "command": command, "device": device_name(device),
                  "versions": package_versions(), "cpu": cpu, "seconds": table.attrs["seconds"],
                  "episodes_per_second": table.attrs["episodes_per_second"], "num_envs": table.attrs["num_envs"],
                  **ending_fields(None)}],
        "mean_episode_length": table.attrs["mean_length"],
        "returns_histogram": table.attrs["returns_histogram"],
    }
    write_text_atomically(out, table.to_csv(sep="\t", index=False))
    write_sidecar(out, record, resume=False)
    return table


def resolve_return_lower_bound(value: float | None, spec) -> float:
    """v_0 for a run: the environment's known lower bound of the return by default (else 0).

    A value above a named environment's known bound is refused: the certificate holds only if
    v_0 bounds every episode's return, attacked or not (Kumar et al. 2022, the expected-return
    bound starts from v_0), and an episode that happens not to go below it proves nothing.
    """
    if value is None:
        return spec.return_lower_bound if spec is not None else 0.0
    value = float(value)
    if spec is not None and value > spec.return_lower_bound:
        raise InvalidArgumentError(
            f"return lower bound {value:g} is above {spec.name}'s known lower bound {spec.return_lower_bound:g}: "
            f"v_0 must bound every episode's return")
    return value
