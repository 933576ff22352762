#!/usr/bin/env bash
# GPU benchmark of issue 4: the Rust reverse-segmentation path (OnnxReverse through ort + ONNX Runtime's CUDA
# execution provider) on the exported decomposed fp16 UniverSeg graph, next to the PyTorch reference of the
# same architecture and weights. Prints ms per query at S=64 and the time of one full-protocol pseudo metric
# (172 queries x 6 repetitions), plus correctness checks. Run from the repo root on an x86-64 NVIDIA machine
# whose `python3` has PyTorch (CUDA) and the NVIDIA CUDA 13 / cuDNN 9 pip libraries:
#
#     bash tools/gpu_bench.sh     # about 4-5 minutes (every step is capped); log also in $OUT/gpu_bench.log
#
# Variants, one process each, all on the decomposed fp16 graph: NCHW at batch 8 and 16, with cuDNN conv+bias
# fusion (SPE_CUDA_FUSE_CONV_BIAS=1), with NHWC kernels; the --layout nhwc graph with NHWC kernels at batch 8
# (plain and fused) and 4. The summary names the fastest. PyTorch adds its reference (fp32, batch 1 and 8)
# and the decomposed computation in fp16, NCHW and channels-last, with a per-kernel profile: what this card
# reaches with well-chosen kernels.
#
# Nothing is built or downloaded there: `bash tools/gpu_prepare.sh` makes what it uses on a build machine,
# in git-ignored folders (its header gives the device calls that carry them). Looked for in .gwbench/,
# /tmp/parts/ and .gw1/ .. .gw5/:
#   gpu_universeg                 the stripped bench binary (cargo build --release --bench gpu_universeg)
#   universeg_decomposed_float16.onnx, universeg_decomposed_float16_nhwc.onnx   the graphs timed
#   ortcuda.zip.part1..5          onnxruntime-gpu 1.31.1's three libraries, zipped and cut in five;
#                                 .gwbench/SHA256SUMS holds the joined zip's digest
#   stub/libcurand.so.10          (in .gwbench/) an empty stand-in, used only when no real one is found
#   universeg_seed0.npz, universeg_decomposed_float32.onnx, universeg_naive_float32.onnx  (optional) the
#                                 weights for PyTorch and two comparison graphs; when missing they are made
#                                 here (needs numpy + onnx), else those steps are skipped.
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
F16N=$(find_art universeg_decomposed_float16_nhwc.onnx) || F16N=""  # --layout nhwc (optional)

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
if [ -z "$F16N" ] && [ -n "$NPZ" ]; then
    out=$WORK/universeg_decomposed_float16_nhwc.onnx
    "$PY" tools/export_universeg.py --weights "$NPZ" --form decomposed --dtype float16 --layout nhwc --out "$out" \
        >/dev/null 2>&1 && F16N=$out && echo "exported $out here"
fi
echo "graphs: fp16 decomposed $F16 | fp16 decomposed nhwc ${F16N:-none} | fp32 decomposed ${F32D:-none} |" \
    "fp32 naive ${F32N:-none} | weights ${NPZ:-none}"

if [ "$QUICK" = 1 ]; then
    SMALL=(--supports 4 --queries 6 --reps 2 --timed-queries 4 --timed-rounds 2 --warmup 1)
    DUMP=(--supports 4 --dump-queries 4)
    TORCH=(--supports 4 --iters 2 --warmup 1 --batch 1)
else
    SMALL=()
    DUMP=(--supports 64 --dump-queries 16)
    TORCH=(--supports 64 --iters 30 --warmup 5 --batch 1,8 --decomposed-batch 8 --profile)
fi
RC=0

say "Rust: smoke run + mask dump, both layouts (fp16 decomposed; threshold 0.0075 splits these random-weight logits ~in half)"
rm -rf "$WORK/dump" "$WORK/dump_nhwc"
timeout 90 "$BIN" --model "$F16" --batch 8 --threshold 0.0075 "${DUMP[@]}" --queries 16 --dump "$WORK/dump" \
    --warmup 0 --timed-rounds 0 --reps 0 || { echo "FAILED (rc $?)"; RC=1; }
DUMPS=("$WORK/dump")
if [ -n "$F16N" ]; then
    SPE_CUDA_PREFER_NHWC=1 timeout 90 "$BIN" --model "$F16N" --batch 8 --threshold 0.0075 "${DUMP[@]}" --queries 16 \
        --dump "$WORK/dump_nhwc" --warmup 0 --timed-rounds 0 --reps 0 || { echo "FAILED (rc $?)"; RC=1; }
    DUMPS+=("$WORK/dump_nhwc")
fi

# One process per variant: a failing one (ORT 1.31's CUDA Concat fails on the NCHW fp16 graph at batch 16:
# a 2^31-element tensor) must not hide the rest. Each SUMMARY line lands in variants.txt with its label.
: > "$WORK/variants.txt"
variant() {  # LABEL [VAR=VALUE ...] -- BENCH ARGS...
    local label=$1 envs=()
    shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo; echo "--- variant $label: ${envs[*]:-} $*"
    env ${envs[@]+"${envs[@]}"} timeout 80 "$BIN" "$@" "${SMALL[@]}" 2>&1 | tee "$WORK/variant_$label.log"
    local rc=${PIPESTATUS[0]}
    grep '^SUMMARY batch' "$WORK/variant_$label.log" | sed "s/^/$label /" >> "$WORK/variants.txt"
    [ "$rc" = 0 ] || echo "variant $label: FAILED (rc $rc)"
}
say "Rust: decomposed fp16 graph variants (issue 4 accepts on these)"
variant nchw-b8 -- --model "$F16" --batch 8
variant nchw-b16 -- --model "$F16" --batch 16
variant nchw-b8-fusebias SPE_CUDA_FUSE_CONV_BIAS=1 -- --model "$F16" --batch 8
variant nchw-b8-nhwckernels SPE_CUDA_PREFER_NHWC=1 -- --model "$F16" --batch 8
if [ -n "$F16N" ]; then
    variant nhwc-b8 SPE_CUDA_PREFER_NHWC=1 -- --model "$F16N" --batch 8
    variant nhwc-b8-fusebias SPE_CUDA_PREFER_NHWC=1 SPE_CUDA_FUSE_CONV_BIAS=1 -- --model "$F16N" --batch 8
    variant nhwc-b4 SPE_CUDA_PREFER_NHWC=1 -- --model "$F16N" --batch 4
fi
grep -q '^nchw-b8 ' "$WORK/variants.txt" || RC=1

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
    checks=("$F16"); for g in "$F16N" "$F32D" "$F32N"; do [ -n "$g" ] && checks+=("$g"); done
    timeout 150 "$PY" tools/torch_universeg_bench.py --weights "$NPZ" "${TORCH[@]}" --check-onnx "${checks[@]}" \
        --rust-dump "${DUMPS[@]}" 2>&1 | tee "$WORK/torch.log" || RC=1
else
    echo "SKIPPED: no weights (.npz) and none could be made here"; RC=1
fi

say "summary"
cat "$WORK/variants.txt"
grep -h -E 'torch (reference|decomposed).* ms per query' "$WORK/torch.log" 2>/dev/null
grep -h -E '^check-' "$WORK/torch.log" 2>/dev/null
"$PY" - "$WORK/variants.txt" "$WORK/torch.log" <<'EOF'
import re, sys
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) SUMMARY batch\s+(\d+):\s+([\d.]+) ms/query\s+full protocol \((\d+)x(\d+)\)\s+([\d.]+) s", line)
    if m:
        rows.append((m.group(1), float(m.group(3)), float(m.group(6)), f"{m.group(4)}x{m.group(5)}"))
try:
    torch = open(sys.argv[2]).read()
except OSError:
    torch = ""
if not rows:
    print("no fp16 variant finished")
    sys.exit(0)
label, ms, full, proto = min(rows, key=lambda r: r[2])
print(f"issue 4 acceptance, best fp16 decomposed variant {label}: {ms:.3f} ms/query (<= 3: {'yes' if ms <= 3 else 'NO'}), "
      f"full protocol {proto} {full:.3f} s (<= 3: {'yes' if full <= 3 else 'NO'})")
t = re.search(r"torch reference ms per query ([\d.]+) .*batch 1,", torch)
if t:
    print(f"PyTorch reference batch 1: {float(t.group(1)):.3f} ms/query -> speed-up {float(t.group(1)) / ms:.1f}x")
EOF
say "done (rc $RC)"
exit $RC
