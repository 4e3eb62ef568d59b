//! `quire connections DOC_ID`: a document's connections to the library, strongest first.

use std::process::ExitCode;

use anyhow::bail;
use checkpoint_store::{ChunkView, ConnectionFilter};

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::output::{excerpt, print_json, table};

/// `Title §3 › Chapter › Section`, for a table cell.
pub fn describe(chunk: &ChunkView) -> String {
    let title = chunk.document_title.as_deref().unwrap_or(&chunk.document_id);
    let mut text = format!("{} §{}", excerpt(title, 30), chunk.chunk_index);
    if !chunk.heading_path.is_empty() {
        text.push_str(" › ");
        text.push_str(&excerpt(&chunk.heading_path.join(" › "), 40));
    }
    text
}

/// Prints the document's connections; fails when the document does not exist.
pub async fn run(
    global: &GlobalOptions,
    document_id: &str,
    engine: Option<String>,
    min_score: Option<f32>,
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    if app.store.document(document_id).await?.is_none() {
        bail!("no document {document_id:?} (see `quire status`)");
    }
    let filter = ConnectionFilter { engine, min_score, limit: Some(limit) };
    let connections = app.store.connections(document_id, &filter).await?;
    if json {
        print_json(&connections)?;
        return Ok(ExitCode::SUCCESS);
    }
    if connections.is_empty() {
        println!("no connections (is the document complete? see `quire status {document_id}`)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = connections.iter().map(|c| {
        [
            format!("{:.3}", c.score),
            c.engine.clone(),
            format!("{}\n{}", describe(&c.source), excerpt(&c.source.text, 80)),
            format!("{}\n{}", describe(&c.target), excerpt(&c.target.text, 80)),
            excerpt(&c.reason, 40),
        ]
    });
    println!("{}", table(["score", "engine", "chunk", "connected to", "reason"], rows));
    Ok(ExitCode::SUCCESS)
}
