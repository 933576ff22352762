#!/usr/bin/env bash
# Load check against a running service on loopback (`make run`), with curl only.
#
#   tools/load.sh            both phases below
#   tools/load.sh get        GET /v1/estimates/{id} at RATE requests/s for DURATION s: p50/p99 latency
#   tools/load.sh submit     POST the fixture batch back to back until the queue is full (429)
#
# Env: SPE (default http://127.0.0.1:8080), KEY (an admin key; default: one made with `spe keys create`
# on `make run`'s database), RATE (default 50), DURATION (default 20), MODEL (a calibrated model id;
# default: set one up with tools/walkthrough.sh's steps). Needs curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

SPE=${SPE:-http://127.0.0.1:8080}
RATE=${RATE:-50}
DURATION=${DURATION:-20}
KEY=${KEY:-$(DATABASE_URL=postgres://spe@127.0.0.1:54329/spe target/release/spe keys create --role admin --name load)}
AUTH="Authorization: Bearer $KEY"
F=tests/fixtures/synthetic
phase=${1:-all}

batch_args=()
for f in $F/batch/*.png; do batch_args+=(-F "image=@$f"); done

calibrated_model() {
  local m
  m=$(curl -sSf -H "$AUTH" $SPE/v1/models | jq -r '[.items[] | select(.active_calibration_id != null)][0].id // empty')
  if [ -z "$m" ]; then
    echo "no calibrated model yet: running tools/walkthrough.sh first" >&2
    KEY=$KEY tools/walkthrough.sh >&2
    m=$(curl -sSf -H "$AUTH" $SPE/v1/models | jq -r '[.items[] | select(.active_calibration_id != null)][0].id')
  fi
  echo "$m"
}
MODEL=${MODEL:-$(calibrated_model)}

percentile() { # $1 = fraction, stdin = sorted numbers
  awk -v q="$1" '{v[NR]=$1} END {if (NR==0) {print "nan"; exit} i=int(q*NR+0.999999); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", v[i]*1000}'
}

get_phase() {
  local location out n interval
  location=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" "${batch_args[@]}" $SPE/v1/models/$MODEL/estimates)
  until curl -sSf -H "$AUTH" $SPE$location | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do sleep 0.5; done
  out=$(mktemp -d)
  n=$((RATE * DURATION))
  interval=$(awk -v r="$RATE" 'BEGIN {printf "%.4f", 1 / r}')
  echo "GET $location: $n requests at $RATE/s (open loop, one curl per request)"
  for ((i = 0; i < n; i++)); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "$AUTH" $SPE$location >"$out/$i" &
    sleep "$interval"
  done
  wait
  cat "$out"/* >"$out/all"
  local ok errors
  ok=$(awk '$1 == 200' "$out/all" | wc -l)
  errors=$((n - ok))
  awk '$1 == 200 {print $2}' "$out/all" | sort -g >"$out/sorted"
  echo "  ok $ok, errors $errors; latency p50 $(percentile 0.50 <"$out/sorted") ms, p99 $(percentile 0.99 <"$out/sorted") ms, max $(percentile 1.0 <"$out/sorted") ms"
  rm -rf "$out"
}

submit_phase() {
  local accepted=0 code headers started
  headers=$(mktemp)
  started=$(date +%s.%N)
  echo "POST $SPE/v1/models/$MODEL/estimates ($(ls $F/batch | wc -l) images each) until 429"
  while :; do
    code=$(curl -s -o /dev/null -D "$headers" -w '%{http_code}' -H "$AUTH" "${batch_args[@]}" $SPE/v1/models/$MODEL/estimates)
    case $code in
      202) accepted=$((accepted + 1)) ;;
      429)
        echo "  429 after $accepted accepted submissions in $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s; $(grep -i '^retry-after' "$headers" | tr -d '\r')"
        break ;;
      *) echo "  unexpected status $code" >&2; break ;;
    esac
  done
  rm -f "$headers"
}

case $phase in
  get) get_phase ;;
  submit) submit_phase ;;
  all) get_phase; submit_phase ;;
  *) echo "usage: tools/load.sh [get|submit|all]" >&2; exit 2 ;;
esac
