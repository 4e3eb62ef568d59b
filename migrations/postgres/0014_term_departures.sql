-- Every chunk that leaves the term index, or whose term vector is rewritten (a rebuild under new
-- term rules), numbered: the in-process term cache (crates/checkpoint-store/src/term_cache.rs)
-- reads the departures above its safe low, drops those chunks, and reads again the ones still
-- indexed. The numbers come from a sequence, so a transaction that took a lower number may commit
-- after one that took a higher: the cache reads again the numbers of the last two minutes, and a
-- new process starts where `departed_at` (the server's transaction time, in milliseconds; a
-- trigger cannot see a clock injected into the store) is that old. A chunk's key (`chunks.seq`)
-- is never given out again, unlike SQLite's rowid, so removing a key twice is harmless.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
CREATE TABLE IF NOT EXISTS chunk_term_departures (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chunk       BIGINT NOT NULL,
    departed_at BIGINT NOT NULL DEFAULT floor(extract(epoch FROM now()) * 1000)::bigint
);

-- One statement's deleted chunks at once (a document's, when it is reprocessed or deleted).
CREATE OR REPLACE FUNCTION chunk_terms_depart_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunk_term_departures (chunk) SELECT seq FROM departed ORDER BY seq;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS chunk_terms_depart_deleted ON chunks;
CREATE TRIGGER chunk_terms_depart_deleted
    AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS departed
    FOR EACH STATEMENT
    EXECUTE FUNCTION chunk_terms_depart_deleted();

CREATE OR REPLACE FUNCTION chunk_terms_depart_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunk_term_departures (chunk) VALUES (OLD.seq);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS chunk_terms_depart_rewritten ON chunks;
CREATE TRIGGER chunk_terms_depart_rewritten
    AFTER UPDATE OF term_vector ON chunks
    FOR EACH ROW
    WHEN (OLD.term_vector IS DISTINCT FROM NEW.term_vector)
    EXECUTE FUNCTION chunk_terms_depart_rewritten();
