#!/usr/bin/env bash
# The figures of results/threat-models/: l1 certificates (uniform and Laplace noise), l-infinity by
# conversion, and l0 certificates (randomized ablation) on the bundled digits and on Fashion-MNIST.
#
#   bash experiments/threat-models/threat_models.sh digits-models    # train the digits models (~10 min, 1 thread)
#   bash experiments/threat-models/threat_models.sh digits           # certify on digits (~60 min on a loaded 2-core machine)
#   DEVICE=cuda bash experiments/threat-models/threat_models.sh fashion-models   # train the Fashion-MNIST models
#   DEVICE=cuda bash experiments/threat-models/threat_models.sh fashion          # certify on Fashion-MNIST (1000 images)
# (the Fashion-MNIST figures were made on one H200 GPU: a few minutes; on a CPU, DEVICE=cpu SKIP=40
# certifies 250 images in about 25 CPU-minutes per run)
#   bash experiments/threat-models/threat_models.sh tables           # the tables of results/threat-models/README.md
#   bash experiments/threat-models/threat_models.sh plots            # its figures
#
# Models and the Fashion-MNIST npz go to tmp/threat-models/ (ignored by git); result files to
# results/threat-models/. One torch thread throughout (a shared 2-core machine).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the header comment is the help
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0
fi
export OMP_NUM_THREADS=1
MODELS=tmp/threat-models
OUT=results/threat-models
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}   # Debian's dataset-fashion-mnist
DEVICE=${DEVICE:-cpu}
SKIP=${SKIP:-10}   # Fashion-MNIST: every SKIP-th test image
mkdir -p "$MODELS" "$OUT/digits" "$OUT/fashion-mnist"
COMMON=(--n0 100 --n 10000 --alpha 0.001 --batch 1000 --seed 0 --threads 1 --quiet)

certify() {  # certify OUT.tsv ARGS...: an interrupted (or finished) run is resumed
    local out=$1; shift
    local resume=()
    if [[ -s $out ]]; then resume=(--resume); fi
    echo "+ robustcert certify $* --out $out"
    python -m robustcert certify "$@" --out "$out" "${resume[@]}"
}

case ${1:-} in
digits-models)
    for k in 8 16 32; do
        python experiments/weights/train_ablation.py --data digits --ablation $k --out $MODELS/digits-ablation-k$k.pt
    done
    for noise in laplace uniform; do for s in 0.25 0.50; do
        python experiments/weights/train_ablation.py --data digits --noise $noise --sigma $s --out $MODELS/digits-$noise-$s.pt
    done; done ;;
digits)
    D=(--data digits "${COMMON[@]}" --device cpu)
    # the l2 runs of the same models, same settings and samples: results/demo/digits-0.25.tsv, digits-0.50.tsv
    for s in 0.25 0.50; do
        for noise in laplace uniform; do
            certify $OUT/digits/gaussian-trained-$s-$noise.tsv --model bundled:digits-$s --sigma $s --noise $noise "${D[@]}"
            certify $OUT/digits/$noise-trained-$s-$noise.tsv --model $MODELS/digits-$noise-$s.pt --sigma $s --noise $noise "${D[@]}"
        done
    done
    for k in 8 16; do  # k = 32 certifies no pixel: Delta(1) = 32/64 = 1/2, and pA - 1/2 > 1/2 is impossible
        certify $OUT/digits/ablation-k$k.tsv --method ablation --keep $k --model $MODELS/digits-ablation-k$k.pt "${D[@]}"
    done ;;
fashion-models)
    python experiments/weights/train_ablation.py --data fashion-mnist:$FASHION --ablation 45 --epochs 10 --device $DEVICE --out $MODELS/fashion-ablation-k45.pt \
        --export-test $MODELS/fashion-test.npz
    for noise in gaussian laplace uniform; do
        python experiments/weights/train_ablation.py --data fashion-mnist:$FASHION --noise $noise --sigma 0.5 --epochs 10 --device $DEVICE \
            --out $MODELS/fashion-$noise-0.50.pt
    done ;;
fashion)
    F=(--data npz:$MODELS/fashion-test.npz --skip $SKIP "${COMMON[@]}" --device $DEVICE)
    for noise in gaussian laplace uniform; do
        certify $OUT/fashion-mnist/$noise-0.50.tsv --model $MODELS/fashion-$noise-0.50.pt --sigma 0.5 --noise $noise "${F[@]}"
    done
    certify $OUT/fashion-mnist/ablation-k45.tsv --method ablation --keep 45 --model $MODELS/fashion-ablation-k45.pt "${F[@]}" ;;
tables)
    T=(--format markdown --no-mark)
    for s in 0.25 0.50; do
        python -m robustcert table $OUT/digits/{gaussian-trained,laplace-trained}-$s-laplace.tsv \
            $OUT/digits/{gaussian-trained,uniform-trained}-$s-uniform.tsv --radii 0:1.5:0.25 "${T[@]}"
        python -m robustcert table results/demo/digits-$s.tsv $OUT/digits/*-trained-$s-{laplace,uniform}.tsv \
            --norm linf --radii 0,0.0025,0.005,0.01,0.025,0.05,0.075,0.1 "${T[@]}"
    done
    python -m robustcert table $OUT/digits/ablation-k{8,16}.tsv --radii 0:5:1 "${T[@]}"
    python -m robustcert table $OUT/fashion-mnist/{laplace,uniform}-0.50.tsv --radii 0:3:0.5 "${T[@]}"
    python -m robustcert table $OUT/fashion-mnist/gaussian-0.50.tsv --radii 0:2:0.25 "${T[@]}"
    python -m robustcert table $OUT/fashion-mnist/{gaussian,laplace,uniform}-0.50.tsv --norm linf \
        --radii 0,0.001,0.002,0.01,0.02,0.03,0.04,0.05 "${T[@]}"
    python -m robustcert table $OUT/fashion-mnist/ablation-k45.tsv --radii 0:10:1 "${T[@]}" ;;
plots)
    python -m robustcert plot $OUT/digits/{gaussian-trained,laplace-trained}-0.50-laplace.tsv \
        $OUT/digits/{gaussian-trained,uniform-trained}-0.50-uniform.tsv --out $OUT/digits-l1.png --title "digits, sigma 0.5"
    python -m robustcert plot $OUT/digits/ablation-k{8,16}.tsv --out $OUT/digits-l0.png --title "digits (64 pixels)"
    python -m robustcert plot $OUT/fashion-mnist/{laplace,uniform}-0.50.tsv --out $OUT/fashion-l1.png \
        --title "Fashion-MNIST, sigma 0.5"
    python -m robustcert plot $OUT/fashion-mnist/ablation-k45.tsv --out $OUT/fashion-l0.png \
        --title "Fashion-MNIST (784 pixels), keep 45" ;;
*)
    sed -n 2,13p "$0"; exit 2 ;;
esac
