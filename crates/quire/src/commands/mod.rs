//! One module per command.

pub mod clean;
pub mod connections;
pub mod dlq;
pub mod jobs;
pub mod process;
pub mod replay;
pub mod search;
pub mod serve;
pub mod status;
pub mod submit;
pub mod worker;

use std::process::ExitCode;

use crate::app::App;
use crate::cli::GlobalOptions;

/// `quire migrate`: opening the store applies pending migrations.
pub async fn migrate(global: &GlobalOptions) -> anyhow::Result<ExitCode> {
    App::open(global).await?;
    println!("database is up to date");
    Ok(ExitCode::SUCCESS)
}
