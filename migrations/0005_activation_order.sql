-- Which calibration is active follows the latest request: a manual activation (or a pair calibration
-- with activate) is requested when it is made, a queued calibration's `activate` when it was submitted.
-- A calibration finishing after a later request therefore no longer replaces that choice.
ALTER TABLE models ADD COLUMN active_requested_at timestamptz;
UPDATE models SET active_requested_at = now() WHERE active_calibration_id IS NOT NULL;
