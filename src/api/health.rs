//! `/readyz`: readiness as kube-apiserver reports it.
//!
//! Checks, in order:
//! - `ping`: the server answers;
//! - `storage`: storage answers a request for its current revision within [`READY_TIMEOUT`],
//!   and does not refuse writes (`Storage::write_failure`: the embedded store's disk is full or
//!   its data directory read-only);
//! - `informer-sync`: every resource's watch cache has synced (it has reached the revision
//!   storage had when its first list began; see `cacher::reflector`, *Readiness*).
//!
//! As in kube-apiserver: when every check passes the answer is 200 `ok`, or with `?verbose` one
//! line per check (`[+]ping ok`) and `readyz check passed`; when one fails, every check is listed
//! (`[-]informer-sync failed: reason withheld`) followed by `readyz check failed`, with 503.
//! `?exclude=NAME` skips a check. The reasons go to the log (debug level), not to the client.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;

use super::{text, ApiState, Body};

/// How long `/readyz` waits for the storage to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to `GET /readyz` with `query`.
pub async fn readyz(state: &ApiState, query: Option<&str>) -> http::Response<Body> {
    let mut verbose = false;
    let mut excluded = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "verbose" => verbose = true,
            "exclude" => excluded.push(value.to_owned()),
            _ => {}
        }
    }
    let mut lines = String::new();
    let mut failed = Vec::new();
    for name in ["ping", "storage", "informer-sync"] {
        if excluded.iter().any(|excluded| excluded == name) {
            let _ = writeln!(lines, "[+]{name} excluded: ok");
            continue;
        }
        let outcome = match name {
            "ping" => Ok(()),
            "storage" => storage_check(state).await,
            _ => sync_check(state),
        };
        match outcome {
            Ok(()) => {
                let _ = writeln!(lines, "[+]{name} ok");
            }
            Err(reason) => {
                tracing::debug!(check = name, %reason, "readiness check failed");
                let _ = writeln!(lines, "[-]{name} failed: reason withheld");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        lines.push_str("readyz check failed\n");
        return text(StatusCode::SERVICE_UNAVAILABLE, &lines);
    }
    if !verbose {
        return text(StatusCode::OK, "ok");
    }
    lines.push_str("readyz check passed\n");
    text(StatusCode::OK, &lines)
}

async fn storage_check(state: &ApiState) -> Result<(), String> {
    if let Some(failure) = state.registry.storage().write_failure() {
        return Err(failure.to_string());
    }
    match tokio::time::timeout(READY_TIMEOUT, state.registry.storage().current_revision()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("storage did not answer within {READY_TIMEOUT:?}")),
    }
}

fn sync_check(state: &ApiState) -> Result<(), String> {
    let unsynced: Vec<String> = state
        .registry
        .all()
        .iter()
        .filter(|resource| !resource.cacher.is_ready())
        .map(|resource| resource.cacher.resource().prefix.clone())
        .collect();
    if unsynced.is_empty() {
        Ok(())
    } else {
        Err(format!("caches not synced yet: {}", unsynced.join(", ")))
    }
}
