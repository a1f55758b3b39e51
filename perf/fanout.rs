//! Whole-system scenario: watch fan-out, `cargo bench --bench fanout`.
//!
//! W watchers watch one namespace's ConfigMaps, each on its own HTTP/1.1 connection (as 1,000
//! kubelets would), from the resourceVersion of a create. One writer PATCHes a ~1 KiB ConfigMap
//! through the API at R writes/s for N writes: closed loop (one write in flight; it waits for each
//! acknowledgement) paced to the schedule of R/s. Every write carries a sequence number; every
//! (watcher, write) receipt is checked for gaps, duplicates and order. The server's CPU time
//! (utime + stime from /proc/<pid>/stat) is read before the first timed write and after the last
//! delivery.
//!
//! Per peer it reports server CPU per delivered (watcher, event) pair (user and sys apart), the
//! write rate reached, p50/p99/p999 of write-ack → receive (receive time minus the moment the
//! writer got that write's acknowledgement, both on this process's monotonic clock), and
//! deliveries against the expected count with missing, duplicate and out-of-order receipts.
//!
//! Peers (`FANOUT_PEERS`, comma-separated; all by default), run one after the other:
//!
//! - `watchcache-embedded`: the `watchcache` binary (`WATCHCACHE_BIN`, default the one cargo
//!   built) on its embedded store;
//! - `watchcache-embedded-baseline`: the same with `FANOUT_BASELINE_BIN` (added by default when
//!   that is set), to compare a build of an older commit in the same run;
//! - `watchcache-embedded-protobuf`: the same server, every watcher asking for Kubernetes
//!   protobuf (`application/vnd.kubernetes.protobuf;stream=watch`);
//! - `watchcache-embedded-mixed`: half the watchers JSON, half protobuf, on the same resource;
//! - `watchcache-embedded-h2`: the W watches as HTTP/2 streams on `FANOUT_H2_CONNECTIONS`
//!   connections (default 10);
//! - `watchcache-etcd`: watchcache in front of an etcd 3.4 the scenario starts;
//! - `floor`, `floor-uncoalesced`: the bare fan-out floor (see `fanout/floor.rs`), a separate
//!   process; queued events go out in one write per socket, or one write per event;
//! - `etcd`: etcd watched directly (etcd-client, 100 watches per connection), writes put
//!   straight into etcd;
//! - `grpc-proxy`: the same watches through `etcd grpc-proxy`, writes into etcd.
//!
//! Sizes: `FANOUT_WATCHERS` (1,000), `FANOUT_RATE` (500 writes/s), `FANOUT_WRITES` (5,000).
//! Without `--bench` in its arguments (`cargo test --benches`) it runs a tiny size on
//! `watchcache-embedded`, `watchcache-embedded-mixed` and `floor` only, and fails unless every
//! write reached every watcher.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "fanout/floor.rs"]
mod floor;
#[path = "fanout/object.rs"]
mod object;
#[path = "fanout/procs.rs"]
mod procs;
#[path = "fanout/report.rs"]
mod report;
#[path = "fanout/run.rs"]
mod run;
#[path = "fanout/watch.rs"]
mod watch;
#[path = "fanout/write.rs"]
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use run::{Kind, Peer};
use watch::Mix;

/// etcd watches per client connection (the `etcd` and `grpc-proxy` peers).
pub const ETCD_WATCHES_PER_CONNECTION: usize = 100;

/// HTTP/2 streams a hyper server allows on one connection (its default
/// SETTINGS_MAX_CONCURRENT_STREAMS).
pub const H2_STREAMS_PER_CONNECTION: usize = 200;

/// Every peer, in the order they run.
const ALL_PEERS: &[&str] = &[
    "watchcache-embedded",
    "watchcache-embedded-protobuf",
    "watchcache-embedded-mixed",
    "watchcache-embedded-h2",
    "watchcache-etcd",
    "floor",
    "floor-uncoalesced",
    "etcd",
    "grpc-proxy",
];

pub struct Config {
    pub watchers: usize,
    pub rate: f64,
    pub writes: u32,
    pub h2_connections: usize,
    pub quick: bool,
    pub peers: Vec<Peer>,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().replace('_', "").parse().map_err(|_| format!("{name}={value:?} is not a number"))
        }
        _ => Ok(default),
    }
}

fn peer(name: &str, binary: &Path, baseline: Option<&Path>) -> Result<Peer, String> {
    let (base, binary) = match name.strip_suffix("-baseline") {
        Some(base) => {
            let baseline = baseline
                .ok_or_else(|| format!("peer {name} needs FANOUT_BASELINE_BIN (a watchcache binary)"))?;
            (base, baseline.to_path_buf())
        }
        None => (name, binary.to_path_buf()),
    };
    let kind = match base {
        "watchcache-embedded" => Kind::Watchcache { binary, etcd: false, http2: false, mix: Mix::Json },
        "watchcache-embedded-protobuf" => {
            Kind::Watchcache { binary, etcd: false, http2: false, mix: Mix::Protobuf }
        }
        "watchcache-embedded-mixed" => Kind::Watchcache { binary, etcd: false, http2: false, mix: Mix::Half },
        "watchcache-embedded-h2" => Kind::Watchcache { binary, etcd: false, http2: true, mix: Mix::Json },
        "watchcache-etcd" => Kind::Watchcache { binary, etcd: true, http2: false, mix: Mix::Json },
        "floor" if base == name => Kind::Floor { coalesce: true },
        "floor-uncoalesced" if base == name => Kind::Floor { coalesce: false },
        "etcd" if base == name => Kind::Etcd { proxy: false },
        "grpc-proxy" if base == name => Kind::Etcd { proxy: true },
        _ => return Err(format!("unknown peer {name:?}; peers: {}", ALL_PEERS.join(", "))),
    };
    let name = match name.strip_suffix("-baseline") {
        Some(base) => format!("{base} (baseline)"),
        None => name.to_owned(),
    };
    Ok(Peer { name, kind })
}

fn config(quick: bool) -> Result<Config, String> {
    let binary = std::env::var_os("WATCHCACHE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_watchcache")));
    let baseline = std::env::var_os("FANOUT_BASELINE_BIN").filter(|bin| !bin.is_empty()).map(PathBuf::from);
    if quick {
        // `cargo test --benches`: seconds, no etcd, whatever the environment says.
        let peers = ["watchcache-embedded", "watchcache-embedded-mixed", "floor"]
            .iter()
            .map(|name| peer(name, &binary, None))
            .collect::<Result<_, _>>()?;
        return Ok(Config { watchers: 20, rate: 500.0, writes: 20, h2_connections: 2, quick, peers });
    }
    let mut names: Vec<String> = match std::env::var("FANOUT_PEERS") {
        Ok(list) if !list.trim().is_empty() => {
            list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect()
        }
        _ => ALL_PEERS.iter().map(|name| (*name).to_owned()).collect(),
    };
    if baseline.is_some() && !names.iter().any(|name| name.ends_with("-baseline")) {
        let at = names.iter().position(|name| name == "watchcache-embedded").map_or(0, |at| at + 1);
        names.insert(at, "watchcache-embedded-baseline".into());
    }
    let peers =
        names.iter().map(|name| peer(name, &binary, baseline.as_deref())).collect::<Result<_, _>>()?;
    let config = Config {
        watchers: env_number("FANOUT_WATCHERS", 1_000)?,
        rate: env_number("FANOUT_RATE", 500.0)?,
        writes: env_number("FANOUT_WRITES", 5_000)?,
        h2_connections: env_number("FANOUT_H2_CONNECTIONS", 10)?,
        quick,
        peers,
    };
    if config.watchers == 0 || config.writes == 0 || config.rate <= 0.0 || config.h2_connections == 0 {
        return Err(
            "FANOUT_WATCHERS, FANOUT_WRITES, FANOUT_RATE and FANOUT_H2_CONNECTIONS must be > 0".into()
        );
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(floor::FLAG) {
        return floor::main(&args[2..]);
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let quick = args.iter().any(|arg| arg == "--test") || !args.iter().any(|arg| arg == "--bench");
    let mut config = match config(quick) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("fanout: {error}");
            return ExitCode::from(2);
        }
    };

    if quick {
        if let Err(error) = watch::self_check() {
            eprintln!("fanout: {error}");
            return ExitCode::FAILURE;
        }
    }

    // One socket per watcher here, and one in the server (children inherit the limit).
    let (soft, hard) = procs::raise_nofile();
    let needed = config.watchers as libc::rlim_t + 256;
    if soft < needed {
        eprintln!(
            "fanout: RLIMIT_NOFILE is {soft} (hard limit {hard}), too low for {} watchers: each needs a \
             socket in this process and one in the server, {needed} descriptors in all. Raise the hard \
             limit (ulimit -Hn {needed}, as root; LimitNOFILE= under systemd) or lower FANOUT_WATCHERS.",
            config.watchers
        );
        return ExitCode::FAILURE;
    }

    if procs::etcd_binary().is_none() {
        let skipped: Vec<String> =
            config.peers.iter().filter(|peer| peer.needs_etcd()).map(|peer| peer.name.clone()).collect();
        if !skipped.is_empty() {
            println!(
                "etcd is not installed (Debian: apt-get install etcd-server): skipping {}",
                skipped.join(", ")
            );
            config.peers.retain(|peer| !peer.needs_etcd());
        }
    }

    println!(
        "watch fan-out: {} watchers, {} writes at {}/s of a ~1 KiB ConfigMap; {} cores; RLIMIT_NOFILE {soft}",
        config.watchers,
        config.writes,
        config.rate,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
    let mut rows = Vec::new();
    for peer in &config.peers {
        println!("{}:", peer.name);
        let server_label = match peer.kind {
            Kind::Watchcache { .. } => "watchcache",
            Kind::Floor { .. } => "floor",
            Kind::Etcd { proxy: false } => "etcd",
            Kind::Etcd { proxy: true } => "grpc-proxy",
        };
        let result =
            run::run(peer, &config).map(|measured| report::analyze(measured, config.writes, config.watchers));
        let row = report::Row { name: peer.name.clone(), server_label, result };
        println!("{}", report::summary(&row));
        rows.push(row);
    }
    println!();
    println!(
        "watch fan-out: {} watchers, {} writes at {}/s (µs of server CPU per delivered (watcher, event) pair)",
        config.watchers, config.writes, config.rate
    );
    println!();
    print!("{}", report::table(&rows, config.rate));
    if config.quick {
        let incomplete: Vec<&str> = rows
            .iter()
            .filter(|row| !row.result.as_ref().is_ok_and(report::Figures::complete))
            .map(|row| row.name.as_str())
            .collect();
        if !incomplete.is_empty() {
            eprintln!(
                "fanout: not every write reached every watcher once, in order: {}",
                incomplete.join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
