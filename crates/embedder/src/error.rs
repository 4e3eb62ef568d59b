//! The one error type of the crate, classified for the job queue.

use std::time::Duration;

/// Why an embedding request failed, classified so the queue knows whether and
/// when to try again.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EmbedError {
    /// The provider answered 429: try again no sooner than `retry_after`
    /// (taken from `Retry-After`, capped; a default when the header is absent).
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait before the next attempt.
        retry_after: Duration,
    },
    /// A transient failure: 5xx, 408, timeouts, connection errors, a body cut
    /// short. The same request may succeed later.
    #[error("transient embedding failure: {0}")]
    Retryable(String),
    /// The request can never succeed as is: 4xx other than 408 and 429 (with
    /// the server's message), bad configuration, or a malformed response
    /// (wrong number of vectors, wrong dimensions, unparseable JSON).
    #[error("permanent embedding failure: {0}")]
    Permanent(String),
    /// The provider refuses the account, not the request: an invalid or revoked key (401), a
    /// key without access (403), or no credit left (`insufficient_quota`). No request of any
    /// book can succeed until an operator acts, and nothing is wrong with the book.
    #[error("the embedding service refuses this account: {0}")]
    AccountRefused(String),
}

impl EmbedError {
    /// Whether the same request may succeed later ([`EmbedError::RateLimited`]
    /// and [`EmbedError::Retryable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Retryable(_))
    }

    /// The delay the provider asked for, if this is a rate limit.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let limited = EmbedError::RateLimited { retry_after: Duration::from_secs(7) };
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert!(EmbedError::Retryable("503".into()).is_retryable());
        assert!(!EmbedError::Permanent("400".into()).is_retryable());
        assert_eq!(EmbedError::Permanent("400".into()).retry_after(), None);
        assert!(!EmbedError::AccountRefused("401".into()).is_retryable());
    }
}
