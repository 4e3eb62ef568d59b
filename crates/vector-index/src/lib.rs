//! Similarity search for quire: cosine math written once, a bounded [`TopK`] accumulator for
//! exact search over a stream, [`AnnIndex`], an approximate nearest-neighbour index (HNSW)
//! with snapshots, and [`TieredIndex`], an `AnnIndex` with a tail of recent vectors searched
//! exactly until they are folded into the graph.
//!
//! The one design choice to understand: **an index here is a cache, never a source of truth.**
//! Keys are chosen by the caller (quire uses the database row of each stored vector), a key names
//! one immutable vector, and a snapshot that is missing, stale or corrupt is simply rebuilt by the
//! caller from the database. Nothing here knows about chunks, documents or SQL.
//!
//! ```
//! use vector_index::{AnnIndex, Quantization, cosine};
//!
//! let mut index = AnnIndex::new(2, Quantization::F32).unwrap();
//! index.add_batch(&[(1, vec![1.0, 0.0]), (2, vec![0.0, 1.0]), (3, vec![0.9, 0.1])]).unwrap();
//! let nearest = index.search_batch(&[vec![1.0, 0.05]], 2).unwrap();
//! let keys: Vec<u64> = nearest[0].iter().map(|hit| hit.key).collect();
//! assert_eq!(keys, [1, 3]);
//! assert!((nearest[0][0].score - cosine(&[1.0, 0.05], &[1.0, 0.0]).unwrap()).abs() < 1e-3);
//! ```

mod hnsw;
pub mod math;
mod tiered;
mod top_k;

pub use hnsw::{AnnIndex, IndexError, Quantization};
pub use math::{cosine, dot, unit, unit_cosine};
pub use tiered::TieredIndex;
pub use top_k::{Scored, TopK};
