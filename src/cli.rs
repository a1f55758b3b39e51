//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A Kubernetes-API-compatible API server served from an in-memory watch cache.
#[derive(Debug, Parser)]
#[command(name = "watchcache", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Kubernetes API.
    Serve(ServeArgs),
}

/// The flags of `watchcache serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the startup line tells which).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Directory of the durable embedded store (the default storage).
    #[arg(long, default_value = "./watchcache-data", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Keep objects in memory only: nothing survives a restart.
    #[arg(long, conflicts_with = "etcd_endpoints")]
    pub in_memory: bool,

    /// Store objects in this etcd cluster instead (comma-separated URLs, e.g.
    /// http://127.0.0.1:2379,http://10.0.0.2:2379).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd_endpoints: Vec<String>,

    /// Key prefix in etcd, as kube-apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    pub etcd_prefix: String,

    /// How built-in objects are written to etcd, as kube-apiserver's --storage-media-type: json,
    /// or protobuf (Kubernetes protobuf, kube-apiserver's own default; custom resources stay
    /// JSON). Reads accept both, whichever this is. Only with --etcd-endpoints (an error
    /// without it): the embedded store always keeps JSON.
    #[arg(
        long,
        value_enum,
        default_value_t = StorageMediaType::Json,
        value_name = "TYPE",
        requires = "etcd_endpoints",
        conflicts_with = "in_memory"
    )]
    pub storage_media_type: StorageMediaType,

    /// How long to keep retrying an unreachable etcd at startup, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub etcd_startup_timeout: u64,

    /// Revisions of write history the embedded store keeps for watches and past-revision lists.
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub history_revisions: u64,

    /// Most events each resource's watch cache keeps for watchers to resume from (its ring);
    /// a watcher that falls further behind gets 410 Gone and relists.
    #[arg(long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub watch_cache_capacity: u64,

    /// Most requests served at once, watches excepted; beyond it requests get 429 Too Many
    /// Requests with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 400, value_name = "N")]
    pub max_requests_inflight: usize,

    /// A watch without timeoutSeconds ends after a random time between this and twice this, so
    /// that clients re-watch at different moments (seconds, or a duration such as 30m).
    #[arg(long, default_value = "1800", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub min_request_timeout: Duration,

    /// How requests are authorized: AlwaysAllow, or RBAC (kube's roles and bindings, served
    /// under rbac.authorization.k8s.io/v1). Default: AlwaysAllow.
    #[arg(long, value_enum, value_name = "MODE")]
    pub authorization_mode: Option<AuthorizationMode>,

    /// Under load, how long the watch cache may hold back waking watchers so that each socket
    /// write carries several events (at most this much added latency; 0 wakes them after every
    /// storage event batch). A duration such as 5ms.
    #[arg(long, default_value = "5ms", value_name = "DURATION", value_parser = parse_duration, env = "WATCHCACHE_WATCH_DELIVERY_LINGER")]
    pub watch_delivery_linger: Duration,

    /// Log filter (e.g. info, debug, watchcache=trace); RUST_LOG is used when this is not given.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    // --- Operations: logging ---
    /// Log line format on standard error: text (colours only when standard error is a
    /// terminal) or json (one JSON object per line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// The values of `--authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthorizationMode {
    /// Every request is allowed.
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
    /// kube's RBAC.
    #[value(name = "RBAC")]
    Rbac,
}

/// The authorization mode when `--authorization-mode` is not given: RBAC when authentication
/// is configured, as kube-apiserver's defaults amount to, AlwaysAllow otherwise.
pub fn default_authorization_mode(authentication_configured: bool) -> AuthorizationMode {
    if authentication_configured {
        AuthorizationMode::Rbac
    } else {
        AuthorizationMode::AlwaysAllow
    }
}

impl ServeArgs {
    /// The authorization mode: the flag's, or the default. Authentication is not configurable
    /// yet, so the default is AlwaysAllow.
    pub fn authorization_mode(&self) -> AuthorizationMode {
        self.authorization_mode.unwrap_or_else(|| default_authorization_mode(false))
    }
}

/// The values of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The values of `--storage-media-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageMediaType {
    /// JSON, as given.
    #[value(alias = "application/json")]
    Json,
    /// Kubernetes protobuf for built-in objects.
    #[value(alias = "application/vnd.kubernetes.protobuf")]
    Protobuf,
}

/// A duration: plain seconds (`1800`, as kube-apiserver's flags take them) or with a unit
/// (`30m`, `5ms`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|error| format!("not a duration ({error}): {text:?}"))
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be more than zero".into()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_defaults_to_rbac_only_with_authentication() {
        assert_eq!(default_authorization_mode(true), AuthorizationMode::Rbac);
        assert_eq!(default_authorization_mode(false), AuthorizationMode::AlwaysAllow);
        let parse = |extra: &[&str]| {
            let Command::Serve(args) =
                Cli::parse_from(["watchcache", "serve"].iter().chain(extra.iter())).command;
            args.authorization_mode()
        };
        assert_eq!(parse(&[]), AuthorizationMode::AlwaysAllow);
        assert_eq!(parse(&["--authorization-mode=RBAC"]), AuthorizationMode::Rbac);
        assert_eq!(parse(&["--authorization-mode", "AlwaysAllow"]), AuthorizationMode::AlwaysAllow);
    }
}
