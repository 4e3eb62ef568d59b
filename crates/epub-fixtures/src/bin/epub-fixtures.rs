//! Writes the standard fixtures into the workspace's `fixtures/` directory (or the directory given
//! as the only argument). Output is deterministic, so re-running it changes nothing.

fn main() -> std::process::ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| epub_fixtures::fixtures_dir().to_path_buf());
    match epub_fixtures::write_standard_fixtures(&dir) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot write fixtures into {}: {error}", dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}
