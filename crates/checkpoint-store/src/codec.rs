//! How domain values become SQL values and back, once for both backends: the vector encoding,
//! the checked integer conversions, enum columns stored as text, and what an empty fenced write
//! means.
//!
//! Reading is strict: a value that does not fit its domain type (a negative count, an unknown
//! status, a vector whose length is not a whole number of floats) is a
//! [`StoreError::Corrupt`], never a silently clamped value.

use std::str::FromStr;

use crate::error::{StoreError, StoreResult};
use crate::jobs::Lease;

/// Little-endian f32s: the bytes both backends store (SQLite BLOB, PostgreSQL BYTEA).
pub(crate) fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|value| value.to_le_bytes()).collect()
}

/// The vector [`encode_vector`] wrote.
pub(crate) fn decode_vector(bytes: &[u8]) -> StoreResult<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt(format!("vector of {} bytes is not a whole number of f32s", bytes.len())));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// A chunk's counted terms as stored beside it: a JSON object from term to count, in term order
/// (`{"harpoon":2,"whale":3}`), which SQLite's triggers read with `json_each` to keep the
/// full-text index and the document frequencies.
pub(crate) fn encode_term_vector(vector: &[(String, u32)]) -> String {
    let mut json = String::with_capacity(vector.iter().map(|(term, _)| term.len() + 8).sum::<usize>() + 2);
    json.push('{');
    for (position, (term, count)) in vector.iter().enumerate() {
        if position > 0 {
            json.push(',');
        }
        // A term is letters and digits (see the `terms` crate); quoting it through serde_json
        // still keeps any character safe.
        json.push_str(&serde_json::Value::from(term.as_str()).to_string());
        json.push(':');
        json.push_str(&count.to_string());
    }
    json.push('}');
    json
}

/// The term vector [`encode_term_vector`] wrote, sorted by term; a term named twice is corrupt.
pub(crate) fn decode_term_vector(json: &str) -> StoreResult<Vec<(String, u32)>> {
    let corrupt = |reason: String| StoreError::Corrupt(format!("term vector: {reason}"));
    let mut vector: Vec<(String, u32)> = match decode_term_vector_as_written(json) {
        Some(vector) => vector,
        None => serde_json::from_str::<TermVectorJson>(json).map_err(|e| corrupt(e.to_string()))?.0,
    };
    if !vector.is_sorted_by(|a, b| a.0 < b.0) {
        vector.sort_unstable();
        if let Some(pair) = vector.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(corrupt(format!("{:?} is named twice", pair[0].0)));
        }
    }
    Ok(vector)
}

/// The pairs of a term vector exactly as [`encode_term_vector`] writes it (`{"term":count,…}`:
/// no whitespace, no escapes, decimal counts), read without a JSON parser: a candidate round reads
/// tens of thousands of vectors, and serde's map visitor cost twice this. Anything else (escapes,
/// whitespace, another shape) is `None`, and the caller parses it as JSON.
fn decode_term_vector_as_written(json: &str) -> Option<Vec<(String, u32)>> {
    let mut rest = json.strip_prefix('{')?.strip_suffix('}')?;
    // A term is at least one character, with its quotes, colon and count at least five bytes.
    let mut pairs = Vec::with_capacity(rest.len() / 8);
    while !rest.is_empty() {
        rest = rest.strip_prefix('"')?;
        let (term, after) = rest.split_once('"')?;
        if term.contains(|c: char| c == '\\' || c.is_control()) {
            return None;
        }
        let after = after.strip_prefix(':')?;
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        let count: u32 = after[..digits].parse().ok()?;
        pairs.push((term.to_owned(), count));
        rest = &after[digits..];
        if !rest.is_empty() {
            rest = rest.strip_prefix(',').filter(|next| !next.is_empty())?;
        }
    }
    Some(pairs)
}

/// A JSON object read into its (key, value) pairs in the order written, without a map between.
struct TermVectorJson(Vec<(String, u32)>);

impl<'de> serde::Deserialize<'de> for TermVectorJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = TermVectorJson;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object from term to count")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TermVectorJson, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry::<String, u32>()? {
                    pairs.push(pair);
                }
                Ok(TermVectorJson(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// A text column holding one of an enum's names (status, kind, error kind).
pub(crate) fn parse_name<T: FromStr>(column: &str, text: &str) -> StoreResult<T> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("{column}: unexpected value {text:?}")))
}

/// A count, index or size column read back into its unsigned domain type; out of range is
/// corrupt (the CHECK constraints keep every such column non-negative).
pub(crate) fn unsigned<S, T>(column: &str, value: S) -> StoreResult<T>
where
    S: Copy + std::fmt::Display,
    T: TryFrom<S>,
{
    T::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} is out of range")))
}

/// An unsigned count as a BIGINT parameter, saturating (no real count reaches `i64::MAX`).
pub(crate) fn bigint(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// An unsigned count as an INTEGER parameter, saturating (PostgreSQL's INTEGER is 32 bits).
pub(crate) fn integer(value: impl TryInto<i32>) -> i32 {
    value.try_into().unwrap_or(i32::MAX)
}

/// Whether a statement failed on a unique index. Of the statements that move a job back to
/// pending, only the index of active unique keys (`jobs_active_unique_key`) can refuse them.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error) if error.is_unique_violation())
}

/// A fenced statement that changed no row found the lease gone.
pub(crate) fn fenced(lease: Lease, rows_affected: u64) -> StoreResult<()> {
    if rows_affected == 0 {
        return Err(StoreError::LeaseLost { job_id: lease.job_id });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_their_bytes() {
        let vector = vec![0.5, -1.25, f32::MAX, 0.0];
        assert_eq!(decode_vector(&encode_vector(&vector)).unwrap(), vector);
    }

    #[test]
    fn a_vector_of_a_partial_float_is_corrupt() {
        assert!(matches!(decode_vector(&[0, 0, 128]), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn term_vectors_round_trip_through_their_json() {
        let vector = vec![("harpoon".to_owned(), 2), ("whale".to_owned(), 3), ("東京".to_owned(), 1)];
        let json = encode_term_vector(&vector);
        assert_eq!(json, r#"{"harpoon":2,"whale":3,"東京":1}"#);
        assert_eq!(decode_term_vector(&json).unwrap(), vector);
        assert_eq!(decode_term_vector("{}").unwrap(), []);
    }

    #[test]
    fn the_written_shape_reads_as_json_would_and_anything_else_goes_to_the_json_parser() {
        let written =
            encode_term_vector(&[("a".to_owned(), 1), ("whale".to_owned(), 4_000_000), ("東京".to_owned(), 7)]);
        let json_read = |text: &str| serde_json::from_str::<TermVectorJson>(text).ok().map(|pairs| pairs.0);
        assert_eq!(decode_term_vector_as_written(&written), json_read(&written));
        assert_eq!(decode_term_vector_as_written("{}"), Some(vec![]));
        for other in [
            r#"{"a\"b":1}"#,
            r#"{ "a": 1 }"#,
            r#"{"a":1,}"#,
            r#"{"a":-1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":99999999999}"#,
            r#"{"a"}"#,
            r#"{"a":1"#,
            "{\"a\u{1}\":1}",
            "[1]",
            "",
        ] {
            assert_eq!(decode_term_vector_as_written(other), None, "{other}");
        }
        // Those the JSON parser accepts still decode to the same pairs.
        assert_eq!(decode_term_vector(r#"{ "a\"b": 2 }"#).unwrap(), [("a\"b".to_owned(), 2)]);
    }

    #[test]
    fn a_term_vector_out_of_order_is_sorted_and_a_repeated_term_is_corrupt() {
        let sorted = decode_term_vector(r#"{"whale":3,"harpoon":2}"#).unwrap();
        assert_eq!(sorted, [("harpoon".to_owned(), 2), ("whale".to_owned(), 3)]);
        for bad in [r#"{"whale":3,"whale":2}"#, r#"{"whale":-1}"#, "[1,2]", "not json"] {
            assert!(matches!(decode_term_vector(bad), Err(StoreError::Corrupt(_))), "{bad}");
        }
    }

    #[test]
    fn out_of_range_counts_are_corrupt_not_clamped() {
        assert_eq!(unsigned::<i32, u32>("chunk_count", 7).unwrap(), 7);
        assert!(matches!(unsigned::<i32, u32>("chunk_count", -1), Err(StoreError::Corrupt(_))));
        assert!(matches!(unsigned::<i64, u32>("chunk_count", 1 << 40), Err(StoreError::Corrupt(_))));
    }
}
