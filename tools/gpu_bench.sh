#!/usr/bin/env bash
# GPU benchmark of issue 4: the Rust reverse-segmentation path (OnnxReverse through ort + ONNX Runtime's CUDA
# execution provider) on the exported decomposed fp16 UniverSeg graph, next to the PyTorch reference of the
# same architecture and weights. Prints ms per query at S=64 and the time of one full-protocol pseudo metric
# (172 queries x 6 repetitions), plus correctness checks. Run from the repo root on an x86-64 NVIDIA machine
# whose `python3` has PyTorch (CUDA) and the NVIDIA CUDA 13 / cuDNN 9 pip libraries:
#
#     bash tools/gpu_bench.sh     # about 2-3 minutes (every step is capped; 9.5 at worst); log also in $OUT/gpu_bench.log
#
# Nothing is built or downloaded there; what it uses is prepared on a build machine (all in folders that
# .gitignore's /.gw*/ already ignores):
#   .gwbench/gpu_universeg        cargo build --release --bench gpu_universeg; cp target/release/deps/
#                                 gpu_universeg-<hash> .gwbench/gpu_universeg; strip it
#   .gwbench/universeg_decomposed_float16.onnx   tools/export_universeg.py --weights <npz> --form decomposed
#                                 --dtype float16 (weights from tools/torch_universeg_bench.py --write-weights)
#   .gwbench/SHA256SUMS           sha256 of ortcuda.zip (and of the other carried files)
#   .gwbench/stub/libcurand.so.10 `echo 'void spe_curand_stub(void) {}' | gcc -shared -fPIC
#                                 -Wl,-soname,libcurand.so.10 -o libcurand.so.10 -x c -` (used only when absent)
#   ortcuda.zip.part1..5          onnxruntime-gpu 1.31.1's three libraries (libonnxruntime.so.1.31.1,
#                                 libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so, under
#                                 onnxruntime/capi/ as in the wheel), zipped and cut with `split -n 5`; looked
#                                 for in .gwbench/, /tmp/parts/ and .gw1/ .. .gw5/. Made with: pip download
#                                 --no-deps --only-binary=:all: --python-version 3.12 --platform
#                                 manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1; unzip those three members;
#                                 python3 zipfile (deflate) -> ortcuda.zip; split -n 5 --numeric-suffixes=1 -a 1
#   universeg_seed0.npz, universeg_decomposed_float32.onnx, universeg_naive_float32.onnx  (optional, same
#                                 places): the weights for PyTorch and two comparison graphs; when missing they
#                                 are made here (needs numpy + onnx), else those steps are skipped.
# Environment: PYTHON (default python3), GPU_BENCH_PROVIDER (default cuda; `cpu` with SPE_ORT_LIB set to a CPU
# libonnxruntime and GPU_BENCH_QUICK=1 is a dry run of the plumbing on a machine without GPU).
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
PROVIDER=${GPU_BENCH_PROVIDER:-cuda}
QUICK=${GPU_BENCH_QUICK:-0}
WORK=/tmp/gpubench
ORTDIR=/tmp/ortgpu
mkdir -p "$WORK"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    exec > >(tee "$OUT/gpu_bench.log") 2>&1
fi
T0=$(date +%s)
say() { printf '\n=== [%4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
find_art() {
    local d
    for d in .gwbench /tmp/parts .gw1 .gw2 .gw3 .gw4 .gw5; do
        if [ -f "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    return 1
}

say "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not available"
"$PY" -c 'import sys, numpy, torch; print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| torch", torch.__version__, "cuda", torch.version.cuda, "| cudnn", torch.backends.cudnn.version(), "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' \
    || echo "python3 with torch: not importable"

BIN=$(find_art gpu_universeg) || { echo "FATAL: .gwbench/gpu_universeg is missing"; exit 1; }
chmod +x "$BIN" 2>/dev/null || true
F16=$(find_art universeg_decomposed_float16.onnx) || { echo "FATAL: universeg_decomposed_float16.onnx is missing"; exit 1; }

if [ "$PROVIDER" = cuda ]; then
    say "onnxruntime-gpu 1.31.1 libraries"
    LIB=$ORTDIR/onnxruntime/capi/libonnxruntime.so.1.31.1
    if [ ! -f "$LIB" ]; then
        parts=()
        for i in 1 2 3 4 5; do
            p=$(find_art "ortcuda.zip.part$i") || { echo "FATAL: ortcuda.zip.part$i not found (.gw$i/ or /tmp/parts/)"; exit 1; }
            parts+=("$p")
        done
        echo "parts: ${parts[*]}"
        cat "${parts[@]}" > "$WORK/ortcuda.zip"
        want=$(awk '$2 ~ /ortcuda.zip$/ {print $1}' .gwbench/SHA256SUMS 2>/dev/null)
        got=$(sha256sum "$WORK/ortcuda.zip" | cut -d' ' -f1)
        if [ -n "$want" ] && [ "$want" != "$got" ]; then
            echo "FATAL: ortcuda.zip checksum $got, expected $want (a part is stale or truncated)"; exit 1
        fi
        echo "ortcuda.zip sha256 $got ${want:+(matches SHA256SUMS)}"
        "$PY" -m zipfile -e "$WORK/ortcuda.zip" "$ORTDIR" || { echo "FATAL: cannot unzip"; exit 1; }
        rm -f "$WORK/ortcuda.zip"
    fi
    ls -la "$ORTDIR/onnxruntime/capi/"
    # Every folder of python3's NVIDIA pip packages that holds shared libraries (nvidia/*/lib and the like).
    NVLIBS=$("$PY" - <<'EOF'
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("-packages")])
dirs = set()
for r in roots:
    for so in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(so))
print(":".join(sorted(dirs)))
EOF
)
    # The system CUDA toolkit's folders come last: only for what the pip packages lack.
    SYSLIBS=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && SYSLIBS="$SYSLIBS:$d"
    done
    SEARCH="${NVLIBS}${SYSLIBS}"
    # libonnxruntime_providers_cuda.so lists libcurand.so.10 as NEEDED but imports no symbol from it: when no
    # real one is found, an empty stand-in with that soname (.gwbench/stub/, built with gcc) lets it load.
    if ! (IFS=:; for d in ${SEARCH#:}; do [ -e "$d/libcurand.so.10" ] && exit 0; done; exit 1) \
        && [ -e .gwbench/stub/libcurand.so.10 ]; then
        SEARCH="$SEARCH:$PWD/.gwbench/stub"
        echo "libcurand.so.10 not installed: using the empty stand-in .gwbench/stub/libcurand.so.10"
    fi
    export LD_LIBRARY_PATH="$ORTDIR/onnxruntime/capi${SEARCH:+:${SEARCH#:}}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    IFS=: read -ra dirs <<< "${SEARCH#:}"
    for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcufft.so.12 libcudnn.so.9 libnvrtc.so.13; do
        hit=""
        for d in "${dirs[@]}"; do [ -n "$d" ] && [ -e "$d/$so" ] && { hit="$d/$so"; break; }; done
        printf '  %-20s %s\n' "$so" "${hit:-MISSING}"
    done
    missing=$(ldd "$ORTDIR/onnxruntime/capi/libonnxruntime_providers_cuda.so" 2>&1 | grep 'not found' || true)
    [ -n "$missing" ] && echo "ldd libonnxruntime_providers_cuda.so, unresolved:" && echo "$missing"
    export SPE_ORT_LIB=$LIB
fi
echo "SPE_ORT_LIB=${SPE_ORT_LIB:-unset}"
export SPE_PROVIDER=$PROVIDER

# Weights and comparison graphs (optional).
NPZ=$(find_art universeg_seed0.npz) || {
    NPZ=$WORK/universeg_seed0.npz
    "$PY" tools/torch_universeg_bench.py --write-weights "$NPZ" --random-weights 0 >/dev/null 2>&1 || NPZ=""
    [ -n "$NPZ" ] && echo "made $NPZ here (not carried): the fp16 graph may hold other weights; check-onnx tells"
}
F32D=$(find_art universeg_decomposed_float32.onnx) || F32D=""
F32N=$(find_art universeg_naive_float32.onnx) || F32N=""
for form in decomposed naive; do
    v=F32D; [ $form = naive ] && v=F32N
    if [ -z "${!v}" ] && [ -n "$NPZ" ]; then
        out=$WORK/universeg_${form}_float32.onnx
        "$PY" tools/export_universeg.py --weights "$NPZ" --form $form --dtype float32 --out "$out" >/dev/null 2>&1 \
            && printf -v "$v" '%s' "$out" && echo "exported $out here"
    fi
done
echo "graphs: fp16 decomposed $F16 | fp32 decomposed ${F32D:-none} | fp32 naive ${F32N:-none} | weights ${NPZ:-none}"

if [ "$QUICK" = 1 ]; then
    SMALL=(--supports 4 --queries 6 --reps 2 --timed-queries 4 --timed-rounds 2 --warmup 1)
    DUMP=(--supports 4 --dump-queries 4)
    TORCH=(--supports 4 --iters 2 --warmup 1 --batch 1)
else
    SMALL=()
    DUMP=(--supports 64 --dump-queries 16)
    TORCH=(--supports 64 --iters 30 --warmup 5 --batch 1,8)
fi
RC=0

say "Rust: smoke run + mask dump (fp16 decomposed; threshold 0.0075 splits these random-weight logits ~in half)"
rm -rf "$WORK/dump"
timeout 90 "$BIN" --model "$F16" --batch 8 --threshold 0.0075 "${DUMP[@]}" --queries 16 --dump "$WORK/dump" \
    --warmup 0 --timed-rounds 0 --reps 0 || { echo "FAILED (rc $?)"; RC=1; }

say "Rust: decomposed fp16 graph (the configuration issue 4 accepts on), batch 8, 16, 32"
# One process per batch size: ORT 1.31's CUDA Concat fails on some fp16 batch sizes, which must not hide the rest.
for b in 8 16 32; do
  timeout 100 "$BIN" --model "$F16" --batch $b "${SMALL[@]}" 2>&1 | tee -a "$WORK/rust_f16.log" || RC=1
done
say "Rust: decomposed fp16 graph, batch 8, NHWC kernels on (SPE_CUDA_PREFER_NHWC=1) for comparison"
SPE_CUDA_PREFER_NHWC=1 timeout 100 "$BIN" --model "$F16" --batch 8 "${SMALL[@]}" || RC=1

if [ -n "$F32D" ]; then
    say "Rust: decomposed fp32 graph, batch 1, 8 (comparison)"
    timeout 90 "$BIN" --model "$F32D" --batch 1,8 "${SMALL[@]}" || RC=1
fi
if [ -n "$F32N" ]; then
    say "Rust: naive fp32 graph, batch 1 (comparison)"
    timeout 60 "$BIN" --model "$F32N" --batch 1 "${SMALL[@]}" || RC=1
fi

say "PyTorch reference (per-pair concat cross conv), checks + timing"
if [ -n "$NPZ" ]; then
    checks=("$F16"); [ -n "$F32D" ] && checks+=("$F32D"); [ -n "$F32N" ] && checks+=("$F32N")
    timeout 150 "$PY" tools/torch_universeg_bench.py --weights "$NPZ" "${TORCH[@]}" --check-onnx "${checks[@]}" \
        --rust-dump "$WORK/dump" 2>&1 | tee "$WORK/torch.log" || RC=1
else
    echo "SKIPPED: no weights (.npz) and none could be made here"; RC=1
fi

say "summary"
grep -h '^SUMMARY' "$WORK/rust_f16.log" 2>/dev/null
grep -h 'torch reference ms per query' "$WORK/torch.log" 2>/dev/null
grep -h -E '^check-' "$WORK/torch.log" 2>/dev/null
"$PY" - "$WORK/rust_f16.log" "$WORK/torch.log" <<'EOF'
import re, sys
rust = open(sys.argv[1]).read() if len(sys.argv) > 1 else ""
try:
    torch = open(sys.argv[2]).read()
except OSError:
    torch = ""
m = re.search(r"SUMMARY batch\s+8:\s+([\d.]+) ms/query\s+full protocol \((\d+)x(\d+)\)\s+([\d.]+) s", rust)
t = re.search(r"torch reference ms per query ([\d.]+) .*batch 1,", torch)
if m:
    ms, full = float(m.group(1)), float(m.group(4))
    print(f"issue 4 acceptance (fp16 decomposed, batch 8): {ms:.3f} ms/query (<= 3: {'yes' if ms <= 3 else 'NO'}), "
          f"full protocol {m.group(2)}x{m.group(3)} {full:.3f} s (<= 3: {'yes' if full <= 3 else 'NO'})")
    if t:
        print(f"PyTorch reference batch 1: {float(t.group(1)):.3f} ms/query -> speed-up {float(t.group(1)) / ms:.1f}x")
else:
    print("no fp16 batch-8 result found")
EOF
say "done (rc $RC)"
exit $RC
