#!/usr/bin/env python3
"""Do two editions of one book, processed into a library, still pair the same passages?

Usage: editions.py DATA_DIR EDITION_A.epub EDITION_B.epub

Reads DATA_DIR/quire.db after `quire process EDITION_A EDITION_B --data-dir DATA_DIR`. For each
chunk of edition B (20 terms or more) it takes its best connection into edition A, per engine,
and calls the pair the same passage when at least half of their word sets are shared (Jaccard of
lowercase words of three letters or more). Prints, per engine, how many chunks of B found A at
all and how many of those found the same passage.
"""
import re
import sqlite3
import sys


def words(text):
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) >= 3}


def main():
    data_dir, first, second = sys.argv[1:4]
    db = sqlite3.connect(f"file:{data_dir}/quire.db?mode=ro", uri=True)
    docs = {name: doc for doc, name in db.execute("SELECT id, file_name FROM documents")}
    a, b = docs[first.rsplit("/", 1)[-1]], docs[second.rsplit("/", 1)[-1]]
    text = {cid: t for cid, t in db.execute("SELECT id, text FROM chunks WHERE document_id IN (?, ?)", (a, b))}
    doc_of = {cid: d for cid, d in db.execute("SELECT id, document_id FROM chunks WHERE document_id IN (?, ?)", (a, b))}
    passages = [c for c, d in doc_of.items() if d == b and len(words(text[c])) >= 20]
    for engine in ("lexical", "semantic"):
        best = {}
        rows = db.execute(
            "SELECT source_chunk_id, target_chunk_id, score FROM connections WHERE engine = ?", (engine,)
        )
        for source, target, score in rows:
            # Either direction: whichever edition was processed second found the pair.
            for s, t in ((source, target), (target, source)):
                if doc_of.get(s) == b and doc_of.get(t) == a and (s not in best or score > best[s][0]):
                    best[s] = (score, t)
        found = [p for p in passages if p in best]
        same = 0
        for p in found:
            wa, wb = words(text[p]), words(text[best[p][1]])
            if len(wa & wb) / max(1, len(wa | wb)) >= 0.5:
                same += 1
        print(f"{engine}: {len(found)} of {len(passages)} passages of B found A; "
              f"{same} of those ({same / max(1, len(found)):.1%}) the same passage")


if __name__ == "__main__":
    main()
