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

    /// How often storage's history is compacted, as kube-apiserver's
    /// --etcd-compaction-interval (seconds, or a duration such as 5m; 0 disables). Each round
    /// compacts to the revision of the round before, so one interval of history is kept;
    /// replicas on one etcd elect one compactor per round on `compact_rev_key`, as
    /// kube-apiservers do. The embedded store compacts on the same schedule (and keeps at most
    /// --history-revisions regardless).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub etcd_compaction_interval: Duration,

    /// Most events each resource's watch cache keeps for watchers to resume from (its ring);
    /// a watcher that falls further behind gets 410 Gone and relists.
    #[arg(long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub watch_cache_capacity: u64,

    /// Most bytes of events each resource's ring keeps (its newest 100 events stay whatever
    /// their size); a size such as 256Mi, 1G or plain bytes.
    #[arg(long, default_value = "256Mi", value_name = "SIZE", value_parser = parse_size)]
    pub watch_cache_max_bytes: u64,

    /// How long a paginated list can go on from the cache after its latest page (the cache
    /// keeps the snapshot it pages through for this long); later, its continue token is read
    /// from storage's history, or is 410 Gone once that is compacted. Kube's window is 75s.
    #[arg(long, default_value = "75s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub paginated_list_retention: Duration,

    /// Most bytes of events all rings keep together: past it, each ring that takes an event
    /// drops its own oldest first. 0: no cap beyond each ring's own.
    #[arg(long, default_value = "2Gi", value_name = "SIZE", value_parser = parse_size)]
    pub watch_cache_total_max_bytes: u64,

    /// Most requests served at once, watches excepted; beyond it requests get 429 Too Many
    /// Requests with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 400, value_name = "N")]
    pub max_requests_inflight: usize,

    /// Most create, update, patch and delete requests served at once, counted apart from
    /// --max-requests-inflight (which then counts only reads), as kube-apiserver's flag of the
    /// same name; beyond it requests get 429 with Retry-After. 0: no separate limit (mutating
    /// requests share --max-requests-inflight).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub max_mutating_requests_inflight: usize,

    /// Most watches open at once; a watch beyond it gets 429 with Retry-After. Watches are
    /// long-running, so they are not counted by the other two limits. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_watches: usize,

    /// A watch without timeoutSeconds ends after a random time between this and twice this, so
    /// that clients re-watch at different moments (seconds, or a duration such as 30m).
    #[arg(long, default_value = "1800", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub min_request_timeout: Duration,

    /// A connection with no request in progress (an open watch is one in progress) is closed
    /// after this long; kube-apiserver's fixed IdleTimeout is 90 s.
    #[arg(long, default_value = "90s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub idle_connection_timeout: Duration,

    /// An HTTP/1.1 connection whose request headers have not all arrived this long after their
    /// first byte is closed (slow clients cannot hold connections); kube-apiserver's fixed
    /// ReadHeaderTimeout is 32 s.
    #[arg(long, default_value = "32s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub request_header_timeout: Duration,

    /// How requests are authorized: AlwaysAllow, or RBAC (kube's roles and bindings, served
    /// under rbac.authorization.k8s.io/v1). Default: RBAC once an authenticator is configured,
    /// AlwaysAllow otherwise.
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

    // --- Security: TLS and authentication ---
    /// Serve HTTPS with this PEM certificate (chain); re-read when the file changes. Needs
    /// --tls-private-key-file.
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file", conflicts_with = "tls_self_signed")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,

    /// Serve HTTPS with a CA and a serving certificate (for localhost, 127.0.0.1, ::1 and the
    /// listen host) made under --data-dir/tls, or the ones already there.
    #[arg(long)]
    pub tls_self_signed: bool,

    /// Static bearer tokens, as kube-apiserver's: a CSV file of token,user,uid,"group1,group2".
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Authenticate client certificates signed by the CAs of this PEM file (CN the user, O the
    /// groups). Needs TLS.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Verify ServiceAccount tokens with the public keys (RSA or EC PEM) of this file.
    #[arg(long, value_name = "FILE")]
    pub service_account_key_file: Option<PathBuf>,

    /// Sign the ServiceAccount tokens of the serviceaccounts/token subresource with this
    /// private key (RSA or EC PEM). Needs --service-account-key-file.
    #[arg(long, value_name = "FILE", requires = "service_account_key_file")]
    pub service_account_signing_key_file: Option<PathBuf>,

    /// The issuer (iss) of ServiceAccount tokens.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local", value_name = "URL")]
    pub service_account_issuer: String,

    /// The audiences ServiceAccount tokens are accepted for (comma-separated; default: the
    /// issuer).
    #[arg(long, value_delimiter = ',', value_name = "AUDIENCES")]
    pub api_audiences: Vec<String>,

    /// Whether requests without credentials are let through as system:anonymous (only to
    /// /healthz, /livez, /readyz and /version once authentication is configured).
    #[arg(long, default_value_t = true, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,

    /// Write a kubeconfig to this file (mode 0600) with the server's URL and, under TLS, its CA
    /// and an admin token (system:admin in system:masters) made at start.
    #[arg(long, value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,

    /// Allow listening on a non-loopback address without TLS and authentication.
    #[arg(long)]
    pub insecure_allow_remote: bool,

    /// Append an audit log to this file (`-`: standard output): one JSON line per request in
    /// kube's audit.k8s.io/v1 Event shape, metadata only (never request or response bodies).
    #[arg(long, value_name = "PATH")]
    pub audit_log_path: Option<PathBuf>,

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
    /// The authorization mode: the flag's, or the default for whether authentication is
    /// configured.
    pub fn authorization_mode(&self, authentication_configured: bool) -> AuthorizationMode {
        self.authorization_mode.unwrap_or_else(|| default_authorization_mode(authentication_configured))
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

/// A size: plain bytes, or with a suffix as Kubernetes quantities take them (`Ki`, `Mi`, `Gi`,
/// `Ti` for powers of 1,024; `k`, `M`, `G`, `T` for powers of 1,000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("not a size: {text:?} (e.g. 256Mi)"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(format!("not a size: {text:?} (units: Ki, Mi, Gi, Ti, k, M, G, T)")),
    };
    number.checked_mul(unit).ok_or_else(|| format!("size too large: {text:?}"))
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
    fn sizes_read_as_kubernetes_quantities_of_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256Mi"), Ok(256 << 20));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "Mi", "1.5Gi", "-1", "3X", "99999999999Ti"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authorization_defaults_to_rbac_only_with_authentication() {
        assert_eq!(default_authorization_mode(true), AuthorizationMode::Rbac);
        assert_eq!(default_authorization_mode(false), AuthorizationMode::AlwaysAllow);
        let parse = |extra: &[&str]| {
            let Command::Serve(args) =
                Cli::parse_from(["watchcache", "serve"].iter().chain(extra.iter())).command;
            args.authorization_mode(false)
        };
        assert_eq!(parse(&[]), AuthorizationMode::AlwaysAllow);
        assert_eq!(parse(&["--authorization-mode=RBAC"]), AuthorizationMode::Rbac);
        assert_eq!(parse(&["--authorization-mode", "AlwaysAllow"]), AuthorizationMode::AlwaysAllow);
    }
}
