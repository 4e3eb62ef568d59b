//! The one transport every request of the OpenAI embedder takes: [`OneShotTransport`] sends a
//! request once (async-openai's own path retries and hides the response's headers) and turns
//! every non-success response into an [`EmbedError`] while its status and `Retry-After` are at
//! hand; [`classify_openai_error`] maps what comes back through async-openai.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use super::{DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER};
use crate::EmbedError;

/// Most bytes of an error body we read (the message is all we keep).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most characters of a server message we keep in an error.
const MAX_MESSAGE_CHARS: usize = 500;

/// Maps what async-openai returns to our classification.
pub(super) fn classify_openai_error(error: OpenAIError) -> EmbedError {
    match error {
        // Everything our transport decided (non-success statuses, transport
        // failures) comes back boxed.
        OpenAIError::Boxed(boxed) => match boxed.downcast::<EmbedError>() {
            Ok(ours) => *ours,
            Err(other) => EmbedError::Retryable(other.to_string()),
        },
        // Reading a successful response's body failed (cut short, timed out).
        OpenAIError::Reqwest(e) => classify_reqwest_error(&e),
        // A 2xx whose body is not the JSON we expect.
        OpenAIError::JSONDeserialize(e, body) => {
            EmbedError::Permanent(format!("malformed embedding response: {e}: {}", shorten(&body)))
        }
        // Our transport never lets a non-success status through, so this
        // only happens if that invariant breaks; trust the status.
        OpenAIError::ApiError(api) => {
            let message = format!("HTTP {}: {}", api.status_code, api.api_error.message);
            if refuses_the_account(api.status_code, &message) {
                EmbedError::AccountRefused(message)
            } else if api.status_code == StatusCode::TOO_MANY_REQUESTS {
                EmbedError::RateLimited { retry_after: DEFAULT_RETRY_AFTER }
            } else if api.status_code.is_server_error() {
                EmbedError::Retryable(message)
            } else {
                EmbedError::Permanent(message)
            }
        }
        other => EmbedError::Permanent(other.to_string()),
    }
}

/// Transport failures are transient, except a request that cannot be built.
pub(super) fn classify_reqwest_error(error: &reqwest::Error) -> EmbedError {
    // `Display` of reqwest errors omits the cause ("error sending request"),
    // which is the useful part.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_builder() { EmbedError::Permanent(message) } else { EmbedError::Retryable(message) }
}

/// The tower service async-openai runs for every request, replacing its
/// retrying default: one attempt, and non-success statuses become
/// [`EmbedError`]s while the headers are still available.
#[derive(Clone, Debug)]
pub(super) struct OneShotTransport {
    /// Connection pool, timeouts.
    pub(super) http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for OneShotTransport {
    type Response = Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(|e| boxed(classify_reqwest_error(&e)))?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(boxed(classify_response(response, SystemTime::now()).await))
            }
        })
    }
}

fn boxed(error: EmbedError) -> OpenAIError {
    OpenAIError::Boxed(Box::new(error))
}

/// Whether a response refuses the account rather than the request: 401, 403, or the 429 that
/// OpenAI also answers when the account is out of credit (waiting for the rate limit does not
/// help; an operator must act).
fn refuses_the_account(status: StatusCode, message: &str) -> bool {
    status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || (status == StatusCode::TOO_MANY_REQUESTS && message.contains("insufficient_quota"))
}

/// Classifies a non-success response: the account refused → [`EmbedError::AccountRefused`],
/// 429 → rate limited, 5xx and 408 → retryable, the rest → permanent with the server's message.
async fn classify_response(mut response: Response, now: SystemTime) -> EmbedError {
    let status = response.status();
    let retry_after = parse_retry_after(response.headers(), now);

    let mut body = Vec::new();
    // A body that fails half-way still leaves the status to classify by.
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let message = format!("HTTP {status}: {}", error_message(&body));

    if refuses_the_account(status, &message) {
        EmbedError::AccountRefused(message)
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!(?retry_after, %message, "embedding request rate limited");
        EmbedError::RateLimited { retry_after }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        EmbedError::Retryable(message)
    } else {
        EmbedError::Permanent(message)
    }
}

/// The server's message from an error body: `{"error":{"message":…}}`,
/// `{"error":"…"}` or `{"message":…}`, else the body as text. Keeps the
/// `code`/`type` of an OpenAI error, which tells apart quota from rate limits.
pub(super) fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = json.get("error").unwrap_or(&json);
        if let Some(text) = error.as_str() {
            return shorten(text);
        }
        if let Some(message) = error.get("message").and_then(|m| m.as_str()) {
            let mut out = shorten(message);
            for key in ["type", "code"] {
                if let Some(value) = error.get(key).and_then(|v| v.as_str()) {
                    out.push_str(&format!(" ({key}: {value})"));
                }
            }
            return out;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { "(empty body)".to_string() } else { shorten(text) }
}

/// At most [`MAX_MESSAGE_CHARS`] characters of `text`.
pub(super) fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The wait a 429 asks for: `retry-after-ms` (sent by OpenAI), else
/// `Retry-After` as seconds or as an HTTP-date; [`DEFAULT_RETRY_AFTER`] when
/// absent or unreadable; never more than [`MAX_RETRY_AFTER`].
pub(super) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_ms = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64((ms / 1000.0).min(MAX_RETRY_AFTER.as_secs_f64())));
    let from_header = || {
        let value = header(RETRY_AFTER.as_str())?;
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        let date = httpdate::parse_http_date(value).ok()?;
        Some(date.duration_since(now).unwrap_or(Duration::ZERO))
    };
    from_ms.or_else(from_header).unwrap_or(DEFAULT_RETRY_AFTER).min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = |pairs: &[(&'static str, &str)], expected: Duration| {
            assert_eq!(parse_retry_after(&headers(pairs), now), expected, "{pairs:?}");
        };
        check(&[("retry-after", "7")], Duration::from_secs(7));
        check(&[("retry-after", " 0 ")], Duration::ZERO);
        check(&[], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "soon")], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "-3")], DEFAULT_RETRY_AFTER);
        check(&[("retry-after", "999999999")], MAX_RETRY_AFTER);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        check(&[("retry-after", &in_90s)], Duration::from_secs(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        check(&[("retry-after", &past)], Duration::ZERO);
        check(&[("retry-after-ms", "1500"), ("retry-after", "9")], Duration::from_millis(1500));
        check(&[("retry-after-ms", "NaN"), ("retry-after", "9")], Duration::from_secs(9));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad input","type":"invalid_request_error"}}"#),
            "bad input (type: invalid_request_error)"
        );
        assert_eq!(error_message(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(error_message(br#"{"message":"nope"}"#), "nope");
        assert_eq!(error_message(b"<html>Too Many</html>"), "<html>Too Many</html>");
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(error_message("é".repeat(900).as_bytes()).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
