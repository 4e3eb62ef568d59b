//! `quire`: the worker and the operator's command line.
//!
//! `main` parses the command line, sets up logging and hands over to one command module; the
//! hidden `isolated` command is dispatched first of all, before any runtime starts, because it
//! runs book parsing in a child process under a memory limit.

mod app;
mod cli;
mod commands;
mod config;
mod http;
mod metrics;
mod output;

use std::process::ExitCode;

use checkpoint_store::SearchMode;
use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("isolated") {
        return worker::run_child(&raw[2..]);
    }
    // Reads FAILPOINTS=name=action;… when built with the `failpoints` feature; a no-op otherwise.
    let _failpoints = fail::FailScenario::setup();
    let cli = match parse_command_line(&raw) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // An error can quote the book it is about (a reason, a name inside the archive).
            eprintln!("error: {}", output::printable(&error.to_string()));
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {}", output::printable(&cause.to_string()));
            }
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, with the values of the configuration file (if any) as defaults.
fn parse_command_line(raw: &[String]) -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    if let Some(file) = config::locate(raw)? {
        command = config::apply(command, &file)?;
    }
    let matches = command.get_matches_from(raw);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit()))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Process { files, embedder, json } => {
            commands::process::run(global, &files, &embedder, json, shutdown_signal()).await
        }
        Command::Submit { files, json } => commands::submit::run(global, &files, json).await,
        Command::Worker(options) => commands::worker::run(global, &options, shutdown_signal()).await,
        Command::Status { id, json } => commands::status::run(global, id.as_deref(), json).await,
        Command::Migrate => commands::migrate(global).await,
        Command::Jobs(command) => commands::jobs::run(global, command).await,
        Command::Connections { document_id, engine, min_score, limit, json } => {
            commands::connections::run(global, &document_id, engine, min_score, limit, json).await
        }
        Command::Search { query, limit, exact, embedder, json } => {
            let mode = if exact { SearchMode::Exact } else { SearchMode::Approximate };
            commands::search::run(global, &query, usize::try_from(limit).unwrap_or(usize::MAX), mode, &embedder, json)
                .await
        }
        Command::Clean { dry_run, older_than, yes, json } => {
            commands::clean::run(global, dry_run, older_than, yes, json).await
        }
        Command::Dlq(command) => commands::dlq::run(global, command).await,
        Command::Replay { job_id, from_stage, fresh, inline, embedder, json } => {
            let options = commands::replay::ReplayOptions { job_id, from_stage, fresh, inline, json };
            commands::replay::run(global, &options, &embedder, shutdown_signal()).await
        }
        Command::Serve(options) => commands::serve::run(global, &options, shutdown_signal()).await,
        Command::Isolated { .. } => unreachable!("dispatched before parsing"),
    }
}

/// A token cancelled by the first SIGTERM or SIGINT; a second signal exits at once.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            wait_for_signal().await;
            signals += 1;
            if signals == 1 {
                tracing::warn!("signal received: finishing in-flight work (send again to exit at once)");
                cancel.cancel();
            } else {
                tracing::error!("second signal: exiting at once");
                std::process::exit(130);
            }
        }
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(cli: &Cli) {
    // `process` draws progress bars: only warnings interrupt them unless RUST_LOG says otherwise.
    // `replay --inline` exists to watch one job closely.
    let default = match cli.command {
        Command::Process { .. } => "warn",
        Command::Replay { inline: true, .. } => {
            "debug,sqlx=warn,hyper=info,hyper_util=info,h2=info,rustls=info,reqwest=info"
        }
        _ => "info",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: piped into a file or a log collector, escape
    // codes are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match cli.global.log_format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
        LogFormat::Text => builder.init(),
    }
}
