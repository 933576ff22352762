#!/usr/bin/env bash
# A busy hospital's year in the database, and what a Prometheus scrape and a dashboard's list cost then:
# run `make run` in one terminal, then this in another. It registers the synthetic fixture model,
# calibrates it and runs one estimate through the service, then copies that estimate in SQL to ROWS rows
# (default 1,000,000) spread over MODELS models (default 100; the copies are models named scrape-bench-*
# sharing the real one's calibration). It times GET /metrics and GET /v1/models/{id}/estimates?limit=50
# over HTTP, and, side by side in PostgreSQL, the scrape query of the previous release (the latest
# estimate by sorting every row) against today's (one row per model, kept on write). Everything it
# added is deleted at the end. Needs curl, jq and PostgreSQL's psql.
set -euo pipefail
cd "$(dirname "$0")/.."
SPE=${SPE:-http://127.0.0.1:8080}
ROWS=${ROWS:-1000000}
MODELS=${MODELS:-100}
DB=${DATABASE_URL:-postgres://spe@127.0.0.1:54329/spe}
PSQL=("$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/psql" -X -q -v ON_ERROR_STOP=1 "$DB")
F=tests/fixtures/synthetic
KEY=$(DATABASE_URL=$DB target/release/spe keys create --role admin --name scrape-bench)
AUTH="Authorization: Bearer $KEY"

MODEL=$(curl -sSf -H "$AUTH" -F name="scrape-bench-0" -F spec=@$F/spec_gray_argmax.json \
  -F onnx=@$F/checkpoints/ckpt_07.onnx $SPE/v1/models | jq -r .id)
trap 'curl -sS -o /dev/null -X DELETE -H "$AUTH" $SPE/v1/models/$MODEL' EXIT
args=(); for f in $F/reference/images/*.png; do args+=(-F "image=@$f"); done
for f in $F/reference/labels/*.png; do args+=(-F "label=@$f"); done
curl -sSf -o /dev/null -X PUT -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/reference-set
args=(-F 'params={"support_size":16,"repetitions":3}')
for f in $F/checkpoints/*.onnx; do args+=(-F "checkpoint=@$f"); done
for f in $F/calibration/images/*.png; do args+=(-F "image=@$f"); done
for f in $F/calibration/labels/*.png; do args+=(-F "label=@$f"); done
CAL=$(curl -sSf -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/calibrations | jq -r .id)
until curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -e '.status == "succeeded"' >/dev/null; do sleep 1; done
args=(); for f in $F/batch/*.png; do args+=(-F "image=@$f"); done
LOCATION=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/estimates)
until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded"' >/dev/null; do sleep 1; done
EST=${LOCATION##*/}

start=$(date +%s)
"${PSQL[@]}" -v model="$MODEL" -v est="$EST" -v rows="$ROWS" -v models="$MODELS" <<'SQL'
INSERT INTO models (id, name, spec, onnx_sha256, onnx_size, reference_set_id, active_calibration_id)
SELECT gen_random_uuid(), 'scrape-bench-' || g, spec, onnx_sha256, onnx_size, reference_set_id, active_calibration_id
FROM models, generate_series(1, :models - 1) g WHERE id = :'model';
CREATE TEMP TABLE bench_rows AS
SELECT gen_random_uuid() AS id, ids[1 + i % cardinality(ids)] AS model_id, now() - make_interval(secs => i) AS at
FROM generate_series(1, :rows) i,
     (SELECT array_agg(id ORDER BY id) AS ids FROM models WHERE name LIKE 'scrape-bench-%') m;
INSERT INTO jobs (id, kind, state, attempts, max_attempts, progress, stage, created_at, started_at, finished_at)
SELECT id, 'estimate', 'succeeded', 1, 3, 1, 'done', at, at, at FROM bench_rows;
INSERT INTO estimates (id, model_id, calibration_id, batch_set_id, result, timings, created_at)
SELECT r.id, r.model_id, t.calibration_id, t.batch_set_id, t.result, t.timings, r.at
FROM bench_rows r CROSS JOIN (SELECT * FROM estimates WHERE id = :'est') t;
INSERT INTO latest_estimates (model_id, estimate_id)
SELECT DISTINCT ON (model_id) model_id, id FROM bench_rows ORDER BY model_id, at DESC
ON CONFLICT (model_id) DO NOTHING;
ANALYZE jobs; ANALYZE estimates;
SQL
echo "filled: $("${PSQL[@]}" -tA -c 'SELECT count(*) FROM estimates') estimates, $MODELS models, in $(( $(date +%s) - start )) s"

# Median of five HTTP timings (seconds).
median() { sort -n | sed -n 3p; }
time_get() { for _ in 1 2 3 4 5; do curl -sSf -o /dev/null -w '%{time_total}\n' "$@"; done | median; }
echo "GET /metrics: $(time_get $SPE/metrics) s"
echo "GET /v1/models/{id}/estimates?limit=50: $(time_get -H "$AUTH" "$SPE/v1/models/$MODEL/estimates?limit=50") s"
# The same comparison inside PostgreSQL: the previous release's scrape query against today's.
sql_ms() { for _ in 1 2 3 4 5; do "${PSQL[@]}" -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; done | median; }
echo "scrape query, previous release (sort every estimate): $(sql_ms "SELECT DISTINCT ON (e.model_id) m.name, e.id, e.result FROM estimates e JOIN jobs j ON j.id = e.id JOIN models m ON m.id = e.model_id WHERE j.state = 'succeeded' AND e.result IS NOT NULL ORDER BY e.model_id, j.finished_at DESC") ms"
echo "scrape query, today (latest_estimates): $(sql_ms "SELECT m.name, e.id, e.result FROM latest_estimates l JOIN models m ON m.id = l.model_id JOIN estimates e ON e.id = l.estimate_id WHERE e.result IS NOT NULL ORDER BY m.name") ms"

start=$(date +%s)
"${PSQL[@]}" <<'SQL'
DELETE FROM jobs WHERE id IN (SELECT e.id FROM estimates e JOIN models m ON m.id = e.model_id WHERE m.name LIKE 'scrape-bench-%' AND m.name <> 'scrape-bench-0');
DELETE FROM models WHERE name LIKE 'scrape-bench-%' AND name <> 'scrape-bench-0';
SQL
echo "cleaned up in $(( $(date +%s) - start )) s"
