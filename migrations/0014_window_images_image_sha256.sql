-- no-transaction
-- Blob deletes ask blob_references whether a digest is used; window images are one of its branches.
CREATE INDEX CONCURRENTLY IF NOT EXISTS window_images_image_sha256 ON window_images (image_sha256);
