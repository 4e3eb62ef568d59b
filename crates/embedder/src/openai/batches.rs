//! The Batch API of the OpenAI embedder: async-openai's files and batches endpoints with our own
//! lenient request and response types, and the reading of a batch's output file.

use serde::{Deserialize, Serialize};

use super::transport::{classify_openai_error, error_message, shorten};
use super::{EmbeddingRequest, EmbeddingResponse, OpenAiEmbedder};
use crate::{BatchInfo, BatchInput, BatchResults, BatchService, BatchState, EmbedError};

/// The Batch API through async-openai's files and batches endpoints, on the same one-shot
/// transport as `embed`: every call is one HTTP request, never retried. Response types are our
/// own and lenient (`byot`), like the embeddings response.
#[async_trait::async_trait]
impl BatchService for OpenAiEmbedder {
    async fn submit(&self, inputs: &[BatchInput]) -> Result<BatchInfo, EmbedError> {
        if inputs.is_empty() {
            return Err(EmbedError::Permanent("a batch needs at least one input".into()));
        }
        let mut jsonl = Vec::new();
        for input in inputs {
            let line = BatchRequestLine {
                custom_id: &input.custom_id,
                method: "POST",
                url: "/v1/embeddings",
                body: EmbeddingRequest {
                    model: &self.model,
                    input: std::slice::from_ref(&input.text),
                    dimensions: self.requested_dimensions,
                },
            };
            serde_json::to_writer(&mut jsonl, &line)
                .map_err(|e| EmbedError::Permanent(format!("cannot encode a batch request: {e}")))?;
            jsonl.push(b'\n');
        }
        let upload = async_openai::types::files::CreateFileRequest {
            file: async_openai::types::files::FileInput {
                source: async_openai::types::InputSource::VecU8 {
                    filename: "quire-embeddings.jsonl".into(),
                    vec: jsonl,
                },
            },
            purpose: async_openai::types::files::FilePurpose::Batch,
            expires_after: None,
        };
        let file: UploadedFile = self.client.files().create_byot(upload).await.map_err(classify_openai_error)?;
        let request = serde_json::json!({
            "input_file_id": file.id,
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
            "metadata": { "source": "quire", "inputs": inputs.len().to_string() },
        });
        let batch: BatchObject = self.client.batches().create_byot(request).await.map_err(classify_openai_error)?;
        batch.into_info(Some(file.id))
    }

    async fn status(&self, batch_id: &str) -> Result<BatchInfo, EmbedError> {
        let batch: BatchObject = self.client.batches().retrieve_byot(batch_id).await.map_err(classify_openai_error)?;
        batch.into_info(None)
    }

    async fn results(&self, output_file_id: &str) -> Result<BatchResults, EmbedError> {
        let bytes = self.client.files().content(output_file_id).await.map_err(classify_openai_error)?;
        Ok(parse_batch_output(&bytes, self.dimensions))
    }

    async fn cancel(&self, batch_id: &str) -> Result<BatchInfo, EmbedError> {
        let batch: BatchObject = self.client.batches().cancel_byot(batch_id).await.map_err(classify_openai_error)?;
        batch.into_info(None)
    }
}

/// One line of a batch input file.
#[derive(Debug, Serialize)]
struct BatchRequestLine<'a> {
    /// Comes back with the result.
    custom_id: &'a str,
    /// Always `POST`.
    method: &'static str,
    /// Always `/v1/embeddings`.
    url: &'static str,
    /// The embeddings request for this input.
    body: EmbeddingRequest<'a>,
}

/// The answer to a file upload: only the id matters.
#[derive(Debug, Deserialize)]
struct UploadedFile {
    /// The file id.
    id: String,
}

/// A batch object, leniently: only `id` and `status` are required.
#[derive(Debug, Deserialize)]
struct BatchObject {
    /// The batch id.
    id: String,
    /// `validating`, `in_progress`, …
    status: String,
    /// The uploaded requests.
    #[serde(default)]
    input_file_id: Option<String>,
    /// The results.
    #[serde(default)]
    output_file_id: Option<String>,
    /// The failed requests.
    #[serde(default)]
    error_file_id: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    created_at: Option<i64>,
    /// Why a batch failed (`{"data": [{"message": …}]}`).
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

impl BatchObject {
    fn into_info(self, input_file_id: Option<String>) -> Result<BatchInfo, EmbedError> {
        let state = BatchState::parse(&self.status).ok_or_else(|| {
            EmbedError::Retryable(format!("batch {} has an unknown status {:?}", self.id, self.status))
        })?;
        let errors = self.errors.filter(|e| !e.is_null()).map(|errors| {
            let messages: Vec<String> = errors["data"]
                .as_array()
                .map(|items| items.iter().filter_map(|i| i["message"].as_str().map(shorten)).collect())
                .unwrap_or_default();
            if messages.is_empty() { shorten(&errors.to_string()) } else { messages.join("; ") }
        });
        Ok(BatchInfo {
            id: self.id,
            state,
            input_file_id: self.input_file_id.or(input_file_id).unwrap_or_default(),
            output_file_id: self.output_file_id.filter(|id| !id.is_empty()),
            error_file_id: self.error_file_id.filter(|id| !id.is_empty()),
            created_at: self.created_at.unwrap_or(0),
            errors,
        })
    }
}

/// One line of a batch output file.
#[derive(Debug, Deserialize)]
struct BatchOutputLine {
    /// The request's `custom_id`.
    custom_id: String,
    /// The HTTP response the service got for it.
    #[serde(default)]
    response: Option<BatchOutputResponse>,
    /// Set when the request could not be run.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The response part of an output line.
#[derive(Debug, Deserialize)]
struct BatchOutputResponse {
    /// HTTP status of the embeddings request.
    status_code: u16,
    /// Its body: an embeddings response on success.
    #[serde(default)]
    body: serde_json::Value,
}

/// Parses an output file: one JSON object per line; lines that failed or cannot be read are
/// reported in `failed`, never silently dropped.
fn parse_batch_output(bytes: &[u8], dimensions: usize) -> BatchResults {
    let mut results = BatchResults::default();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let parsed: BatchOutputLine = match serde_json::from_slice(line) {
            Ok(parsed) => parsed,
            Err(e) => {
                results.failed.push(("?".into(), format!("unreadable output line: {e}")));
                continue;
            }
        };
        let id = parsed.custom_id;
        if let Some(error) = parsed.error.filter(|e| !e.is_null()) {
            results.failed.push((id, error_message(error.to_string().as_bytes())));
            continue;
        }
        let Some(response) = parsed.response else {
            results.failed.push((id, "no response".into()));
            continue;
        };
        if !(200..300).contains(&response.status_code) {
            let message = error_message(response.body.to_string().as_bytes());
            results.failed.push((id, format!("HTTP {}: {message}", response.status_code)));
            continue;
        }
        let vectors = serde_json::from_value::<EmbeddingResponse>(response.body)
            .map_err(|e| EmbedError::Permanent(format!("malformed embedding response: {e}")))
            .and_then(|r| r.into_vectors(1, dimensions));
        match vectors {
            Ok(mut vectors) => results.vectors.push((id, vectors.remove(0))),
            Err(e) => results.failed.push((id, e.to_string())),
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_output_parsing() {
        let output = concat!(
            r#"{"id":"r1","custom_id":"a","response":{"status_code":200,"body":{"data":[{"index":0,"embedding":[1.0,0.0]}]}},"error":null}"#,
            "\n",
            r#"{"id":"r2","custom_id":"b","response":{"status_code":400,"body":{"error":{"message":"too long"}}},"error":null}"#,
            "\n\n",
            r#"{"id":"r3","custom_id":"c","response":null,"error":{"message":"expired"}}"#,
            "\n",
            r#"{"id":"r4","custom_id":"d","response":{"status_code":200,"body":{"data":[{"embedding":[1.0]}]}}}"#,
            "\nnot json\n",
        );
        let results = parse_batch_output(output.as_bytes(), 2);
        assert_eq!(results.vectors, vec![("a".to_string(), vec![1.0, 0.0])]);
        let failed: Vec<&str> = results.failed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(failed, vec!["b", "c", "d", "?"]);
        assert!(results.failed[0].1.contains("too long"));
    }

    #[test]
    fn batch_objects_are_read_leniently() {
        let object: BatchObject =
            serde_json::from_str(r#"{"id":"batch_1","status":"failed","errors":{"data":[{"message":"bad line"}]}}"#)
                .unwrap();
        let info = object.into_info(Some("file_1".into())).unwrap();
        assert_eq!((info.state, info.input_file_id.as_str()), (BatchState::Failed, "file_1"));
        assert_eq!(info.errors.as_deref(), Some("bad line"));
        let object: BatchObject = serde_json::from_str(r#"{"id":"b","status":"paused"}"#).unwrap();
        assert!(matches!(object.into_info(None), Err(EmbedError::Retryable(_))));
    }
}
