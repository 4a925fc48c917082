#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU: builds the cuda `hier`, runs the parity,
# causality and cached-generation tests on the cuda backend, then `hier bench` with the enwik8
# preset's model (dim 1024, depth 8, seq_len 2048, hierarchies (1,2), windows (32,64)) in train
# and generate modes, printing tokens/s and model FLOPs utilisation against PEAK_TFLOPS.
#
#   tools/gpu_check.sh PEAK_TFLOPS [TRAIN_BATCH]
#
# PEAK_TFLOPS: the GPU's peak for the arithmetic hier's f32 model runs in, e.g. for an H200
# SXM 67 (f32 on the CUDA cores), 495 (TF32 tensor cores, dense) or 989 (bf16, dense).
# TRAIN_BATCH: sequences per training step (default 2, the preset's micro-batch).
# Logs and the bench rows as JSON go to target/gpu-check/.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "gpu_check: $*" >&2
    exit 1
}

[ $# -ge 1 ] || fail "usage: tools/gpu_check.sh PEAK_TFLOPS [TRAIN_BATCH] (H200 SXM: 67 f32, 495 tf32, 989 bf16)"
peak=$1
batch=${2:-2}
[[ $peak =~ ^[0-9]+([.][0-9]+)?$ ]] && [ "$peak" != 0 ] || fail "PEAK_TFLOPS must be a positive number, not '$peak'"
[[ $batch =~ ^[1-9][0-9]*$ ]] || fail "TRAIN_BATCH must be a positive whole number, not '$batch'"

# the GPU and its driver
command -v nvidia-smi >/dev/null || fail "no NVIDIA driver (nvidia-smi not found): this check needs an NVIDIA GPU"
gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null) \
    || fail "nvidia-smi finds no usable GPU (is the driver loaded? nvidia-smi says: $(nvidia-smi 2>&1 | head -n 1))"
[ -n "$gpus" ] || fail "nvidia-smi lists no GPU"
# cubecl-cuda compiles its kernels at run time with NVRTC, from the CUDA toolkit
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so' \
    && ! compgen -G "${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}/lib64/libnvrtc.so*" >/dev/null; then
    fail "no CUDA toolkit: libnvrtc.so is neither known to ldconfig nor in \${CUDA_HOME:-/usr/local/cuda}/lib64 (install the CUDA toolkit, or set CUDA_HOME)"
fi
command -v cargo >/dev/null || fail "cargo not found (install Rust: https://rustup.rs)"

out=target/gpu-check
mkdir -p "$out"
echo "== GPU: $gpus"
echo "== $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') $(cargo --version)"

step() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "== $name"
    "$@" 2>&1 | tee "$out/$name.log"
    echo "   ($((SECONDS - t0)) s)"
}

step build cargo build --release --locked -p hier-cli --no-default-features --features cuda
# only the cuda modules of these targets: the CPU ones are CI's
step tests cargo test --release --locked -p hier-model --features test-cuda \
    --test parity --test causality --test cache -- cuda

hier=target/release/hier
bench() {
    local name=$1
    shift
    step "bench-$name" "$hier" bench --preset enwik8 --peak-tflops "$peak" --json "$@"
    grep '^{' "$out/bench-$name.log" >"$out/bench-$name.jsonl" \
        || fail "hier bench $name wrote no result (see $out/bench-$name.log)"
}
bench train --mode train --batch "$batch" --steps 10 --warmup 3
bench generate --mode generate --batch 1 --steps 256 --warmup 0

echo "== summary (model FLOPs utilisation against $peak TFLOP/s)"
cat "$out"/bench-*.jsonl | while IFS= read -r row; do
    field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$row"; }
    printf '%-20s %12.1f tokens/s %10.3f TFLOP/s  MFU %6.2f%%\n' \
        "$(field mode | tr -d '"')" "$(field tokens_per_s)" \
        "$(awk -v f="$(field flops_per_s)" 'BEGIN { print f / 1e12 }')" \
        "$(awk -v u="$(field mfu)" 'BEGIN { print 100 * u }')"
done
echo "== logs and JSON rows in $out/"
