//! How domain values become SQL values and back, once for both backends: the vector encoding,
//! the checked integer conversions, enum columns stored as text, and what an empty fenced write
//! means.
//!
//! Reading is strict: a value that does not fit its domain type (a negative count, an unknown
//! status, a vector whose length is not a whole number of floats) is a
//! [`StoreError::Corrupt`], never a silently clamped value.

use std::str::FromStr;

use crate::error::{StoreError, StoreResult};
use crate::model::Lease;

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
    fn out_of_range_counts_are_corrupt_not_clamped() {
        assert_eq!(unsigned::<i32, u32>("chunk_count", 7).unwrap(), 7);
        assert!(matches!(unsigned::<i32, u32>("chunk_count", -1), Err(StoreError::Corrupt(_))));
        assert!(matches!(unsigned::<i64, u32>("chunk_count", 1 << 40), Err(StoreError::Corrupt(_))));
    }
}
