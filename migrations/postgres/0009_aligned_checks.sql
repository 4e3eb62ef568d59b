-- The CHECK constraints under the same names and with the same rules as SQLite's (see
-- migrations/sqlite/0009_aligned_checks.sql); tests/schema.rs compares the two lists by name.
--
-- Each constraint is dropped if present and added again in one statement, so running this file
-- twice is harmless, like every migration of this backend.

-- SQLite refuses text that is not JSON in the JSON columns. Here the jsonb type already does, so
-- these rules can never fail; they exist so that both schemas list the same rules.
ALTER TABLE jobs
    DROP CONSTRAINT IF EXISTS jobs_payload_check,
    ADD CONSTRAINT jobs_payload_check CHECK (jsonb_typeof(payload) IS NOT NULL),
    DROP CONSTRAINT IF EXISTS jobs_metadata_check,
    ADD CONSTRAINT jobs_metadata_check CHECK (jsonb_typeof(metadata) IS NOT NULL),
    DROP CONSTRAINT IF EXISTS jobs_result_check,
    ADD CONSTRAINT jobs_result_check CHECK (result IS NULL OR jsonb_typeof(result) IS NOT NULL);

-- 0002 left this one unnamed (PostgreSQL called it `connections_check`): a connection joins two
-- different chunks.
ALTER TABLE connections
    DROP CONSTRAINT IF EXISTS connections_check,
    DROP CONSTRAINT IF EXISTS connections_distinct_chunks,
    ADD CONSTRAINT connections_distinct_chunks CHECK (source_chunk_id <> target_chunk_id);

-- 0002 wrote this one on the `vector` column, but it reads `dimensions` too, so PostgreSQL named it
-- after the table alone (`embedding_cache_check`): a vector holds four bytes per dimension.
ALTER TABLE embedding_cache
    DROP CONSTRAINT IF EXISTS embedding_cache_check,
    DROP CONSTRAINT IF EXISTS embedding_cache_vector_check,
    ADD CONSTRAINT embedding_cache_vector_check CHECK (octet_length(vector) = dimensions * 4);
