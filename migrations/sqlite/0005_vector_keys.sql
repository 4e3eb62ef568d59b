-- The nearest-neighbour indexes catch up with the embedding cache by key (`rowid`): list one
-- model's keys above a mark without scanning other models' rows.
CREATE INDEX IF NOT EXISTS embedding_cache_model_key ON embedding_cache (model, dimensions);
