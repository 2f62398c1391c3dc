#!/usr/bin/env bash
# Denoised smoothing (Carlini et al. 2023) on the Fashion-MNIST benchmark of results/fashion-mnist/:
# a DDPM denoiser and an off-the-shelf classifier (trained without noise) trained here, certified on the
# same 500 test images (every 20th) by the sequential target-radius mode (n_max = 100000, alpha = 0.001).
#
#   bash experiments/fashion-mnist/denoised.sh                   # every job below, one after another
#   bash experiments/fashion-mnist/denoised.sh denoised-0.50     # some jobs
#
# Each job runs on one torch thread; its process CPU time goes to $OUT/times.txt (/usr/bin/time), as in
# experiments/fashion-mnist/fashion_mnist.sh. An interrupted certify job continues with the same command plus --resume.
# The whole r = 1.0 run (denoised-0.50-r1.0) did not fit the shared CPU: its first 100 images are
# denoised-0.50-r1.0-first100.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the header comment is the help
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0
fi
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-results/fashion-mnist}
MODELS=$OUT/models
COST=$OUT/denoised-cost                  # the subset runs that measure the cost of fixed n against sequential
mkdir -p "$MODELS" "$COST"
# the certify options of the committed target-gaussian-0.50-r0.5 runs (their sidecars), plus the denoiser
CERT=(--data "fashion-mnist:$DATA" --skip 20 --n0 100 --n 100000 --alpha 0.001 --batch 1000 --seed 0
      --threads 1 --device cpu --quiet)
DENOISED=(--model "$MODELS/clean.pt" --denoiser "$MODELS/ddpm")

job() {
  case "$1" in
    # the off-the-shelf classifier: the benchmark's recipe (30 epochs SGD) on clean images
    train-clean)       robustcert train --data "fashion-mnist:$DATA" --epochs 30 --lr 0.1 --seed 0 --threads 1 --device cpu \
                         --sigma 0 --batch 256 --out "$MODELS/clean.pt" --quiet ;;
    # the denoiser: DDPM epsilon prediction on t within 1 +- 0.25 of t*(0.5) = 259, i.e. 194..324
    train-ddpm)        robustcert train-denoiser --data "fashion-mnist:$DATA" --sigma 0.5 --steps 2000 --batch 128 \
                         --threads 1 --device cpu --quiet --out "$MODELS/ddpm" ;;
    # the main run: is each image certified at r = 0.5? (sequential target-radius mode)
    denoised-0.50)     robustcert certify "${DENOISED[@]}" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 0.5 \
                         --out "$OUT/denoised-0.50.tsv" ;;
    denoised-0.50-r1.0) robustcert certify "${DENOISED[@]}" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 1.0 \
                         --out "$OUT/denoised-0.50-r1.0.tsv" ;;
    denoised-0.50-r1.0-first100) robustcert certify "${DENOISED[@]}" --sigma 0.5 "${CERT[@]}" --max 100 --sequential \
                         --target-radius 1.0 --out "$OUT/denoised-0.50-r1.0-first100.tsv" ;;
    # the same classifier without the denoiser: what the denoiser adds
    noiseless-0.50)    robustcert certify --model "$MODELS/clean.pt" --sigma 0.5 "${CERT[@]}" --sequential --target-radius 0.5 \
                         --out "$OUT/noiseless-0.50.tsv" ;;
    noiseless-0.50-r1.0) robustcert certify --model "$MODELS/clean.pt" --sigma 0.5 "${CERT[@]}" --sequential \
                         --target-radius 1.0 --out "$OUT/noiseless-0.50-r1.0.tsv" ;;
    # cost on a subset: fixed n (CERTIFY, n = 10000 on the first 4 images; CPU time is linear in the samples)
    # against the sequential run's options on the first 20 images
    cost-fixed)        robustcert certify "${DENOISED[@]}" --sigma 0.5 "${CERT[@]}" --max 4 --n 10000 \
                         --out "$COST/fixed-n10000-first4.tsv" ;;
    cost-sequential)   robustcert certify "${DENOISED[@]}" --sigma 0.5 "${CERT[@]}" --max 20 --sequential --target-radius 0.5 \
                         --out "$COST/sequential-r0.5-first20.tsv" ;;
    speed)             python experiments/fashion-mnist/denoiser_speed.py --out "$OUT/denoiser_speed.md" ;;
    report)            python experiments/fashion-mnist/fashion_mnist_report.py --out-dir "$OUT" ;;
    *) echo "unknown job $1" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = "--one" ]; then job "$2"; exit; fi
ALL=(train-clean train-ddpm denoised-0.50 denoised-0.50-r1.0-first100 noiseless-0.50 noiseless-0.50-r1.0 cost-fixed
     cost-sequential speed report)
for name in "${@:-${ALL[@]}}"; do
  echo "== $name ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  /usr/bin/time -f "$name: %U s user, %S s system, %e s wall" -a -o "$OUT/times.txt" bash "$0" --one "$name"
done
