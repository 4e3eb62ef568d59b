-- Each chunk's terms with their counts, as the `terms` crate cuts its text: a JSON object from term
-- to count, in term order, kept as text (jsonb would reorder the keys). The lexical engine scores
-- candidates from it without reading or cutting their text again. NULL for chunks stored before
-- it, until the store's next start reindexes them.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS term_vector TEXT;
