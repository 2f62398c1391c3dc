#!/usr/bin/env bash
# GPU check of the certification engine (issue 8): one script, results into results/bench/.
#
#   experiments/bench/gpu_check.sh            # on a CUDA machine, about 8 minutes on one H100
#   experiments/bench/gpu_check.sh --quick    # about 3 minutes (n = 10000, projections to n = 100000)
#   experiments/bench/gpu_check.sh --dry-run  # on CPU: runs every python step at tiny sizes into a temp dir
#
# Steps:
#   1. the CUDA tests (pytest marker `cuda`: no host sync in the sampling loop, OOM retry on a real
#      CUDA out-of-memory error, --batch auto from free memory, bf16 + channels_last, compile,
#      a one-process nccl torchrun run equal to the plain run);
#   2. the benchmark at fp32 (default layout), with the engine-option sweep and cross-input packing;
#   3. the benchmark with bf16 + channels_last ((c) stays the published fp32 loop, so (b)/(c) is the
#      "bf16 + channels_last against the published fp32 loop" figure);
#   4. the accuracy of the bf16/fp16 base classifiers on clean and noisy inputs;
#   5. sequential against fixed-n certify_batch, batch 1000 and 10000 (issue 17; into results/sequential/;
#      it replaces experiments/sequential/sequential_gpu.py, batch 10000 only, whose output results/bench cites);
#   6. the time of the floating-point-sound mode against the standard mode ($OUT/sound_float/time-cuda-*.md);
#   7. pretrained models of the zoo sources (issue 23; random weights, their preprocessing inside): the
#      benchmark at fp32 and bf16 + channels_last, and their bf16/fp16 agreement ($OUT/zoo/).
# Targets (issue 8): (b)/(a) >= 0.97 at fp32; bf16 + channels_last (b) >= 2x (c);
# cifar_resnet110 at n = 100000 under 0.5 s per image; resnet50 at 224 under 3 s per image.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the header comment is the help
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0
fi
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

QUICK=""
DRY=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    --dry-run) DRY=1 ;;
    *) echo "usage: $0 [--quick] [--dry-run]" >&2; exit 2 ;;
  esac
done

if [ "$DRY" = 1 ]; then
  OUT="$(mktemp -d)"
  echo "dry run on CPU into $OUT"
  python -m pytest -q -m cuda tests/test_engine_cuda.py -p no:cacheprovider || [ $? -eq 5 ]
  python -m robustcert bench --device cpu --quick --models digits --n 500 --reps 1 --sweep --out-dir "$OUT"
  python -m robustcert bench --device cpu --quick --models digits --n 500 --reps 1 --precision bf16 \
    --channels-last --no-packing --out-dir "$OUT"
  python experiments/bench/precision_accuracy.py --device cpu --quick --out-dir "$OUT"
  python experiments/sequential/sequential_throughput.py --device cpu --images 4 --n 2000 --reps 1 \
    --out "$OUT/sequential_throughput.md"
  python experiments/sound_float/sound_float_cost.py --part time --device cpu --n 200 --reps 1 --images 1 --batch 100 \
    --out-dir "$OUT"
  python -m robustcert bench --device cpu --quick --models timm:test_vit --n 8 --reps 1 --no-packing --out-dir "$OUT/zoo"
  python experiments/bench/precision_accuracy.py --device cpu --zoo timm:test_vit --inputs 2 --out-dir "$OUT/zoo"
  ls "$OUT"
  exit 0
fi

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
OUT=${GPU_CHECK_OUT:-results/bench}
mkdir -p "$OUT"
LOG="$OUT/gpu_check$( [ -n "$QUICK" ] && echo -quick ).log"
{
  echo "# experiments/bench/gpu_check.sh $* ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$LOG"

# 1. CUDA tests (status kept, the other steps still run)
set +e
python -m pytest -q -m cuda tests/test_engine_cuda.py -p no:cacheprovider 2>&1 | tee -a "$LOG"
TESTS=${PIPESTATUS[0]}
set -e

# 2-3. benchmark: fp32 (with the option sweep), then bf16 + channels_last
python -m robustcert bench --device cuda $QUICK --sweep --out-dir "$OUT" 2>&1 | tee -a "$LOG"
python -m robustcert bench --device cuda $QUICK --precision bf16 --channels-last --no-packing --out-dir "$OUT" \
  2>&1 | tee -a "$LOG"

# 4. accuracy of the reduced-precision base classifiers
python experiments/bench/precision_accuracy.py --device cuda $QUICK --out-dir "$OUT" 2>&1 | tee -a "$LOG"

# 5. sequential against fixed-n certification time (issue 17)
python experiments/sequential/sequential_throughput.py --device cuda $( [ -n "$QUICK" ] && echo "--n 10000" ) \
  --out results/sequential/throughput_cuda$( [ -n "$QUICK" ] && echo -quick ).md 2>&1 | tee -a "$LOG"

# 6. cost of the floating-point-sound mode (issue 14): sound / standard time per image
python experiments/sound_float/sound_float_cost.py --part time --device cuda --n "$( [ -n "$QUICK" ] && echo 10000 || echo 100000 )" \
  --reps 3 --out-dir "$OUT/sound_float" 2>&1 | tee -a "$LOG"

# 7. pretrained zoo models (issue 23)
ZOO=torchvision:resnet50,timm:vit_small_patch16_224,timm:convnext_tiny
python -m robustcert bench --device cuda $QUICK --models $ZOO --no-packing --out-dir "$OUT/zoo" 2>&1 | tee -a "$LOG"
python -m robustcert bench --device cuda $QUICK --models $ZOO --precision bf16 --channels-last --no-packing \
  --out-dir "$OUT/zoo" 2>&1 | tee -a "$LOG"
python experiments/bench/precision_accuracy.py --device cuda --zoo $ZOO --out-dir "$OUT/zoo" 2>&1 | tee -a "$LOG"

echo "CUDA tests exit status: $TESTS" | tee -a "$LOG"
exit "$TESTS"
