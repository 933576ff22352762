-- Every blob delete (after each estimate, after a failed upload, and in the orphan sweep) asks the
-- blob_references view whether a digest is still used. Without these indexes each question scans
-- image_set_items, which grows with every upload.

CREATE INDEX image_set_items_image_sha256 ON image_set_items (image_sha256);
CREATE INDEX image_set_items_label_sha256 ON image_set_items (label_sha256) WHERE label_sha256 IS NOT NULL;
CREATE INDEX models_onnx_sha256 ON models (onnx_sha256);
CREATE INDEX reverse_segmenters_onnx_sha256 ON reverse_segmenters (onnx_sha256);
CREATE INDEX calibration_checkpoints_onnx_sha256 ON calibration_checkpoints (onnx_sha256)
    WHERE onnx_sha256 IS NOT NULL;
