-- A chunk's connections go with it, deleted once per statement rather than checked once per row.
--
-- A book's connections are written thousands at a time (11,700 for a long novel in a 100k-chunk
-- library), and each foreign key of `connections` checked every row on its own: a lookup and a
-- row lock of the chunk it names, twice per row, about two thirds of the insert's time. The one
-- writer of connections (`replace_connections`, crates/checkpoint-store/src/postgres/documents.rs)
-- already locks every chunk it names `FOR KEY SHARE` and leaves out any row naming a chunk that is
-- gone, so the check on insert only repeated it. What the keys also did, deleting a chunk's
-- connections from and to it when the chunk is deleted (its document reprocessed or deleted), the
-- trigger below does, once per deleting statement. SQLite keeps its foreign keys: it checks them
-- in its own process, at a cost its inserts do not notice.
--
-- Idempotent, like every PostgreSQL migration here: applying it again changes nothing.
ALTER TABLE connections
    DROP CONSTRAINT IF EXISTS connections_source_chunk_id_fkey,
    DROP CONSTRAINT IF EXISTS connections_target_chunk_id_fkey;

CREATE OR REPLACE FUNCTION connections_follow_deleted_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM connections WHERE source_chunk_id IN (SELECT id FROM deleted_chunks);
    DELETE FROM connections WHERE target_chunk_id IN (SELECT id FROM deleted_chunks);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS connections_follow_deleted_chunks ON chunks;
CREATE TRIGGER connections_follow_deleted_chunks
    AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS deleted_chunks
    FOR EACH STATEMENT
    EXECUTE FUNCTION connections_follow_deleted_chunks();

-- Connections that name a chunk deleted before this migration ran cannot exist (the keys above
-- deleted them), so there is nothing to clean up.
