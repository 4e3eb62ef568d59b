//! How a worker runs: its settings, their defaults (the documented defaults of `quire worker`,
//! which the command line reads from here) and the checks they must pass.

use std::time::Duration;

/// How a worker runs. Defaults are the documented defaults of `quire worker`.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Written to `lock_owner`; unique per worker process.
    pub owner: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Jobs leased ahead of free slots.
    pub prefetch: usize,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How often leases are renewed; [`WorkerConfig::heartbeat_for`] the lease by default.
    pub heartbeat_interval: Duration,
    /// How often stale and timed-out jobs are recovered.
    pub reaper_interval: Duration,
    /// How long in-flight jobs may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How often an idle worker looks for work.
    pub poll_interval: Duration,
    /// Exit once no job is pending or processing (delayed ones included).
    pub exit_when_idle: bool,
}

impl WorkerConfig {
    /// How long a lease lasts unless renewed, by default.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
    /// How often stale and timed-out jobs are recovered, by default.
    pub const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_secs(30);
    /// How long in-flight jobs may finish after a shutdown signal, by default.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// How often an idle worker looks for work, by default.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

    /// Defaults for a worker named `owner`.
    pub fn new(owner: impl Into<String>) -> WorkerConfig {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WorkerConfig {
            owner: owner.into(),
            concurrency: cores,
            prefetch: 0,
            lease_ttl: Self::DEFAULT_LEASE_TTL,
            heartbeat_interval: Self::heartbeat_for(Self::DEFAULT_LEASE_TTL),
            reaper_interval: Self::DEFAULT_REAPER_INTERVAL,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            exit_when_idle: false,
        }
    }

    /// The default heartbeat for a lease of `lease_ttl`: a third of it, so that two renewals in
    /// a row may fail before the lease expires.
    pub fn heartbeat_for(lease_ttl: Duration) -> Duration {
        lease_ttl / 3
    }

    /// Refuses settings under which the worker cannot keep its promises: a lease renewed no
    /// sooner than it expires would be taken back from a healthy worker.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |reason: String| Err(ConfigError(reason));
        if self.owner.trim().is_empty() {
            return refuse("the worker name must not be empty".into());
        }
        if self.concurrency == 0 {
            return refuse("concurrency must be at least 1".into());
        }
        for (name, value) in [
            ("the lease", self.lease_ttl),
            ("the heartbeat interval", self.heartbeat_interval),
            ("the reaper interval", self.reaper_interval),
            ("the poll interval", self.poll_interval),
        ] {
            if value.is_zero() {
                return refuse(format!("{name} must be longer than zero"));
            }
        }
        if self.heartbeat_interval >= self.lease_ttl {
            return refuse(format!(
                "the heartbeat interval ({:?}) must be shorter than the lease ({:?}), or every lease expires \
                 before it is renewed",
                self.heartbeat_interval, self.lease_ttl
            ));
        }
        Ok(())
    }
}

/// Settings a worker refuses to run with ([`WorkerConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker settings: {0}")]
pub struct ConfigError(pub String);
