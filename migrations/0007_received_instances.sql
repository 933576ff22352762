-- DICOM instances already received per model, so a resent instance is not stored (or estimated) twice.
-- The SOP Instance UID is kept only as a digest: UIDs can be traced back to a patient.
CREATE TABLE received_instances (
    model_id          uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    sop_instance_sha256 text NOT NULL,
    estimate_id       uuid NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, sop_instance_sha256)
);
