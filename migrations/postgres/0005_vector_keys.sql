-- A stable key per stored vector, for the nearest-neighbour indexes: the in-process index catches
-- up by it, and pgvector's results are resolved to chunks through it. Existing rows are numbered
-- as the column is added.
ALTER TABLE embedding_cache ADD COLUMN IF NOT EXISTS seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX IF NOT EXISTS embedding_cache_seq ON embedding_cache (seq);
CREATE INDEX IF NOT EXISTS embedding_cache_model_seq ON embedding_cache (model, dimensions, seq);
