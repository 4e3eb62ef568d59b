//! `quire submit FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::App;
use crate::cli::GlobalOptions;
use crate::output::{or_dash, print_json, table};

/// Stores and queues each file; exits non-zero if any could not be submitted.
pub async fn run(global: &GlobalOptions, files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let app = App::open(global).await?;
    let mut submissions = Vec::new();
    let mut failed = false;
    for file in files {
        match worker::submit_file(app.store.as_ref(), &app.data_dir, file).await {
            Ok(submission) => submissions.push(submission),
            Err(error) => {
                failed = true;
                eprintln!("error: {}", crate::output::printable(&error.to_string()));
            }
        }
    }
    if json {
        print_json(&submissions)?;
    } else {
        let rows = submissions.iter().map(|s| {
            [
                s.file_name.clone(),
                s.document_id.clone(),
                or_dash(s.job_id),
                if s.deduplicated { "yes" } else { "no" }.to_owned(),
            ]
        });
        println!("{}", table(["file", "document", "job", "deduplicated"], rows));
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
