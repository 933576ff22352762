#!/usr/bin/env bash
# Per-job time of estimates, as the service records it (`timings` of each estimate): run `make run` in one
# terminal, then this in another. It registers a model (the synthetic fixture by default; with
# MODEL_ONNX/SPEC/REFERENCE/BATCH set, any model), attaches its reference set, activates a calibration
# from pairs (no checkpoints to run), then posts N identical estimates one after another and prints each
# one's load/compute/sessions/total seconds and the medians of all but the first (the first may build the
# sessions). Compare `spe serve --session-cache 0` (a new session for every job) with the default.
set -euo pipefail
cd "$(dirname "$0")/.."

SPE=${SPE:-http://127.0.0.1:8080}
N=${N:-10}
F=tests/fixtures/synthetic
MODEL_ONNX=${MODEL_ONNX:-$F/checkpoints/ckpt_07.onnx}
SPEC=${SPEC:-$F/spec_gray_argmax.json}
REFERENCE=${REFERENCE:-$F/reference}
BATCH=${BATCH:-$F/batch}
KEY=${KEY:-$(DATABASE_URL=postgres://spe@127.0.0.1:54329/spe target/release/spe keys create --role admin --name job-timing)}
AUTH="Authorization: Bearer $KEY"

MODEL=$(curl -sSf -H "$AUTH" -F name="timing-$RANDOM" -F spec=@"$SPEC" -F onnx=@"$MODEL_ONNX" \
  $SPE/v1/models | jq -r .id)
args=()
for f in "$REFERENCE"/images/*.png; do args+=(-F "image=@$f"); done
for f in "$REFERENCE"/labels/*.png; do args+=(-F "label=@$f"); done
curl -sSf -X PUT -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/reference-set >/dev/null

# A calibration from given (pseudo, real) pairs: enough for estimates to run, not for good ones.
points=$(jq -nc '[range(0; 5) | 0.3 + 0.15 * . | {name: "p\(.)", pseudo: {dice: (. - 0.1), jaccard: (. - 0.1), precision: ., recall: ., hd95: (30 * (1 - .)), pearson: .}, real: {dice: ., jaccard: (0.9 * .), precision: ., recall: ., hd95: (30 * (1 - .)), pearson: .}}]')
pairs="{\"points\": $points, \"params\": {\"support_size\": 16, \"repetitions\": 3}, \"activate\": true}"
CAL=$(curl -sSf -H "$AUTH" -H 'Content-Type: application/json' -d "$pairs" \
  $SPE/v1/models/$MODEL/calibrations | jq -r .id)
until curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 0.2
done

images=()
for f in "$BATCH"/*.png; do images+=(-F "image=@$f"); done
echo "estimate status load_s compute_s sessions_s total_s"
results=()
for i in $(seq 1 "$N"); do
  LOCATION=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" "${images[@]}" \
    $SPE/v1/models/$MODEL/estimates)
  until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
    sleep 0.1
  done
  line=$(curl -sSf -H "$AUTH" $SPE$LOCATION | jq -r '"\(.status) \(.timings.load_s) \(.timings.compute_s) \(.timings.sessions_s) \(.timings.total_s)"')
  echo "$i $line"
  results+=("$line")
done
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
rest=$(printf '%s\n' "${results[@]:1}")
echo "median of estimates 2..$N: load_s $(cut -d' ' -f2 <<<"$rest" | median)" \
  "compute_s $(cut -d' ' -f3 <<<"$rest" | median) sessions_s $(cut -d' ' -f4 <<<"$rest" | median)" \
  "total_s $(cut -d' ' -f5 <<<"$rest" | median)"
