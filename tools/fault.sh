#!/usr/bin/env bash
# Fault injection: proves that `spe serve` survives short outages. After `cargo build --release`, run
#
#   tools/fault.sh            (from anywhere; as root or not; needs curl, jq and PostgreSQL's binaries)
#
# It starts its own PostgreSQL (tools/pg.sh .pgdata-fault 54341, whatever DATABASE_URL says, so neither
# `make run`'s .pgdata nor the test cluster is touched; its `spe` database is emptied first) and its own
# service on 127.0.0.1:18090 (temporary blob store, --lease-secs 10), registers and calibrates the
# synthetic fixture model as tools/walkthrough.sh does, times one slow calibration undisturbed, then:
#   A  calibration    PostgreSQL stopped for 15 s once a slow calibration's progress passes 0.3; it must
#                     still be computing when PostgreSQL is back, then succeed with one result
#   B  final-write    the same, stopped a few seconds before the calibration ends (the point is read from
#                     the undisturbed run's progress timeline): its result write must meet the outage
#                     (wait for a connection or be retried), then succeed with exactly one result
#   C  estimate       PostgreSQL stopped right after a 240-image estimate is submitted; one result
#   D  kill-uploads   the service kill -9'd while an estimate computes and 4 uploads are in flight (3
#                     mid-body, 1 storing its blobs), restarted: no orphaned image set, no stuck job (the
#                     estimate runs again, one result), `spe admin sweep-blobs --min-age-secs 0` leaves
#                     exactly the referenced blobs, and a new estimate succeeds
#   E  s3             an API and a worker process on an S3 blob store (s3s-fs, built by `make test`):
#                     S3 stopped for 15 s after an estimate is accepted and before the worker starts; the
#                     job's input fetch meets the outage and is retried until S3 is back; one result
# Each prints `PASS <name>: <figures>` or `FAIL <name>: <why>`; the exit status is 1 if any failed.
# A watchdog stops the run after 12 minutes (it takes 4 to 8 on 2 cores). Everything it started is stopped
# on every exit; its work directory (service log, blobs) is deleted on success, kept and named on failure.
# Env: FAULT_COPIES (how many copies of the fixture's calibration set a slow calibration uses, default 4,
# doubled while it takes < 50 s; its repetitions are the API's maximum, 100),
# FAULT_OUTAGE_S (default 15), FAULT_KEEP=1 (keep the work directory).
set -uo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "${1:-}" != --inner ]; then
  exec env -u DATABASE_URL -u PG_FSYNC tools/pg.sh .pgdata-fault 54341 -- "$ROOT/tools/fault.sh" --inner
fi

SPE=http://127.0.0.1:18090 F=tests/fixtures/synthetic BIN=target/release/spe
OUTAGE=${FAULT_OUTAGE_S:-15} COPIES=${FAULT_COPIES:-4}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1) && PSQL=$PGBIN/psql
PGDIR=$("$PSQL" "$DATABASE_URL" -tAc 'SHOW data_directory') || exit 1
"$PSQL" "${DATABASE_URL%/spe}/postgres" -q -c 'DROP DATABASE IF EXISTS spe' -c 'CREATE DATABASE spe' || exit 1
AS_PG=(); [ "$(id -u)" = 0 ] && AS_PG=(runuser -u postgres --)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spe-fault.XXXXXX") && BLOBS=$WORK/blobs LOG=$WORK/spe.log
SPE_PID="" BG=() FAILED=0
( trap 'kill $s 2>/dev/null; exit' TERM; sleep 720 & s=$!; wait $s; echo "fault.sh: over 12 min" >&2; kill -TERM $$ ) &
WATCHDOG=$!
cleanup() { # SIGKILL for the service: its database and blobs are thrown away (D shows that is safe)
  local rc=$? p
  for p in "${BG[@]}" $WATCHDOG; do kill "$p" 2>/dev/null; done
  [ -n "$SPE_PID" ] && kill -9 "$SPE_PID" 2>/dev/null
  wait 2>/dev/null
  if [ "$rc" = 0 ] && [ -z "${FAULT_KEEP:-}" ]; then rm -rf "$WORK"; else echo "fault.sh: kept $WORK (service log: $LOG)" >&2; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a >= b)}'; }
pass() { echo "PASS $1: $2"; }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
die() { echo "fault.sh: $*" >&2; exit 1; }
q() { "$PSQL" "$DATABASE_URL" -tAc "$1"; }
api() { curl -sS -m 60 -H "$AUTH" "$@"; }
ready() { local i; for i in $(seq 300); do curl -sf -m 2 -o /dev/null $SPE/readyz && return 0; sleep 0.1; done; return 1; }
pg_stop() { "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR" -m fast -w -t 60 stop >/dev/null; }
pg_start() { # with tools/pg.sh's options
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 60 \
    -o "-p 54341 -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
# PostgreSQL down for $OUTAGE s: sets DOWN (seconds down), UP_AT, BACK (seconds until /readyz is 200 again).
outage() { local t
  pg_stop || die "pg_ctl stop failed"
  t=$(now); sleep "$OUTAGE"
  pg_start || die "pg_ctl start failed (log: $PGDIR/server.log)"
  UP_AT=$(now); DOWN=$(secs "$t" "$UP_AT")
  if ready; then BACK=$(secs "$UP_AT" "$(now)"); else BACK=never; fi
}
start_spe() {
  RUST_LOG=warn,spe=info "$BIN" serve --bind 127.0.0.1:18090 --blob-store "$BLOBS" --lease-secs 10 >>"$LOG" 2>&1 &
  SPE_PID=$!
  ready || die "the service did not become ready (log: $LOG)"
}
# "status fraction attempts" of a job ($1: calibrations/ID or estimates/ID); "null ..." while it cannot say.
job() { api "$SPE/v1/$1" 2>/dev/null | jq -r '"\(.status) \(.progress.fraction) \(.attempts)"' 2>/dev/null || echo "null null null"; }
# Waits (at most $3 s) until the job runs with progress >= $2; AT = the progress seen, or why not.
wait_progress() { local s p a end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    read -r s p a <<<"$(job "$1")"; [ "$s" = running ] && ge "$p" "$2" && { AT=$p; return 0; }
    case $s in succeeded | failed) AT="already $s"; return 1 ;; esac; sleep 0.3
  done; AT="timeout ($s $p)"; return 1
}
# Waits (at most $2 s) for the job to end; sets STATUS, ATTEMPTS, END_AT.
wait_end() { local p end=$((SECONDS + $2)); STATUS=timeout
  while [ $SECONDS -lt $end ]; do
    read -r STATUS p ATTEMPTS <<<"$(job "$1")"; case $STATUS in succeeded | failed) break ;; esac; sleep 0.3
  done; END_AT=$(now)
}
# Exactly one result and a succeeded job row: "ok", or what was found.
one_result() { local n s
  n=$(q "select count(*) from $1 where id = '$2' and result is not null"); s=$(q "select state from jobs where id = '$2'")
  [ "$n" = 1 ] && [ "$s" = succeeded ] && echo ok || echo "$n results, job row $s"
}
# What the job's own database calls met, from the log (coloured; heartbeats log outside the job's span):
# waits > 2 s for a connection (sqlx's slow-acquire warning; the pool waits up to 10 s), result writes
# retried in place, transient failures sent back to the queue (or not, the database being down).
log_count() { sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep "id=$1" | grep -c "$2" || true; }
waits() { echo "job's DB calls: $(log_count "$1" "time to acquire exceeded") waited > 2 s, $(log_count "$1" "cannot store the job's outcome yet") result writes retried, $(log_count "$1" "will retry") retries scheduled, $(log_count "$1" "cannot schedule its retry") unschedulable"; }
# $1 copies of the fixture batch with distinct trailing bytes (so distinct blobs) into $2; form: the -F args.
copies() { local k f; mkdir -p "$2"
  for k in $(seq "$1"); do for f in $F/batch/*.png; do
    { cat "$f"; printf 'spe-fault %s %d' "$2" "$k"; } >"$2/$(basename "$f" .png)_$k.png"
  done; done; form "$2"
}
form() { local f; ARGS=(); for f in "$1"/*.png; do ARGS+=(-F "image=@$f"); done; }
estimate() { api -f -o /dev/null -w '%header{location}' "${ARGS[@]}" $SPE/v1/models/$MODEL/estimates | sed 's|.*/||'; }

# --- Setup: the model, its reference set and the walkthrough's calibration -----------------------------
start_spe
KEY=$("$BIN" keys create --role admin --name fault 2>/dev/null) || die "spe keys create failed"
AUTH="Authorization: Bearer $KEY"
MODEL=$(api -f -F name=fault -F spec=@$F/spec_gray_argmax.json -F onnx=@$F/checkpoints/ckpt_07.onnx \
  $SPE/v1/models | jq -r .id) || die "cannot register the model"
args=(); for f in $F/reference/images/*.png; do args+=(-F "image=@$f"); done
for f in $F/reference/labels/*.png; do args+=(-F "label=@$f"); done
api -f -o /dev/null -X PUT "${args[@]}" $SPE/v1/models/$MODEL/reference-set || die "cannot attach the reference set"
CAL_ARGS=(); for f in $F/checkpoints/*.onnx; do CAL_ARGS+=(-F "checkpoint=@$f"); done
for f in $F/calibration/images/*.png; do CAL_ARGS+=(-F "image=@$f"); done
for f in $F/calibration/labels/*.png; do CAL_ARGS+=(-F "label=@$f"); done
calibrate() { api -f "${CAL_ARGS[@]}" "$@" $SPE/v1/models/$MODEL/calibrations | jq -r .id; }
t=$(now); id=$(calibrate -F 'params={"support_size":16,"repetitions":3}') || die "calibration refused"
wait_end calibrations/$id 300
[ "$STATUS" = succeeded ] || die "the walkthrough calibration ended $STATUS"
echo "setup: model $MODEL, walkthrough calibration $(secs "$t" "$END_AT") s"
# Slow calibrations are not activated: estimates keep using the quick one above.
# A slow calibration: $COPIES copies of the calibration set (distinct image bytes), 64 supports, 100
# repetitions (the API's maximum): long enough per checkpoint for an outage to fall within one.
slow_set() { local k f n d=$WORK/cal$COPIES; mkdir -p "$d/images" "$d/labels"
  for k in $(seq "$COPIES"); do for f in $F/calibration/images/*.png; do n=$(basename "$f" .png)
    { cat "$f"; printf 'spe-fault cal %d' "$k"; } >"$d/images/${n}_$k.png"
    cp "$F/calibration/labels/$n.png" "$d/labels/${n}_$k.png"
  done; done
  SLOW_ARGS=(); for f in $F/checkpoints/*.onnx; do SLOW_ARGS+=(-F "checkpoint=@$f"); done
  for f in "$d"/images/*.png; do SLOW_ARGS+=(-F "image=@$f"); done
  for f in "$d"/labels/*.png; do SLOW_ARGS+=(-F "label=@$f"); done
}
slow() { api -f "${SLOW_ARGS[@]}" -F 'params={"support_size":64,"repetitions":100,"seed":3}' -F activate=false \
  $SPE/v1/models/$MODEL/calibrations | jq -r .id; }
while :; do # its progress timeline ("seconds fraction" per poll) tells B when to stop PostgreSQL
  slow_set; t=$(now); id=$(slow) || die "slow calibration refused"; : >"$WORK/timeline"; end=$((SECONDS + 400))
  while read -r s p a <<<"$(job calibrations/$id)"; [ "$s" != succeeded ] && [ "$s" != failed ] && [ $SECONDS -lt $end ]; do
    echo "$(secs "$t" "$(now)") $p" >>"$WORK/timeline"; sleep 0.3
  done
  [ "$s" = succeeded ] || die "the undisturbed slow calibration ended $s"
  BASE=$(secs "$t" "$(now)")
  ge "$BASE" 50 || [ "$COPIES" -ge 64 ] && break
  COPIES=$((COPIES * 2))
done
# Progress is stored by the heartbeat (every lease/3 = 3.3 s), after each checkpoint: 0.05 + 0.95 i/8, so
# ">= 0.9" is only ever seen after the last one. B stops at the highest value first seen >= 4.5 s before
# the end: it is still computing then, and its result write comes within the outage.
B_AT=$(awk -v end="$BASE" 'end - $1 >= 4.5 && $2 + 0 > b + 0 {b = $2} END {print b + 0}' "$WORK/timeline")
echo "setup: slow calibration ($COPIES copies of the calibration set) $BASE s undisturbed; final-write stops at progress $B_AT"

# --- A, B: PostgreSQL down during a calibration --------------------------------------------------------
cal_outage() { # name, progress to stop at; sets FIG
  local t id p stop_s after one
  t=$(now); id=$(slow) || { fail "$1" "the calibration was refused"; return 1; }
  wait_progress calibrations/$id "$2" 300 || { fail "$1" "progress never reached $2 ($AT)"; return 1; }
  p=$AT stop_s=$(secs "$t" "$(now)")
  outage
  read -r after _ _ <<<"$(job calibrations/$id)"
  wait_end calibrations/$id 400
  [ "$STATUS" = succeeded ] || { fail "$1" "ended $STATUS: $(api $SPE/v1/calibrations/$id | jq -c .error)"; return 1; }
  one=$(one_result calibrations "$id"); [ "$one" = ok ] || { fail "$1" "$one"; return 1; }
  FIG="stopped at progress $p after $stop_s s; PostgreSQL down $DOWN s; API ready $BACK s after restart; $after"
  FIG+=" just after it, succeeded $(secs "$UP_AT" "$END_AT") s after restart; job $(secs "$t" "$END_AT") s"
  FIG+=" (undisturbed $BASE s); attempts $ATTEMPTS; 1 result; $(waits "$id")"
}
if cal_outage calibration 0.3; then # its job must still be computing when PostgreSQL is back
  case $FIG in *"running just after it"*"0 waited > 2 s, 0 result writes"*) pass calibration "$FIG" ;;
    *) fail calibration "it had finished computing within the outage (raise FAULT_COPIES): $FIG" ;; esac
fi
if cal_outage final-write "$B_AT"; then
  case $FIG in *"0 waited > 2 s, 0 result writes"*) fail final-write "the outage missed the result write: $FIG" ;;
    *) pass final-write "$FIG" ;; esac
fi

# --- C: PostgreSQL down right after an estimate is submitted -------------------------------------------
copies 20 "$WORK/c"
t=$(now); id=$(estimate)
if [ -z "$id" ]; then fail estimate "the estimate was refused"; else
  stop_s=$(secs "$t" "$(now)")
  outage
  wait_end estimates/$id 300
  one=$(one_result estimates "$id")
  if [ "$STATUS" = succeeded ] && [ "$one" = ok ]; then
    pass estimate "240 images; stopped $stop_s s after submission; PostgreSQL down $DOWN s; API ready $BACK s after restart; succeeded $(secs "$UP_AT" "$END_AT") s after restart; job $(secs "$t" "$END_AT") s; attempts $ATTEMPTS; 1 result; $(waits "$id")"
  else fail estimate "ended $STATUS ($one): $(api $SPE/v1/estimates/$id | jq -c .error)"; fi
fi

# --- D: kill -9 during uploads and an estimate ----------------------------------------------------------
blob_files() { find "$BLOBS/sha256" -type f 2>/dev/null; }
for u in 1 2 3 4; do copies 34 "$WORK/d$u"; done # 408 images, 5 MB each
copies 80 "$WORK/dj"; jid=$(estimate) # 960 images (the limit is 1024): still computing at the kill
wait_progress estimates/$jid 0.2 60; jat=$AT
for u in 1 2 3 4; do # 1-3 at 200 KB/s (still sending when killed); 4 at once, killed while it stores blobs
  form "$WORK/d$u"; rate=(--limit-rate 200k)
  [ $u = 4 ] && { rate=(); sleep 1; before=$(blob_files | grep -vc '#'); }
  { curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "${rate[@]}" "${ARGS[@]}" $SPE/v1/models/$MODEL/estimates
    echo "/exit $?"; } >"$WORK/d$u.code" &
  BG+=($!)
done
for i in $(seq 500); do [ "$(blob_files | wc -l)" -gt "$before" ] && break; sleep 0.02; done
read -r kstate _ <<<"$(job estimates/$jid)"
t=$(now); kill -9 "$SPE_PID"; wait "$SPE_PID" 2>/dev/null
written=$(($(blob_files | grep -vc '#') - before)) temp0=$(blob_files | grep -c '#')
wait "${BG[@]}" 2>/dev/null; BG=()
codes=$(cat "$WORK"/d?.code | tr '\n' ' ') # HTTP 100: only "100 Continue" came back
start_spe; restart=$(secs "$t" "$(now)")
orphans=$(q "select count(*) from image_sets s where not exists (select 1 from models m where m.reference_set_id = s.id)
  and not exists (select 1 from calibrations c where s.id in (c.reference_set_id, c.calibration_set_id))
  and not exists (select 1 from calibration_checkpoints k where k.masks_set_id = s.id)
  and not exists (select 1 from estimates e where e.batch_set_id = s.id)")
for i in $(seq 120); do
  left=$(q "select count(*) from jobs where state in ('queued', 'running')"); [ "$left" = 0 ] && break; sleep 1
done
read -r jstate _ jattempts <<<"$(job estimates/$jid)"; jone=$(one_result estimates "$jid")
swept=$("$BIN" admin sweep-blobs --blob-store "$BLOBS" --min-age-secs 0 2>&1 | sed -n 's/^deleted \([0-9]*\) orphaned.*/\1/p')
blob_files | grep -v '#' | xargs -rn1 basename | sort >"$WORK/files"
q "select distinct sha256 from blob_references" | sort >"$WORK/refs"
temp=$(blob_files | grep -c '#') unref=$(comm -23 "$WORK/files" "$WORK/refs" | wc -l)
missing=$(comm -13 "$WORK/files" "$WORK/refs" | wc -l)
copies 1 "$WORK/e"; t=$(now); id=$(estimate)
STATUS=refused; [ -n "$id" ] && wait_end estimates/$id 120
FIG="killed with 4 uploads in flight (curl: HTTP code/exit status ${codes% }; $written blobs and $temp0 temp files of the storing one written) and an estimate at progress $jat ($kstate at the kill); service ready $restart s after the kill; $orphans orphaned image sets; $left jobs unfinished after $((i - 1)) s; the estimate $jstate after $jattempts attempts ($jone); sweep deleted ${swept:-?} orphaned blobs, leaving $unref unreferenced, $missing missing, $temp temp blobs; a new estimate $STATUS in $(secs "$t" "$END_AT") s"
if [ "$kstate" = running ] && [ "$orphans" = 0 ] && [ "$left" = 0 ] && [ "$jstate" = succeeded ] && [ "$jone" = ok ] && [ "$unref" = 0 ] \
  && [ "$missing" = 0 ] && [ "$temp" = 0 ] && [ "$STATUS" = succeeded ]; then
  pass kill-uploads "$FIG"
else fail kill-uploads "$FIG"; fi

# --- E: the S3 blob store down while an estimate's inputs are fetched -------------------------------------
# An API process and a worker process keep their blobs in s3s-fs (the S3 server `make test` builds). The
# estimate is accepted while S3 is up; S3 is stopped before the worker starts, so the job meets the
# outage when it fetches its inputs, and is retried with backoff until S3 is back.
S3S=${S3S_FS:-$ROOT/.tools/bin/s3s-fs}
if [ ! -x "$S3S" ]; then fail s3 "s3s-fs is missing at $S3S (make test builds it; or set S3S_FS)"; else
  kill -9 "$SPE_PID"; wait "$SPE_PID" 2>/dev/null
  export AWS_ACCESS_KEY_ID=fault AWS_SECRET_ACCESS_KEY=fault-secret-key AWS_REGION=us-east-1 \
    AWS_ENDPOINT=http://127.0.0.1:18093 AWS_ALLOW_HTTP=true
  mkdir -p "$WORK/s3/spe" # s3s-fs: a bucket is a folder
  s3_start() {
    "$S3S" --host 127.0.0.1 --port 18093 --access-key fault --secret-key fault-secret-key "$WORK/s3" \
      >>"$WORK/s3.log" 2>&1 &
    S3_PID=$!; BG+=($S3_PID)
    for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18093/ && return 0; sleep 0.1; done; return 1
  }
  s3_start || die "s3s-fs did not start (log: $WORK/s3.log)"
  RUST_LOG=warn,spe=info "$BIN" serve --bind 127.0.0.1:18090 --role api --blob-store s3://spe/fault >>"$LOG" 2>&1 &
  SPE_PID=$!
  ready || die "the S3 API process did not become ready (log: $LOG)"
  MODEL=$(api -f -F name=fault-s3 -F spec=@$F/spec_gray_argmax.json -F onnx=@$F/checkpoints/ckpt_07.onnx \
    $SPE/v1/models | jq -r .id) || die "cannot register the S3 model"
  args=(); for f in $F/reference/images/*.png; do args+=(-F "image=@$f"); done
  for f in $F/reference/labels/*.png; do args+=(-F "label=@$f"); done
  api -f -o /dev/null -X PUT "${args[@]}" $SPE/v1/models/$MODEL/reference-set || die "cannot attach the S3 reference set"
  points=$(jq -nc '[range(0; 5) | 0.3 + 0.15 * . | {name: "p\(.)", pseudo: {dice: (. - 0.1), jaccard: (. - 0.1), precision: ., recall: ., hd95: (30 * (1 - .)), pearson: .}, real: {dice: ., jaccard: (0.9 * .), precision: ., recall: ., hd95: (30 * (1 - .)), pearson: .}}]')
  api -f -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"points\": $points, \"params\": {\"support_size\": 16, \"repetitions\": 3}, \"activate\": true}" \
    $SPE/v1/models/$MODEL/calibrations || die "cannot calibrate the S3 model from pairs"
  copies 1 "$WORK/s"; t=$(now); id=$(estimate)
  if [ -z "$id" ]; then fail s3 "the estimate was refused"; else
    kill -9 "$S3_PID"; wait "$S3_PID" 2>/dev/null; down=$(now)
    RUST_LOG=warn,spe=info "$BIN" serve --bind 127.0.0.1:18092 --role worker --blob-store s3://spe/fault \
      --lease-secs 10 >>"$LOG" 2>&1 &
    BG+=($!)
    sleep "$OUTAGE"; s3_start || die "s3s-fs did not restart"; UP_AT=$(now)
    wait_end estimates/$id 180
    one=$(one_result estimates "$id")
    FIG="S3 down $(secs "$down" "$UP_AT") s from before the worker started; succeeded $(secs "$UP_AT" "$END_AT") s after S3 was back; attempts $ATTEMPTS; $(log_count "$id" "will retry") retries scheduled"
    if [ "$STATUS" = succeeded ] && [ "$one" = ok ] && [ "$ATTEMPTS" = 1 ]; then pass s3 "$FIG"
    else fail s3 "ended $STATUS ($one): $FIG; error $(api $SPE/v1/estimates/$id | jq -c .error)"; fi
  fi
fi

[ "$FAILED" = 0 ]
