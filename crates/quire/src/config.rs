//! `quire.toml`: optional configuration whose keys are the long flag names.
//!
//! ```toml
//! data-dir = "/var/lib/quire"
//! concurrency = 4
//! lease-ttl = "60s"
//! metrics-addr = "off"
//! ```
//!
//! The file is found at `--config PATH`, else at `$QUIRE_CONFIG`, else at `./quire.toml` when it
//! exists. Each key becomes the *default value* of every option with that long name, in every
//! command, before the command line is parsed. Clap takes a flag first, then the option's
//! environment variable, then its default, so the precedence is flag > environment > file >
//! built-in default without any other code — and without writing to the process environment.
//!
//! Only options that have an environment variable may be set in the file (`--json`, `--yes`,
//! `--dry-run` and positional arguments stay on the command line, where a reader sees them). An
//! unknown key, or one that names such an option, is an error rather than silently ignored.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Command;

/// The configuration file to read, if any: `--config PATH` (or `--config=PATH`) among the raw
/// arguments, else `$QUIRE_CONFIG`, else `./quire.toml` when it exists. A file named explicitly
/// must exist.
pub fn locate(raw: &[String]) -> anyhow::Result<Option<PathBuf>> {
    let mut named = None;
    let mut args = raw.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            named = args.next().map(PathBuf::from);
        } else if let Some(path) = arg.strip_prefix("--config=") {
            named = Some(PathBuf::from(path));
        }
    }
    let named = named.or_else(|| std::env::var_os("QUIRE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from));
    match named {
        Some(path) if path.is_file() => Ok(Some(path)),
        Some(path) => bail!("the configuration file {} does not exist", path.display()),
        None => {
            let default = Path::new("quire.toml");
            Ok(default.is_file().then(|| default.to_path_buf()))
        }
    }
}

/// Returns `command` with the file's values as the defaults of the options they name.
pub fn apply(mut command: Command, file: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", file.display()))?;
    for (key, value) in table {
        let value = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                bail!("{}: `{key}` must be a string, a number or a boolean, not {}", file.display(), other.type_str())
            }
        };
        // Clap keeps default values for the life of the program, which is what this one-shot
        // start-up configuration needs: leaking one short string per key is intended.
        let value: &'static str = Box::leak(value.into_boxed_str());
        let mut found = Found::default();
        command = set_default(command, &key, value, &mut found);
        match found {
            Found { settable: true, .. } => {}
            Found { cli_only: true, .. } => {
                bail!("{}: `{key}` can only be given on the command line (--{key})", file.display())
            }
            _ => bail!("{}: unknown key `{key}` (keys are long option names, e.g. `lease-ttl`)", file.display()),
        }
    }
    Ok(command)
}

/// What [`set_default`] found for a key.
#[derive(Debug, Default)]
struct Found {
    /// An option with an environment variable: its default was set.
    settable: bool,
    /// An option without one (a command-line-only flag).
    cli_only: bool,
}

/// Sets `value` as the default of every option named `--key` in `command` and its subcommands.
fn set_default(mut command: Command, key: &str, value: &'static str, found: &mut Found) -> Command {
    let ids: Vec<(clap::Id, bool)> = command
        .get_arguments()
        .filter(|arg| arg.get_long() == Some(key))
        .map(|arg| (arg.get_id().clone(), arg.get_env().is_some()))
        .collect();
    for (id, has_env) in ids {
        if has_env {
            found.settable = true;
            command = command.mut_arg(id, |arg| arg.default_value(value));
        } else {
            found.cli_only = true;
        }
    }
    let names: Vec<String> = command.get_subcommands().map(|sub| sub.get_name().to_owned()).collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| set_default(sub, key, value, found));
    }
    command
}
