#!/usr/bin/env bash
# Prepares, on a build machine, everything tools/gpu_bench.sh needs on a GPU machine, in the git-ignored
# folders it looks in (.gitignore: /.gw*/):
#   .gwbench/  gpu_universeg (the stripped bench binary), universeg_decomposed_float16.onnx and its
#              --layout nhwc twin, stub/libcurand.so.10, SHA256SUMS
#   .gw1/ .. .gw5/  ortcuda.zip.part1..5 (onnxruntime-gpu 1.31.1's three libraries, zipped and cut in five
#              because one device call carries at most 64 MiB), plus the seed weights and fp32 graphs
#
#     bash tools/gpu_prepare.sh        # needs cargo, gcc, the .venv that `make test` makes; PyPI only when
#                                      # the ORT parts are missing (a ~256 MB wheel download)
#
# Then five device calls in a row, while the machine stays warm (it keeps carried folders between calls):
#     run carry [".gw1"] command "true"      ... the same with .gw2, .gw3, .gw4, then
#     run carry [".gw5", ".gwbench"] command "bash tools/gpu_bench.sh" timeout_s 600
# The bench's log comes back as $OUT/gpu_bench.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu_prepare: $PY is missing: run \`make test\` (or \`make venv\`) first" >&2; exit 1; }
mkdir -p .gwbench/stub .gw1 .gw2 .gw3 .gw4 .gw5

echo "== bench binary"
cargo build --release --bench gpu_universeg
bin=$(ls -t target/release/deps/gpu_universeg-* | grep -v '\.d$' | head -1)
cp "$bin" .gwbench/gpu_universeg
strip .gwbench/gpu_universeg

echo "== weights and graphs (random weights, seed 0; the same file feeds PyTorch on the GPU machine)"
W=.gw3/universeg_seed0.npz
[ -f "$W" ] || "$PY" tools/torch_universeg_bench.py --write-weights "$W" --random-weights 0
export_graph() { "$PY" tools/export_universeg.py --weights "$W" "$@"; }
export_graph --form decomposed --dtype float16 --out .gwbench/universeg_decomposed_float16.onnx
export_graph --form decomposed --dtype float16 --layout nhwc --out .gwbench/universeg_decomposed_float16_nhwc.onnx
export_graph --form decomposed --dtype float32 --out .gw1/universeg_decomposed_float32.onnx
export_graph --form naive --dtype float32 --out .gw2/universeg_naive_float32.onnx

echo "== libcurand stand-in (used on the GPU machine only when no real libcurand.so.10 is there)"
[ -f .gwbench/stub/libcurand.so.10 ] || echo 'void spe_curand_stub(void) {}' \
    | gcc -shared -fPIC -Wl,-soname,libcurand.so.10 -o .gwbench/stub/libcurand.so.10 -x c -

echo "== onnxruntime-gpu 1.31.1 libraries, in five parts"
if ! ls .gw1/ortcuda.zip.part1 .gw2/ortcuda.zip.part2 .gw3/ortcuda.zip.part3 .gw4/ortcuda.zip.part4 \
    .gw5/ortcuda.zip.part5 >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d "$tmp"
    "$PY" - "$tmp"/onnxruntime_gpu-1.31.1-*.whl "$tmp/ortcuda.zip" <<'EOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
names = [f"onnxruntime/capi/{n}" for n in
         ("libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so")]
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
    for n in names:
        dst.writestr(n, src.read(n))
EOF
    (cd "$tmp" && split -n 5 --numeric-suffixes=1 -a 1 ortcuda.zip ortcuda.zip.part)
    for i in 1 2 3 4 5; do mv "$tmp/ortcuda.zip.part$i" ".gw$i/"; done
fi

echo "== checksums"
{
    echo "$(cat .gw1/ortcuda.zip.part1 .gw2/ortcuda.zip.part2 .gw3/ortcuda.zip.part3 .gw4/ortcuda.zip.part4 \
        .gw5/ortcuda.zip.part5 | sha256sum | cut -d' ' -f1)  ortcuda.zip"
    (cd .gwbench && sha256sum gpu_universeg universeg_decomposed_float16.onnx \
        universeg_decomposed_float16_nhwc.onnx stub/libcurand.so.10)
    (cd .gw1 && sha256sum universeg_decomposed_float32.onnx)
    (cd .gw2 && sha256sum universeg_naive_float32.onnx)
    (cd .gw3 && sha256sum universeg_seed0.npz)
} > .gwbench/SHA256SUMS
cat .gwbench/SHA256SUMS
du -sh .gw1 .gw2 .gw3 .gw4 .gw5 .gwbench
