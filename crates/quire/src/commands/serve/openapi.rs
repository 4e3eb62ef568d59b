//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 description, generated from the code, never
//! written by hand. Each handler carries its own `#[utoipa::path]` (its parameters, body and
//! every status it answers with), the types it answers with derive `utoipa::ToSchema` where they
//! are defined, and `utoipa-axum` mounts each handler at the path its attribute names, so a
//! route cannot be served without being described, nor described at another path.
//!
//! What every route shares is added here, from the rules that make it true rather than repeated
//! on each handler: the answers of the server's own failures (500, the database's 503), which
//! any route may give, and the guard's (401, 403, and the optional bearer token), which every
//! route that changes something may give — the same test of the method that
//! [`super::guard_mutations`] applies.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi as _;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

use super::{ApiState, ErrorBody};

/// What the derive collects beyond the routes: the title, the tags and the error body.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "quire",
        description = "Upload EPUB books, follow their processing jobs, and read their chunks, \
                       connections and search hits. Reads are open; a request that changes \
                       something must come from the server's own origin and, when the server \
                       has a token (`QUIRE_API_TOKEN`), carry it as `Authorization: Bearer TOKEN`."
    ),
    tags(
        (name = "documents", description = "Uploaded books, their chunks and connections"),
        (name = "jobs", description = "The processing jobs and what an operator does to them"),
        (name = "dead letters", description = "Jobs that failed for good"),
        (name = "queue", description = "The queue at a glance, and search"),
        (name = "meta", description = "This description"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The description the routes are added to.
pub(super) fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The name of the bearer token's security scheme.
const BEARER: &str = "bearer";

/// Adds what every route shares (see the module documentation) to the routes' description.
pub(super) fn finish(mut openapi: OpenApi) -> OpenApi {
    let error = || Content::new(Some(Ref::from_schema_name("Error")));
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(BEARER, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    let shared = [
        ("ServerError", "The server failed; its log has the cause under `request_id`"),
        ("Unavailable", "The database is unavailable; its log has the cause under `request_id`"),
        ("Unauthorized", "The server has a token and the request did not carry it (`WWW-Authenticate: Bearer`)"),
        ("CrossSite", "A browser's request from another site, which may not change anything"),
    ];
    for (name, description) in shared {
        let response = ResponseBuilder::new().description(description).content("application/json", error()).build();
        components.responses.insert(name.to_owned(), RefOr::T(response));
    }
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::HEAD, &mut item.head),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                describe_shared(&method, operation);
            }
        }
    }
    openapi
}

/// The shared answers of one operation: a status the handler names itself keeps its own
/// description (the upload's busy 503 says more than the database's).
fn describe_shared(method: &Method, operation: &mut Operation) {
    let mut shared = vec![("500", "ServerError"), ("503", "Unavailable")];
    if super::changes_something(method) {
        shared.extend([("401", "Unauthorized"), ("403", "CrossSite")]);
        // No token on loopback (an empty requirement), or the server's token.
        operation.security =
            Some(vec![SecurityRequirement::default(), SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    for (status, response) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(response)));
    }
}

/// An EPUB file's bytes, as a request body or a form field.
pub(super) struct EpubFile;

impl utoipa::PartialSchema for EpubFile {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("An EPUB file (a ZIP archive)"))
            .into()
    }
}

impl utoipa::ToSchema for EpubFile {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EpubFile")
    }
}

/// This description of the API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The API's OpenAPI 3.1 description", body = Object)),
)]
pub(super) async fn openapi_json(State(state): State<Arc<ApiState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::queue::{MAX_HITS, MAX_PAGE};
    use crate::commands::serve::test_api::api;

    /// The operations of the served description: (method, path, operation).
    fn operations(description: &Value) -> Vec<(String, String, Value)> {
        let paths = description["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(method, operation)| (method.clone(), path.clone(), operation.clone()))
            })
            .collect()
    }

    #[tokio::test]
    async fn the_description_is_served_with_the_guards_answers_on_every_change() {
        let api = api().await;
        let (status, description) = api.get("/v1/openapi.json").await;
        assert_eq!(status, 200, "{description}");
        assert!(description["openapi"].as_str().is_some_and(|version| version.starts_with("3.")), "{description}");
        let operations = operations(&description);
        assert!(operations.len() >= 15, "{operations:?}");
        for (method, path, operation) in &operations {
            assert!(path.starts_with("/v1/"), "{path}");
            let responses = operation["responses"].as_object().unwrap();
            for status in ["500", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            let changes = method != "get";
            for status in ["401", "403"] {
                assert_eq!(responses.contains_key(status), changes, "{method} {path}: {status}");
            }
            assert_eq!(operation.get("security").is_some(), changes, "{method} {path}");
        }
        assert!(operations.iter().any(|(method, path, _)| method == "delete" && path == "/v1/dlq"));
        assert!(description["components"]["schemas"]["Error"]["properties"]["error"].is_object(), "{description}");
    }

    #[tokio::test]
    async fn the_described_bounds_are_the_ones_the_handlers_keep() {
        let api = api().await;
        let (_, description) = api.get("/v1/openapi.json").await;
        let maximum = |path: &str, name: &str| {
            let parameters = description["paths"][path]["get"]["parameters"].as_array().unwrap();
            let parameter = parameters.iter().find(|parameter| parameter["name"] == name).unwrap();
            parameter["schema"]["maximum"].as_u64()
        };
        for path in ["/v1/jobs", "/v1/documents", "/v1/documents/{id}/chunks", "/v1/documents/{id}/connections"] {
            assert_eq!(maximum(path, "limit"), Some(u64::from(MAX_PAGE)), "{path}");
        }
        assert_eq!(maximum("/v1/search", "limit"), Some(u64::from(MAX_HITS)));
    }
}
