//! The Batch API behind one trait: submit many inputs at once, ask the service
//! how the batch is doing, download its results, cancel it.
//!
//! The trait is deliberately made of single calls (no polling loop, no retry):
//! the caller records the batch id durably as soon as [`BatchService::submit`]
//! returns it, and decides itself when to ask again, so that a crash never
//! loses track of work the service is already doing (and billing for).

use crate::EmbedError;

/// Where a batch stands on the service (OpenAI's `status` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchState {
    /// The input file is being checked.
    Validating,
    /// Requests are being run.
    InProgress,
    /// Results are being written.
    Finalizing,
    /// Results are available in the output file.
    Completed,
    /// The input was refused; nothing was run.
    Failed,
    /// The completion window passed; finished requests (if any) are in the output file.
    Expired,
    /// A cancellation is under way.
    Cancelling,
    /// Cancelled; finished requests (if any) are in the output file.
    Cancelled,
}

impl BatchState {
    /// Parses the service's `status` string; `None` for a value we do not know.
    pub fn parse(text: &str) -> Option<BatchState> {
        Some(match text {
            "validating" => BatchState::Validating,
            "in_progress" => BatchState::InProgress,
            "finalizing" => BatchState::Finalizing,
            "completed" => BatchState::Completed,
            "failed" => BatchState::Failed,
            "expired" => BatchState::Expired,
            "cancelling" => BatchState::Cancelling,
            "cancelled" => BatchState::Cancelled,
            _ => return None,
        })
    }

    /// The service's spelling (`in_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Validating => "validating",
            BatchState::InProgress => "in_progress",
            BatchState::Finalizing => "finalizing",
            BatchState::Completed => "completed",
            BatchState::Failed => "failed",
            BatchState::Expired => "expired",
            BatchState::Cancelling => "cancelling",
            BatchState::Cancelled => "cancelled",
        }
    }

    /// True while the batch may still change (`validating`, `in_progress`, `finalizing`,
    /// `cancelling`): wait on it rather than submit the same inputs again.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            BatchState::Validating | BatchState::InProgress | BatchState::Finalizing | BatchState::Cancelling
        )
    }
}

impl std::fmt::Display for BatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input of a batch: the text, and the id its result comes back under (quire uses the
/// chunk's content hash, so results go straight into the embedding cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    /// Unique within the batch; returned with the result.
    pub custom_id: String,
    /// The text to embed (already truncated to the per-input limit).
    pub text: String,
}

/// What the service says about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// The service's batch id.
    pub id: String,
    /// Where it stands.
    pub state: BatchState,
    /// The uploaded requests.
    pub input_file_id: String,
    /// The results, once there are any.
    pub output_file_id: Option<String>,
    /// Requests that failed, if any.
    pub error_file_id: Option<String>,
    /// Unix seconds of creation, as the service reports it (0 if absent).
    pub created_at: i64,
    /// The service's explanation for a failed batch, if it gave one.
    pub errors: Option<String>,
}

/// The results read from a batch's output file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchResults {
    /// `(custom_id, vector)` for every request that succeeded, checked for size.
    pub vectors: Vec<(String, Vec<f32>)>,
    /// `(custom_id, reason)` for every request that failed (a `?` id for unreadable lines).
    pub failed: Vec<(String, String)>,
}

/// An OpenAI-compatible Batch API for `/v1/embeddings`.
///
/// Like [`crate::Embedder`], implementations never retry: each call is one attempt, its
/// failure classified as an [`EmbedError`].
#[async_trait::async_trait]
pub trait BatchService: Send + Sync {
    /// Uploads `inputs` (JSONL, one `/v1/embeddings` request per input) and creates a batch.
    /// Returns as soon as the batch exists; the caller must record its id before anything else.
    async fn submit(&self, inputs: &[BatchInput]) -> Result<BatchInfo, EmbedError>;

    /// Asks the service where the batch stands.
    async fn status(&self, batch_id: &str) -> Result<BatchInfo, EmbedError>;

    /// Downloads and parses an output file.
    async fn results(&self, output_file_id: &str) -> Result<BatchResults, EmbedError>;

    /// Asks the service to cancel the batch; returns its state after the request.
    async fn cancel(&self, batch_id: &str) -> Result<BatchInfo, EmbedError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for state in [
            BatchState::Validating,
            BatchState::InProgress,
            BatchState::Finalizing,
            BatchState::Completed,
            BatchState::Failed,
            BatchState::Expired,
            BatchState::Cancelling,
            BatchState::Cancelled,
        ] {
            assert_eq!(BatchState::parse(state.as_str()), Some(state));
        }
        assert_eq!(BatchState::parse("paused"), None);
        assert!(BatchState::InProgress.is_running());
        assert!(!BatchState::Completed.is_running());
        assert!(!BatchState::Expired.is_running());
    }
}
