-- Clinical inputs (DICOM frames, NIfTI slices): where each stored image came from, its physical pixel size,
-- and batch pixels that are dropped once their estimate is finished (the hashes stay, for tracing).

ALTER TABLE image_set_items
    ADD COLUMN source_sha256  text,
    ADD COLUMN source_format  text CHECK (source_format IN ('png', 'jpeg', 'dicom', 'nifti')),
    ADD COLUMN source_index   integer,
    -- Size of one pixel of the 128x128 working grid, in mm, when the source says.
    ADD COLUMN pixel_row_mm   double precision,
    ADD COLUMN pixel_col_mm   double precision;

ALTER TABLE image_sets ADD COLUMN pixels_purged_at timestamptz;

-- A purged set keeps its rows (and so its hashes) but no longer holds its blobs.
CREATE OR REPLACE VIEW blob_references (sha256) AS
          SELECT onnx_sha256 FROM models
UNION ALL SELECT onnx_sha256 FROM reverse_segmenters
UNION ALL SELECT i.image_sha256 FROM image_set_items i JOIN image_sets s ON s.id = i.set_id
          WHERE s.pixels_purged_at IS NULL
UNION ALL SELECT i.label_sha256 FROM image_set_items i JOIN image_sets s ON s.id = i.set_id
          WHERE i.label_sha256 IS NOT NULL AND s.pixels_purged_at IS NULL
UNION ALL SELECT onnx_sha256 FROM calibration_checkpoints WHERE onnx_sha256 IS NOT NULL;
