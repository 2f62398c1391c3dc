"""Certify the bundled CartPole policies (sigma 0.2 and 0.4) and attack them: results/policy/.

1. Certificates: ``robustcert certify-policy`` (run in-process, same code path as the shell
   command), n = 1000 smoothed episodes, alpha = 0.05, seed 0, 200-step episodes, 5-frame stacks,
   with the DKW band and with the Clopper-Pearson band:
   results/policy/cartpole-sigma{S}.tsv and cartpole-sigma{S}-clopper-pearson.tsv (+ .json sidecars).
2. Attacks: robustcert.rl.GradientAttack on the smoothed agent (noise still added after the
   perturbation), for every budget B > 0 and every spreading horizon H in --horizons
   (B / sqrt(H) per step over the first H steps), 100 episodes each (seed 1, so different
   episodes from the certificate's). cartpole-attack-all.tsv has every configuration,
   cartpole-attack.tsv the strongest (lowest mean return) per (sigma, B), with B = 0 as the
   unattacked reference.
3. cartpole.png (certified return and attacked mean return against B) and cartpole.md (table).

    python experiments/policy/certify_cartpole.py            # about 5-10 minutes on one core
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robustcert import PolicySmooth
from robustcert.cli import main as cli
from robustcert.plotting import draw_certificate_against_attack
from robustcert.rl import GradientAttack, env_factory, load_policy

# the certified range, then larger budgets where the attack bites (there the certificate is ~0)
BUDGETS = {0.2: [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.6, 3.2], 0.4: [0.0, 0.2, 0.4, 0.8, 1.2, 1.6, 3.2, 6.4]}
MAX_STEPS = 200


def certify(out_dir: Path, sigma: float, episodes: int, bound: str) -> Path:
    suffix = "" if bound == "dkw" else f"-{bound}"
    out = out_dir / f"cartpole-sigma{sigma:g}{suffix}.tsv"
    for path in (out, out.with_name(out.name + ".json")):
        path.unlink(missing_ok=True)
    args = ["certify-policy", "--env", "CartPole-v1", "--policy", f"cartpole-{sigma:g}", "--sigma", f"{sigma:g}",
            "--episodes", str(episodes), "--budgets", ",".join(f"{b:g}" for b in BUDGETS[sigma]),
            "--alpha", "0.05", "--seed", "0", "--bound", bound, "--max-episode-steps", str(MAX_STEPS),
            "--out", str(out), "--quiet"]
    cli.main(args, standalone_mode=False, obj={"argv": args})
    return out


def attack(sigma: float, horizons: list[int], episodes: int) -> pd.DataFrame:
    loaded = load_policy(f"cartpole-{sigma:g}")
    agent = PolicySmooth(loaded.module, sigma, frame_stack=loaded.frame_stack, num_envs=episodes)
    env_fn = env_factory("CartPole-v1", max_episode_steps=MAX_STEPS)
    rows = []
    clean = agent.rollout(env_fn, episodes, seed=1)
    rows.append({"sigma": sigma, "budget": 0.0, "horizon": 0, "episodes": episodes,
                 "attacked_mean": clean.returns.mean(),
                 "attacked_sem": clean.returns.std(ddof=1) / math.sqrt(episodes),
                 "max_perturbation_norm": 0.0, "seconds": clean.seconds})
    for budget in BUDGETS[sigma][1:]:
        for horizon in horizons:
            adversary = GradientAttack(loaded.module, sigma, budget, attack_steps=horizon, iterations=10,
                                       eot_samples=8, seed=0)
            result = agent.rollout(env_fn, episodes, seed=1, adversary=adversary)
            rows.append({"sigma": sigma, "budget": budget, "horizon": horizon, "episodes": episodes,
                         "attacked_mean": result.returns.mean(),
                         "attacked_sem": result.returns.std(ddof=1) / math.sqrt(episodes),
                         "max_perturbation_norm": result.perturbation_norms.max(), "seconds": result.seconds})
            print(f"sigma {sigma} B {budget} H {horizon}: attacked mean {result.returns.mean():.1f} "
                  f"({result.seconds:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def plot(out: Path, certificates: dict, strongest: pd.DataFrame) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, sigma in zip(figure.subplots(1, 2), sorted(BUDGETS)):
        bounds = {bound: certificates[(sigma, bound)] for bound in ("dkw", "clopper-pearson")}
        draw_certificate_against_attack(ax, bounds, strongest[strongest.sigma == sigma])
        frame = certificates[(sigma, "dkw")]
        ax.set_title(f"CartPole, sigma = {sigma:g}, n = {int(frame.n[0])}, alpha = {frame.alpha[0]:g}")
        ax.set_ylim(0, 205)
        ax.legend(fontsize="small", loc="upper right")
    figure.savefig(out, dpi=150)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("results/policy"))
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--attack-episodes", type=int, default=100)
    parser.add_argument("--horizons", default="5,10,25,50,100,200")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    certificates = {}
    for sigma in sorted(BUDGETS):
        for bound in ("dkw", "clopper-pearson"):
            certificates[(sigma, bound)] = pd.read_csv(certify(args.out_dir, sigma, args.episodes, bound), sep="\t")
    horizons = [int(h) for h in args.horizons.split(",")]
    attacks = pd.concat([attack(sigma, horizons, args.attack_episodes) for sigma in sorted(BUDGETS)])
    attacks.to_csv(args.out_dir / "cartpole-attack-all.tsv", sep="\t", index=False, float_format="%.4f")
    strongest = (attacks.sort_values("attacked_mean").groupby(["sigma", "budget"], as_index=False).first()
                 .sort_values(["sigma", "budget"]))
    strongest.to_csv(args.out_dir / "cartpole-attack.tsv", sep="\t", index=False, float_format="%.4f")
    plot(args.out_dir / "cartpole.png", certificates, strongest)

    lines = ["| sigma | B | certified E[R] (DKW) | certified E[R] (CP) | certified q10 / q50 (DKW) | "
             "strongest attack: mean return (H) |", "|---|---|---|---|---|---|"]
    for sigma in sorted(BUDGETS):
        dkw, cp = certificates[(sigma, "dkw")], certificates[(sigma, "clopper-pearson")]
        for i, budget in enumerate(dkw.budget):
            hit = strongest[(strongest.sigma == sigma) & np.isclose(strongest.budget, budget)].iloc[0]
            lines.append(f"| {sigma:g} | {budget:g} | {dkw.certified_return[i]:.1f} | {cp.certified_return[i]:.1f} | "
                         f"{dkw.certified_q10[i]:g} / {dkw.certified_q50[i]:g} | "
                         f"{hit.attacked_mean:.1f} ± {2 * hit.attacked_sem:.1f} ({'none' if hit.horizon == 0 else int(hit.horizon)}) |")
    clean = {s: certificates[(s, "dkw")].clean_mean[0] for s in BUDGETS}
    lines.append("")
    lines.append("Clean smoothed mean return over the n = 1000 certification episodes: "
                 + ", ".join(f"sigma {s:g}: {clean[s]:.1f}" for s in sorted(BUDGETS)) + ".")
    (args.out_dir / "cartpole.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
