#!/usr/bin/env bash
# The Fashion-MNIST benchmark of results/fashion-mnist/: base models trained by `robustcert train`,
# certified by `robustcert certify` on 500 test images (every 20th), n0 = 100, n = 100000, alpha = 0.001.
#
#   bash experiments/fashion-mnist/fashion_mnist.sh                 # every job below, one after another
#   bash experiments/fashion-mnist/fashion_mnist.sh train-gaussian-0.50 cohen-gaussian-0.50   # some jobs
#   bash experiments/fashion-mnist/fashion_mnist.sh table           # rebuild the tables from the TSVs
#
# DATA: the folder with the four IDX files (Debian: apt install dataset-fashion-mnist).
# Each job is single-threaded; two lanes can run side by side (the results README says which did).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the header comment is the help
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0
fi
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-results/fashion-mnist}
MODELS=$OUT/models                      # checkpoints (not committed; their .json sidecars are)
mkdir -p "$MODELS"
TRAIN=(--data "fashion-mnist:$DATA" --epochs 30 --lr 0.1 --seed 0 --threads 1 --device cpu)
CERT=(--data "fashion-mnist:$DATA" --skip 20 --n0 100 --n 100000 --alpha 0.001 --batch 1000 --seed 0
      --threads 1 --device cpu --quiet)
# SmoothAdv PGD (Salman et al. 2019) + PREDICT at x_adv on 100 test images (every 100th: a subset of the
# certify runs' every-20th images): empirical robust accuracy, an upper bound (results/fashion-mnist/attack.md)
ATTACK=(--data "fashion-mnist:$DATA" --skip 100 --steps 20 --m 32 --n 10000 --alpha 0.001 --batch 1000 --seed 0
        --threads 1 --device cpu --quiet)

job() {
  case "$1" in
    # Gaussian augmentation (Cohen et al. 2019): one noisy copy per image, 256 images per step
    train-gaussian-0.25)    robustcert train "${TRAIN[@]}" --sigma 0.25 --batch 256 --out "$MODELS/gaussian-0.25.pt" ;;
    train-gaussian-0.50)    robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 256 --out "$MODELS/gaussian-0.50.pt" ;;
    # consistency regularization (Jeong and Shin 2020), their MNIST setting: M = 2, lambda = 20, eta = 0.5;
    # 128 images x 2 copies per step (their loader batch of 256 split into M chunks)
    train-consistency-0.25) robustcert train "${TRAIN[@]}" --sigma 0.25 --batch 128 --consistency 20 --out "$MODELS/consistency-0.25.pt" ;;
    train-consistency-0.50) robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 128 --consistency 20 --out "$MODELS/consistency-0.50.pt" ;;
    # control: the consistency run's steps and noisy copies without the regularizer
    train-gaussian2-0.50)   robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 128 --noise-copies 2 --out "$MODELS/gaussian2-0.50.pt" ;;
    # dual smoothing branch models (Xia et al. 2024): checkerboard sub-images 1x28x14, Gaussian augmentation
    train-dual-a-0.50)      robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 256 --dual-split checkerboard --branch a --out "$MODELS/dual-a-0.50.pt" ;;
    train-dual-b-0.50)      robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 256 --dual-split checkerboard --branch b --out "$MODELS/dual-b-0.50.pt" ;;

    cohen-gaussian-0.25)    robustcert certify --model "$MODELS/gaussian-0.25.pt" --sigma 0.25 "${CERT[@]}" --out "$OUT/cohen-gaussian-0.25.tsv" ;;
    cohen-gaussian-0.50)    robustcert certify --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/cohen-gaussian-0.50.tsv" ;;
    cohen-consistency-0.25) robustcert certify --model "$MODELS/consistency-0.25.pt" --sigma 0.25 "${CERT[@]}" --out "$OUT/cohen-consistency-0.25.tsv" ;;
    cohen-consistency-0.50) robustcert certify --model "$MODELS/consistency-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/cohen-consistency-0.50.tsv" ;;
    cohen-gaussian2-0.50)   robustcert certify --model "$MODELS/gaussian2-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/cohen-gaussian2-0.50.tsv" ;;
    # sequential certification: stop when more samples (up to n = 100000) cannot add more than 0.05 to the radius
    sequential-gaussian-0.50)    robustcert certify --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --tolerance 0.05 --out "$OUT/sequential-gaussian-0.50.tsv" ;;
    sequential-consistency-0.50) robustcert certify --model "$MODELS/consistency-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --tolerance 0.05 --out "$OUT/sequential-consistency-0.50.tsv" ;;
    # sequential certification, target-radius mode: stop once "radius >= r" is decided (certified or not certifiable)
    target-gaussian-0.50-r0.5)     robustcert certify --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 0.5 --out "$OUT/target-gaussian-0.50-r0.5.tsv" ;;
    target-gaussian-0.50-r1.0)     robustcert certify --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 1.0 --out "$OUT/target-gaussian-0.50-r1.0.tsv" ;;
    target-consistency-0.50-r0.5)  robustcert certify --model "$MODELS/consistency-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 0.5 --out "$OUT/target-consistency-0.50-r0.5.tsv" ;;
    target-consistency-0.50-r1.0)  robustcert certify --model "$MODELS/consistency-0.50.pt" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 1.0 --out "$OUT/target-consistency-0.50-r1.0.tsv" ;;
    # Lipschitz-variance-margin smoothing (Delattre et al. 2024), default grid, choice on the n0 samples
    lvm-gaussian-0.50)      robustcert certify --method lvm --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/lvm-gaussian-0.50.tsv" ;;
    dual-0.50)              robustcert certify --method dual --model "$MODELS/dual-a-0.50.pt" --model2 "$MODELS/dual-b-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/dual-0.50.tsv" ;;

    # SmoothAdv (Salman et al. 2019): each step trains on the PGD adversarial example of the soft smoothed
    # classifier (eps 0.5, 2 steps, M = 2 noise draws shared by the attack and the training loss)
    train-smoothadv-0.50)   robustcert train "${TRAIN[@]}" --sigma 0.5 --batch 128 --adversarial 0.5 --attack-steps 2 --noise-copies 2 --out "$MODELS/smoothadv-0.50.pt" ;;
    cohen-smoothadv-0.50)   robustcert certify --model "$MODELS/smoothadv-0.50.pt" --sigma 0.5 "${CERT[@]}" --out "$OUT/cohen-smoothadv-0.50.tsv" ;;
    # the same at eps 0.5 with a 5x longer, 4x wider attack: does a stronger attack break more?
    attack-strong-gaussian-0.50-eps0.5)
      robustcert attack --model "$MODELS/gaussian-0.50.pt" --sigma 0.5 --eps 0.5 "${ATTACK[@]}" --steps 100 --m 128 --out "$OUT/$1.tsv" ;;
    attack-*-0.50-eps*)     # attack-MODEL-0.50-epsE: MODEL in gaussian, consistency, smoothadv
      model=${1#attack-}; model=${model%-0.50-eps*}; eps=${1##*-eps}
      robustcert attack --model "$MODELS/$model-0.50.pt" --sigma 0.5 --eps "$eps" "${ATTACK[@]}" --out "$OUT/$1.tsv" ;;
    attack-summary)         python experiments/fashion-mnist/fashion_mnist_attack_report.py --out-dir "$OUT" ;;

    # diffusion denoise-then-classify: its measured CPU cost instead of a run (results/fashion-mnist/diffusion_cost.md)
    diffusion-cost)         python experiments/fashion-mnist/fashion_mnist_ddpm_cost.py --out "$OUT/diffusion_cost.md" ;;
    report)                 python experiments/fashion-mnist/fashion_mnist_report.py --out-dir "$OUT" ;;

    table)
      robustcert table "$OUT"/cohen-gaussian-0.25.tsv "$OUT"/cohen-consistency-0.25.tsv --radii 0:1:0.25 \
        --labels "gaussian,consistency" --out "$OUT/table-0.25.md"
      robustcert table "$OUT"/cohen-gaussian-0.50.tsv "$OUT"/cohen-gaussian2-0.50.tsv "$OUT"/cohen-consistency-0.50.tsv \
        "$OUT"/sequential-gaussian-0.50.tsv "$OUT"/sequential-consistency-0.50.tsv "$OUT"/lvm-gaussian-0.50.tsv \
        "$OUT"/dual-0.50.tsv "$OUT"/cohen-smoothadv-0.50.tsv --radii 0:2:0.25 \
        --labels "cohen gaussian,cohen gaussian M=2,cohen consistency,sequential gaussian,sequential consistency,lvm gaussian,dual gaussian,cohen smoothadv" \
        --out "$OUT/table-0.50.md"
      robustcert plot "$OUT"/cohen-gaussian-0.50.tsv "$OUT"/cohen-consistency-0.50.tsv "$OUT"/lvm-gaussian-0.50.tsv \
        "$OUT"/dual-0.50.tsv --labels "cohen gaussian,cohen consistency,lvm gaussian,dual gaussian" \
        --title "Fashion-MNIST, sigma 0.5, 500 test images" --out "$OUT/curves-0.50.png" ;;
    *) echo "unknown job $1" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = "--one" ]; then job "$2"; exit; fi
ALL=(train-gaussian-0.25 train-gaussian-0.50 train-consistency-0.25 train-consistency-0.50 train-gaussian2-0.50
     train-dual-a-0.50 train-dual-b-0.50 cohen-gaussian-0.25 cohen-gaussian-0.50 cohen-consistency-0.25
     cohen-consistency-0.50 cohen-gaussian2-0.50 sequential-gaussian-0.50 sequential-consistency-0.50
     target-gaussian-0.50-r0.5 target-gaussian-0.50-r1.0 target-consistency-0.50-r0.5 target-consistency-0.50-r1.0
     lvm-gaussian-0.50 dual-0.50 diffusion-cost table report
     attack-gaussian-0.50-eps0.25 attack-gaussian-0.50-eps0.5 attack-gaussian-0.50-eps1.0
     attack-consistency-0.50-eps0.25 attack-consistency-0.50-eps0.5 attack-consistency-0.50-eps1.0
     train-smoothadv-0.50 cohen-smoothadv-0.50
     attack-smoothadv-0.50-eps0.25 attack-smoothadv-0.50-eps0.5 attack-smoothadv-0.50-eps1.0
     attack-strong-gaussian-0.50-eps0.5 attack-summary)
for name in "${@:-${ALL[@]}}"; do
  echo "== $name ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  # process CPU time next to wall time: the machine is shared, so wall time alone says little
  /usr/bin/time -f "$name: %U s user, %S s system, %e s wall" -a -o "$OUT/times.txt" bash "$0" --one "$name"
done
