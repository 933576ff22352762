-- The threshold belongs to ONNX reverse segmenters: a label-fusion model stores none (NULL here).
-- Expand step of a rename: `reverse_threshold` (NOT NULL, default 0.4) stays for replicas of the
-- previous release during a rolling deploy, and this release keeps writing it; a later release drops it.
ALTER TABLE models ADD COLUMN onnx_threshold real;
UPDATE models SET onnx_threshold = reverse_threshold WHERE reverse_segmenter_id IS NOT NULL;
