-- The term search reads each term's postings with a MATCH on `chunk_terms` (see
-- crates/checkpoint-store/src/term_index.rs); the fts5vocab table it read them through before
-- has no reader left.
DROP TABLE IF EXISTS chunk_term_postings;
