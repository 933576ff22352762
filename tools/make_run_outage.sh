#!/usr/bin/env bash
# A database outage as a `make run` user meets it: run `make run` in one terminal, then this in another.
# It registers the shared JSRT model (../shared), attaches the training set as reference, calibrates
# from the 16 checkpoints on the test split, stops `make run`'s PostgreSQL (.pgdata) for OUTAGE_S
# seconds (default 40) once the calibration passes 30%, starts it again, and prints the calibration's
# outcome: it must succeed, in one attempt. Needs curl, jq, bc and PostgreSQL's binaries.
set -uo pipefail
cd "$(dirname "$0")/.."
SPE=${SPE:-http://127.0.0.1:8080}
OUTAGE=${OUTAGE_S:-40}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
AS_PG=(); [ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
PGDIR=$PWD/.pgdata
KEY=$(DATABASE_URL=postgres://spe@127.0.0.1:54329/spe target/release/spe keys create --role admin --name pgstop)
AUTH="Authorization: Bearer $KEY"
J=../shared/models/jsrt-heart-unet
MODEL=$(curl -sSf -H "$AUTH" -F name="jsrt-pgstop-$RANDOM" -F spec=@tests/fixtures/jsrt_spec.json -F onnx=@$J/epoch_060.onnx $SPE/v1/models | jq -r .id)
args=(); for f in ../shared/datasets/jsrt/train/images/*.png; do args+=(-F "image=@$f"); done
for f in ../shared/datasets/jsrt/train/labels/*.png; do args+=(-F "label=@$f"); done
curl -sSf -X PUT -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/reference-set | jq -c '{images}'
args=(); for f in $J/*.onnx; do args+=(-F "checkpoint=@$f"); done
for f in ../shared/datasets/jsrt/test/images/*.png; do args+=(-F "image=@$f"); done
for f in ../shared/datasets/jsrt/test/labels/*.png; do args+=(-F "label=@$f"); done
T0=$(date +%s.%N)
CAL=$(curl -sSf -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/calibrations | jq -r .id)
echo "calibration $CAL"
while :; do
  p=$(curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -r '.progress.fraction // 0')
  if awk "BEGIN{exit !($p >= 0.3)}"; then break; fi
  sleep 0.5
done
echo "progress $p at $(echo "$(date +%s.%N) - $T0" | bc) s: stopping PostgreSQL for $OUTAGE s"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR" -m fast -w -t 60 stop >/dev/null || echo "stop failed"
sleep "$OUTAGE"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 60 \
  -o "-p 54329 -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null || echo "start failed"
echo "PostgreSQL back at $(echo "$(date +%s.%N) - $T0" | bc) s"
until s=$(curl -sf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -r .status) && [ "$s" = succeeded -o "$s" = failed ]; do sleep 1; done
echo "finished at $(echo "$(date +%s.%N) - $T0" | bc) s"
curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -c '{status, error, attempts, excluded: .result.excluded, dice_loo_mae: .result.fits.dice.loo_mae, checkpoints: (.result.checkpoints | length)}'
