#!/usr/bin/env bash
# The README's curl walkthrough as a script: run `make run` in one terminal, then this in another.
# It registers the synthetic fixture model, attaches its reference set, calibrates it from its
# checkpoints, and estimates its Dice on the unlabeled batch. Needs curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

SPE=${SPE:-http://127.0.0.1:8080}
F=tests/fixtures/synthetic
# An admin key, printed once by the CLI (the database is the one `make run` started).
KEY=${KEY:-$(DATABASE_URL=postgres://spe@127.0.0.1:54329/spe target/release/spe keys create --role admin --name walkthrough)}
AUTH="Authorization: Bearer $KEY"

# 1. Register the model: its ONNX file and spec, checked against each other now.
MODEL=$(curl -sSf -H "$AUTH" -F name="synthetic-$RANDOM" -F spec=@$F/spec_gray_argmax.json \
  -F onnx=@$F/checkpoints/ckpt_07.onnx $SPE/v1/models | jq -r .id)
echo "model $MODEL"

# 2. Attach the reference set (the training images with labels, paired by file name).
args=()
for f in $F/reference/images/*.png; do args+=(-F "image=@$f"); done
for f in $F/reference/labels/*.png; do args+=(-F "label=@$f"); done
curl -sSf -X PUT -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/reference-set | jq -c '{id, images}'

# 3. Calibrate from the training checkpoints on the labelled calibration split (a background job).
args=(-F 'params={"support_size":16,"repetitions":3}')
for f in $F/checkpoints/*.onnx; do args+=(-F "checkpoint=@$f"); done
for f in $F/calibration/images/*.png; do args+=(-F "image=@$f"); done
for f in $F/calibration/labels/*.png; do args+=(-F "label=@$f"); done
CAL=$(curl -sSf -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/calibrations | jq -r .id)
until curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 1
done
curl -sSf -H "$AUTH" $SPE/v1/calibrations/$CAL | jq -c '{status, error, excluded: .result.excluded, dice: .result.fits.dice | {mapping, loo_mae, pearson_r}}'

# 4. Estimate on the unlabeled batch: 202 + Location, then poll it.
args=()
for f in $F/batch/*.png; do args+=(-F "image=@$f"); done
LOCATION=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" -H "Idempotency-Key: walkthrough-$MODEL" \
  "${args[@]}" $SPE/v1/models/$MODEL/estimates)
echo "estimate $LOCATION"
until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 1
done
curl -sSf -H "$AUTH" $SPE$LOCATION | jq -c '{status, error, dice: .result.metrics.dice, support: .result.support, timings}'

# 5. Dashboards: the model's estimates, newest first.
curl -sSf -H "$AUTH" "$SPE/v1/models/$MODEL/estimates?limit=10" | jq -c '[.items[] | {id, status, created_at}]'

# 6. From a PACS: the same batch as DICOM instances, DICOMweb STOW-RS style (multipart/related).
B=spe-stow-$RANDOM
{ for f in tests/fixtures/dicom/batch/*.dcm; do
    printf -- '--%s\r\nContent-Type: application/dicom\r\n\r\n' "$B"; cat "$f"; printf '\r\n'; done
  printf -- '--%s--\r\n' "$B"; } > /tmp/stow-body
LOCATION=$(curl -sSf -o /tmp/stow-answer.json -w '%header{location}' -H "$AUTH" \
  -H "Content-Type: multipart/related; type=\"application/dicom\"; boundary=$B" \
  --data-binary @/tmp/stow-body $SPE/v1/models/$MODEL/studies)
echo "estimate $LOCATION"
jq -c '{accepted: [."00081199".Value[]."00081155".Value[0]] | length, failed: ."00081198"}' /tmp/stow-answer.json
until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 1
done
curl -sSf -H "$AUTH" $SPE$LOCATION | jq -c '{status, dice: .result.metrics.dice.estimate, hd95_mm: .result.hd95_mm, pixels_retained}'

# 7. A NIfTI volume (sliced along its last axis).
LOCATION=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" -F image=@tests/fixtures/nifti/batch.nii.gz \
  $SPE/v1/models/$MODEL/estimates)
echo "estimate $LOCATION"
until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 1
done
curl -sSf -H "$AUTH" $SPE$LOCATION | jq -c '{status, images, dice: .result.metrics.dice.estimate, inputs}'

# 8. Alerts: a threshold no model reaches and a webhook receiver; the next estimate carries the alert,
#    /metrics exports it, and the receiver gets a signed estimate.alert event.
python3 tools/webhook_receiver.py 8099 walkthrough-secret-0123456789 > /tmp/spe-webhooks.log &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null' EXIT
HOOK=$(curl -sSf -H "$AUTH" -H 'Content-Type: application/json' -d '{"url": "http://127.0.0.1:8099/",
  "secret": "walkthrough-secret-0123456789", "events": ["estimate.alert"]}' $SPE/v1/webhooks | jq -r .id)
echo "webhook $HOOK"
curl -sSf -X PUT -H "$AUTH" -H 'Content-Type: application/json' -d '{"dice": {"min": 0.99}}' \
  $SPE/v1/models/$MODEL/thresholds
echo
args=()
for f in $F/batch/*.png; do args+=(-F "image=@$f"); done
LOCATION=$(curl -sSf -o /dev/null -w '%header{location}' -H "$AUTH" "${args[@]}" $SPE/v1/models/$MODEL/estimates)
echo "estimate $LOCATION"
until curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e '.status == "succeeded" or .status == "failed"' >/dev/null; do
  sleep 1
done
curl -sSf -H "$AUTH" $SPE$LOCATION | jq -e -c '.result.alerts | select(.[0].severity == "alert")'
NAME=$(curl -sSf -H "$AUTH" $SPE/v1/models/$MODEL | jq -r .name)
curl -sSf $SPE/metrics | grep -E "^spe_alert_active\{.*model=\"$NAME\"" | grep dice | grep -q ' 1$'
echo "alert active for $NAME"
for _ in $(seq 30); do grep -q "^signed estimate.alert model=$NAME " /tmp/spe-webhooks.log && break; sleep 1; done
grep "^signed estimate.alert model=$NAME " /tmp/spe-webhooks.log
curl -sSf -H "$AUTH" $SPE/v1/webhooks/$HOOK/deliveries | jq -e -c '.items[] | select(.state == "delivered")'
curl -sSf -X DELETE -H "$AUTH" $SPE/v1/webhooks/$HOOK
echo "signed webhook delivered"

# 9. Plots and the dashboard: both SVGs, and a sign-in that opens the model page.
CAL=$(curl -sSf -H "$AUTH" $SPE/v1/models/$MODEL | jq -r .active_calibration_id)
curl -sSf -H "$AUTH" -o /tmp/spe-calibration.svg "$SPE/v1/calibrations/$CAL/plot.svg?metric=dice"
curl -sSf -H "$AUTH" -o /tmp/spe-estimates.svg "$SPE/v1/models/$MODEL/estimates/plot.svg?metric=dice"
grep -q 'class="checkpoint' /tmp/spe-calibration.svg
echo "estimates plotted: $(grep -o 'class="point"' /tmp/spe-estimates.svg | wc -l)"
COOKIE=$(curl -sS -o /dev/null -D - --data-urlencode "key=$KEY" $SPE/ui/login | tr -d '\r' \
  | sed -n 's/^[Ss]et-[Cc]ookie: \(spe_session=[^;]*\).*/\1/p')
curl -sSf -H "Cookie: $COOKIE" $SPE/ui/models/$MODEL | grep -q 'id="estimates-plot"'
echo "dashboard: $SPE/ui/models/$MODEL"
