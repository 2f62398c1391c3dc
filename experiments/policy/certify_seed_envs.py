"""Certify and attack the bundled policies of one seed-paper environment (mountaincar, pong, freeway): results/policy/.

For every bundled policy ``<env>-<sigma>`` (robustcert.rl.policies.bundled_policy_names):

1. Certificates: ``robustcert certify-policy`` run in-process (the same code path as the shell
   command), n smoothed episodes, alpha = 0.05, seed 0, the environment's setting and return
   lower bound (robustcert.rl.envs.PAPER_ENVS), DKW band: results/policy/<env>-sigma<S>.tsv
   (+ sidecar); budgets B = sigma x --budget-factors. The Clopper-Pearson band on the SAME
   episodes (their returns are in the sidecar; robustcert.certify_returns, the function the
   command calls): <env>-sigma<S>-clopper-pearson.tsv, so Atari episodes are played once. Each
   table holds with probability >= 0.95 on its own; neither is chosen after seeing the other.
   The noop agent under the same command (fewer episodes): <env>-noop.tsv.
2. Attacks: robustcert.rl.GradientAttack on the smoothed agent (noise still added after the
   perturbation), budget B / sqrt(H) per step over the first H steps, for every attacked budget
   (sigma x --attack-factors) and horizon H in --horizons, --attack-episodes episodes each (seed 1,
   other episodes than the certificate's). <env>-attack-all.tsv has every configuration,
   <env>-attack.tsv the strongest (lowest mean return) per (sigma, B), B = 0 the unattacked run.
3. <env>.png (certified return and attacked mean return against B, one panel per sigma) and
   <env>-table.md.

    python experiments/policy/certify_seed_envs.py --env mountaincar
    python experiments/policy/certify_seed_envs.py --env freeway --episodes 1000 --attack-episodes 32
    python experiments/policy/certify_seed_envs.py --env pong --episodes 500 --attack-episodes 32
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from robustcert import PolicySmooth, certify_returns
from robustcert.cli import main as cli
from robustcert.plotting import draw_certificate_against_attack
from robustcert.rl import GradientAttack, env_factory, load_policy
from robustcert.rl.envs import PAPER_ENVS
from robustcert.rl.policies import bundled_policy_names

DEFAULTS = {  # per environment: episodes, noop episodes, budget factors (x sigma), attack factors, horizons
    "mountaincar": dict(episodes=1000, noop_episodes=100, budget_factors="0,0.5,1,1.5,2,2.5,3,4,5,8,16,64,256",
                        attack_factors="4,16,64,256", horizons="200,999", attack_episodes=50),
    "freeway": dict(episodes=1000, noop_episodes=100, budget_factors="0,0.5,1,1.5,2,2.5,3,4,5,8,16,64,256",
                    attack_factors="2,16,64,256", horizons="25,250", attack_episodes=32),
    "pong": dict(episodes=500, noop_episodes=100, budget_factors="0,0.5,1,1.5,2,2.5,3,4,5,8,16,64,256",
                 attack_factors="2,16,64,256", horizons="25,200", attack_episodes=32),
}


def budgets_of(sigma: float, factors: str) -> list[float]:
    """sigma x each factor, rounded as the TSVs write them (so that attacks and certificates join on B)."""
    return [float(f"{sigma * float(f):.6g}") for f in factors.split(",")]


def run_cli(args: list[str]) -> None:
    cli.main(args, standalone_mode=False, obj={"argv": args})


def certify(out: Path, env: str, policy: str, sigma: float, episodes: int, budgets: list[float]) -> Path:
    for path in (out, out.with_name(out.name + ".json")):
        path.unlink(missing_ok=True)
    run_cli(["certify-policy", "--env", env, "--policy", policy, "--sigma", f"{sigma:g}", "--episodes", str(episodes),
             "--budgets", ",".join(f"{b:g}" for b in budgets), "--alpha", "0.05", "--seed", "0", "--bound", "dkw",
             "--threads", "1", "--out", str(out), "--quiet"])
    return out


def clopper_pearson_from(dkw_out: Path, out: Path) -> Path:
    """The Clopper-Pearson table on the episodes of a certify-policy run (returns from its sidecar)."""
    record = json.loads(dkw_out.with_name(dkw_out.name + ".json").read_text())
    parameters = record["parameters"]
    returns = np.repeat([float(v) for v in record["returns_histogram"]], list(record["returns_histogram"].values()))
    assert len(returns) == parameters["episodes"]
    table = certify_returns(returns, parameters["budgets"], parameters["sigma"], parameters["alpha"],
                            parameters["return_lower_bound"], "clopper-pearson", parameters["quantiles"])
    table.to_csv(out, sep="\t", index=False)
    return out


def attack(env: str, name: str, budgets: list[float], horizons: list[int], episodes: int, iterations: int,
           eot_samples: int) -> pd.DataFrame:
    loaded = load_policy(name)
    sigma = float(loaded.metadata["sigma"])
    env_fn = env_factory(env)
    probe = env_fn()
    discrete = isinstance(probe.action_space, gym.spaces.Discrete)
    probe.close()
    agent = PolicySmooth(loaded.module, sigma, frame_stack=loaded.frame_stack, num_envs=episodes, discrete=discrete)
    rows = []

    def record(budget, horizon, result):
        rows.append({"sigma": sigma, "budget": budget, "horizon": horizon, "episodes": episodes,
                     "attacked_mean": result.returns.mean(),
                     "attacked_sem": result.returns.std(ddof=1) / math.sqrt(episodes),
                     "max_perturbation_norm": result.perturbation_norms.max(), "mean_length": result.lengths.mean(),
                     "seconds": result.seconds})
        print(f"{name} B {budget:g} H {horizon}: mean return {result.returns.mean():.3f} "
              f"({result.seconds:.0f} s)", flush=True)

    record(0.0, 0, agent.rollout(env_fn, episodes, seed=1))
    for budget in budgets:
        for horizon in horizons:
            adversary = GradientAttack(loaded.module, sigma, budget, attack_steps=horizon, iterations=iterations,
                                       eot_samples=eot_samples, seed=0, discrete=discrete)
            record(budget, horizon, agent.rollout(env_fn, episodes, seed=1, adversary=adversary))
    return pd.DataFrame(rows)


def plot(out: Path, env: str, certificates: dict, strongest: pd.DataFrame, noop_mean: float) -> None:
    from matplotlib.figure import Figure

    sigmas = sorted({sigma for sigma, _ in certificates})
    figure = Figure(figsize=(4.6 * len(sigmas), 3.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(sigmas)))
    for ax, sigma in zip(axes, sigmas):
        bounds = {bound: certificates[(sigma, bound)] for bound in ("dkw", "clopper-pearson")}
        draw_certificate_against_attack(ax, bounds, strongest[strongest.sigma == sigma])
        frame = certificates[(sigma, "dkw")]
        ax.axhline(noop_mean, color="grey", linewidth=0.8, linestyle=":", label="noop agent")
        ax.set_xscale("symlog", linthresh=sigma)
        ax.set_xlim(0, 1.5 * frame.budget.max())  # budgets are >= 0: no negative half of the symlog axis
        ax.set_title(f"{env}, sigma = {sigma:g}, n = {int(frame.n[0])}, alpha = {frame.alpha[0]:g}",
                     fontsize="medium")
        ax.legend(fontsize="small", loc="best")
    figure.savefig(out, dpi=150)


def table(env: str, certificates: dict, strongest: pd.DataFrame, noop: pd.DataFrame) -> str:
    lines = ["| sigma | B | B / sigma | certified E[R] (DKW) | certified E[R] (CP) | certified q10 / q50 (DKW) | "
             "strongest attack: mean return (H) |", "|---|---|---|---|---|---|---|"]
    for sigma in sorted({s for s, _ in certificates}):
        dkw, cp = certificates[(sigma, "dkw")], certificates[(sigma, "clopper-pearson")]
        for i, budget in enumerate(dkw.budget):
            hit = strongest[(strongest.sigma == sigma) & np.isclose(strongest.budget, budget)]
            attacked = "" if hit.empty else (f"{hit.attacked_mean.iloc[0]:.3g} ± {2 * hit.attacked_sem.iloc[0]:.2g} "
                                             f"({'none' if hit.horizon.iloc[0] == 0 else int(hit.horizon.iloc[0])})")
            lines.append(f"| {sigma:g} | {budget:g} | {budget / sigma:g} | {dkw.certified_return[i]:.3f} | "
                         f"{cp.certified_return[i]:.3f} | {dkw.certified_q10[i]:g} / {dkw.certified_q50[i]:g} | "
                         f"{attacked} |")
    lines.append("")
    lines.append("Clean smoothed mean return (certification episodes): " + ", ".join(
        f"sigma {s:g}: {certificates[(s, 'dkw')].clean_mean[0]:.3f} (n = {int(certificates[(s, 'dkw')].n[0])})"
        for s in sorted({s for s, _ in certificates})) + f"; noop agent: {noop.clean_mean[0]:.3f} "
        f"(n = {int(noop.n[0])}); return lower bound v_0 = {PAPER_ENVS[env].return_lower_bound:g}.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=sorted(DEFAULTS), required=True)
    parser.add_argument("--out-dir", type=Path, default=Path("results/policy"))
    for key, value in DEFAULTS["freeway"].items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default per environment ({', '.join(f'{e}: {d[key]}' for e, d in DEFAULTS.items())})")
    parser.add_argument("--iterations", type=int, default=5, help="PGD iterations per attacked step")
    parser.add_argument("--eot-samples", type=int, default=4, help="noise draws averaged per PGD iteration")
    parser.add_argument("--skip-certify", action="store_true", help="reuse the certificate TSVs already there")
    parser.add_argument("--skip-attack", action="store_true", help="reuse <env>-attack-all.tsv (redraw the figure)")
    args = parser.parse_args()
    settings = {key: getattr(args, key) if getattr(args, key) is not None else value
                for key, value in DEFAULTS[args.env].items()}
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    names = [n for n in bundled_policy_names() if n.startswith(f"{args.env}-")]
    sigmas = {name: float(name.split("-", 1)[1]) for name in names}
    certificates = {}
    for name, sigma in sigmas.items():
        budgets = budgets_of(sigma, settings["budget_factors"])
        assert set(budgets_of(sigma, settings["attack_factors"])) <= set(budgets), "attack budgets are certified too"
        dkw = args.out_dir / f"{args.env}-sigma{sigma:g}.tsv"
        cp = args.out_dir / f"{args.env}-sigma{sigma:g}-clopper-pearson.tsv"
        if not args.skip_certify:
            certify(dkw, args.env, name, sigma, settings["episodes"], budgets)
            clopper_pearson_from(dkw, cp)
        for bound, out in (("dkw", dkw), ("clopper-pearson", cp)):
            certificates[(sigma, bound)] = pd.read_csv(out, sep="\t")
            print(f"{out}: certified E[R] at B = 0: {certificates[(sigma, bound)].certified_return[0]:.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    noop_out = args.out_dir / f"{args.env}-noop.tsv"
    if not args.skip_certify:
        certify(noop_out, args.env, "noop", min(sigmas.values()), settings["noop_episodes"], [0.0])
    noop = pd.read_csv(noop_out, sep="\t")
    horizons = [int(h) for h in settings["horizons"].split(",")]
    attacks_out = args.out_dir / f"{args.env}-attack-all.tsv"
    if args.skip_attack:
        attacks = pd.read_csv(attacks_out, sep="\t")
    else:
        attacks = pd.concat([attack(args.env, name, budgets_of(sigma, settings["attack_factors"]), horizons,
                                    settings["attack_episodes"], args.iterations, args.eot_samples)
                             for name, sigma in sigmas.items()])
        attacks.to_csv(attacks_out, sep="\t", index=False, float_format="%.5g")
    strongest = (attacks.sort_values("attacked_mean").groupby(["sigma", "budget"], as_index=False).first()
                 .sort_values(["sigma", "budget"]))
    strongest.to_csv(args.out_dir / f"{args.env}-attack.tsv", sep="\t", index=False, float_format="%.5g")
    plot(args.out_dir / f"{args.env}.png", args.env, certificates, strongest, noop.clean_mean[0])
    text = table(args.env, certificates, strongest, noop)
    (args.out_dir / f"{args.env}-table.md").write_text(text)
    print(text)
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
