#!/usr/bin/env bash
# All GPU checks of the project in one prepared run, for a short lease on one CUDA GPU (about 9 minutes in all).
# Needs torch, triton, timm, transformers, pytest on that machine (not hydra, omegaconf, wandb or datasets: nothing
# here imports them); the package is used from the checkout (PYTHONPATH), so nothing is installed.
#
#   OUT=/some/dir bash scripts/device_check.sh          # results: $OUT/summary.txt + $OUT/device_check.tar.gz
#   QUICK=1 OUT=/tmp/x bash scripts/device_check.sh     # smoke run of the script itself on a CPU (tiny shapes)
#
# Two files come back (a lease returns at most 8): summary.txt (environment, each step's exit status, time and the
# tail of its output) and device_check.tar.gz (every step's full output, JSON and PNG files).
# Steps, each with its own time limit so that one slow step cannot eat the others (seconds):
#   1. environment (GPU, driver, versions)                                         env.txt
#   2. pytest: the Triton kernels against float64 on CUDA, torch.compile, tile/chunk choice  pytest_gpu.txt (210)
#   3. bench_attention: K1-K5 vs SDPA (each backend), the PyTorch path, fla if present,
#      the short-L tile/chunk crossover                                              bench_attention.* (240)
#   4. bench_train_throughput: ViT tiny/small and BERT base vs their softmax twins     train_throughput.* (90)
#   5. bench_resolution: inference time and memory against resolution, per form      resolution.*      (60)
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:?set OUT to the folder for the results}
mkdir -p "$DEST"
OUT=$(mktemp -d)  # the steps write here; packed into $DEST at the end
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
QUICK=${QUICK:-0}
status=0

step() {  # step NAME LIMIT_S CMD...: run with a time limit, keep the output, remember failures
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
    [ $rc -eq 0 ] || status=1
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    python - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("triton", "timm", "transformers", "lightning", "fla"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(name, "not importable:", type(e).__name__)
EOF
} > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"

if [ "$QUICK" = 1 ]; then
    step pytest_gpu 210 python -m pytest -q -p no:cacheprovider -m gpu tests/test_triton.py tests/test_triton_tile.py
    step bench_attention 240 python scripts/bench_attention.py --quick --out "$OUT/bench_attention.json"
    step train_throughput 90 python scripts/bench_train_throughput.py --quick --out-dir "$OUT"
    step resolution 60 python scripts/bench_resolution.py --quick --out-dir "$OUT"
else
    # every Triton test on the GPU (the default ones then run on CUDA too: torch.compile with inductor, every decay,
    # padding, odd L, head dims, dtypes) plus the gpu-marked real-size ones
    step pytest_gpu 210 python -m pytest -q -p no:cacheprovider -m "gpu or not slow" -x tests/test_triton.py \
        tests/test_triton_tile.py
    step bench_attention 240 python scripts/bench_attention.py --accuracy --out "$OUT/bench_attention.json"
    step train_throughput 90 python scripts/bench_train_throughput.py --vit-sizes tiny small --bert-sizes base \
        --variants lion-lit lion-d lion-s --rounds 2 --out-dir "$OUT"
    step resolution 60 python scripts/bench_resolution.py --size small --variants s --resolutions 224 512 1024 \
        --out-dir "$OUT"
fi
echo "all steps done, status $status" | tee -a "$OUT/summary.txt"
cp "$OUT/summary.txt" "$DEST/summary.txt"
tar czf "$DEST/device_check.tar.gz" -C "$OUT" .
echo "written: $DEST/summary.txt, $DEST/device_check.tar.gz"
exit $status
