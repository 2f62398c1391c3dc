"""Empirical against certified robust accuracy on Fashion-MNIST, from the files of fashion_mnist.sh.

    python experiments/fashion-mnist/fashion_mnist_attack_report.py --out-dir results/fashion-mnist   # attack-table.md

For each model at sigma 0.5 and each attack radius eps: the attack TSV (``attack-MODEL-0.50-epsE.tsv``,
SmoothAdv PGD then PREDICT at x_adv, 100 test images, every 100th) beside the certify TSV
(``cohen-MODEL-0.50.tsv``, every 20th image, n = 100000) restricted to the same images. Columns:
certified accuracy at r = eps (a lower bound on robust accuracy at eps, holding with probability
1 - alpha per image), empirical robust accuracy (an upper bound: what the attack did not break),
the gap between them, PREDICT's clean accuracy and abstention at x_adv, and ``violations``:
images certified correct at R >= eps whose attacked PREDICT returned another class (each is a bug
or a Monte Carlo failure at rate alpha; expected 0).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustcert.results import attack_summary, read_results

MODELS = ("gaussian", "consistency", "smoothadv")
EPSILONS = ("0.25", "0.5", "1.0")


def rows(out_dir: Path) -> list[str]:
    lines = ["| model | eps | images | certified acc at r = eps | empirical robust acc | gap | clean acc (PREDICT) "
             "| abstain at x_adv | mean l2 distance | violations |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in MODELS:
        certify_path = out_dir / f"cohen-{model}-0.50.tsv"
        if not certify_path.is_file():
            continue
        certified = read_results(certify_path).set_index("idx")
        for eps in EPSILONS:
            attack_path = out_dir / f"attack-{model}-0.50-eps{eps}.tsv"
            if not attack_path.is_file():
                continue
            attack = read_results(attack_path)
            missing = set(attack["idx"]) - set(certified.index)
            if missing:
                raise SystemExit(f"{attack_path}: images {sorted(missing)[:5]} are not in {certify_path}")
            same = certified.loc[attack["idx"]]
            certified_at_eps = ((same["correct"] == 1) & (same["radius"] >= float(eps))).to_numpy()
            broken = ((attack["predict_adv"] != attack["label"]) & (attack["predict_adv"] != -1)).to_numpy()
            summary = attack_summary(attack)
            lines.append(
                f"| {model} | {eps} | {summary['rows']} | {certified_at_eps.mean():.2f} | "
                f"{summary['empirical robust accuracy']:.2f} | "
                f"{summary['empirical robust accuracy'] - certified_at_eps.mean():+.2f} | "
                f"{summary['clean accuracy']:.2f} | {summary['abstention (adv)']:.2f} | "
                f"{summary['mean distance']:.3f} | {int((certified_at_eps & broken).sum())} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("results/fashion-mnist"))
    args = parser.parse_args()
    text = "\n".join(rows(args.out_dir)) + "\n"
    (args.out_dir / "attack-table.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
