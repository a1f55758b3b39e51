//! The `watchcache` binary: flags, startup line, health endpoints, shutdown, and clear errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{http_get, EtcdCluster, ServerProcess};

fn watchcache(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchcache")).args(args).output().unwrap()
}

#[test]
fn help_documents_every_flag() {
    let output = watchcache(&["serve", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--in-memory",
        "--etcd-endpoints",
        "--etcd-prefix",
        "--storage-media-type",
        "--etcd-startup-timeout",
        "--history-revisions",
        "--watch-cache-capacity",
        "--watch-cache-max-bytes",
        "--paginated-list-retention",
        "--watch-cache-total-max-bytes",
        "--max-requests-inflight",
        "--max-mutating-requests-inflight",
        "--max-watches",
        "--etcd-compaction-interval",
        "--min-request-timeout",
        "--watch-delivery-linger",
        "--log-level",
        "--log-format",
        "--tls-cert-file",
        "--tls-private-key-file",
        "--tls-self-signed",
        "--token-auth-file",
        "--client-ca-file",
        "--anonymous-auth",
        "--write-kubeconfig",
        "--insecure-allow-remote",
        "--service-account-key-file",
        "--service-account-signing-key-file",
        "--service-account-issuer",
        "--api-audiences",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["serve", "--no-such-flag"][..],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--in-memory", "--etcd-endpoints", "http://127.0.0.1:2379"],
        &["serve", "--history-revisions", "0"],
        &["serve", "--watch-cache-capacity", "0"],
        &["serve", "--watch-cache-max-bytes", "12Qi"],
        &["serve", "--watch-cache-total-max-bytes", "-1"],
        &["serve", "--watch-cache-max-bytes", "99999999999Ti"],
        &["serve", "--max-requests-inflight", "-1"],
        &["serve", "--max-mutating-requests-inflight", "many"],
        &["serve", "--max-watches", "-5"],
        &["serve", "--etcd-compaction-interval", "soon"],
        &["serve", "--storage-media-type", "protobuf"],
        &["serve", "--etcd-endpoints", "http://127.0.0.1:2379", "--storage-media-type", "yaml"],
        &["no-such-command"],
    ] {
        let output = watchcache(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
    let output = watchcache(&["serve", "--in-memory", "--log-level", "[[["]);
    assert_eq!(output.status.code(), Some(2));
    let output = watchcache(&["serve", "--in-memory", "--log-format", "xml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--log-format"));
}

#[test]
fn serves_health_and_version_on_the_embedded_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = ServerProcess::start(&["--data-dir", data_dir.to_str().unwrap()]);
    assert!(server.startup_line.contains("embedded redb at"), "{}", server.startup_line);
    assert!(server.startup_line.contains(data_dir.to_str().unwrap()), "{}", server.startup_line);
    assert!(data_dir.join("watchcache.redb").is_file(), "the store is on disk");

    server.wait_ready(Duration::from_secs(10));
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(http_get(&server.address, path), (200, "ok".to_owned()), "{path}");
    }
    // Each check, as kube-apiserver lists them.
    let (status, body) = http_get(&server.address, "/readyz?verbose");
    assert_eq!(status, 200);
    assert_eq!(body, "[+]ping ok\n[+]storage ok\n[+]informer-sync ok\nreadyz check passed\n");
    let (status, body) = http_get(&server.address, "/version");
    assert_eq!(status, 200);
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["major"], "1");
    assert!(version["gitVersion"].as_str().unwrap().starts_with("v1."));

    let (status, body) = http_get(&server.address, "/no/such/path");
    assert_eq!(status, 404);
    let status_object: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_object["kind"], "Status");
    assert_eq!(status_object["reason"], "NotFound");
    assert_eq!(status_object["code"], 404);

    let status = server.terminate(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = watchcache(&["serve", "--in-memory", "--listen", &address]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unreachable_etcd_is_a_clear_error_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let output = watchcache(&["serve", "--etcd-endpoints", &url, "--etcd-startup-timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot reach etcd") && stderr.contains(&url), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn readyz_follows_etcd_reachability() {
    let mut cluster = EtcdCluster::start(1);
    let urls = cluster.client_urls();
    let mut server = ServerProcess::start(&["--etcd-endpoints", &urls[0]]);
    assert!(server.startup_line.contains("storage: etcd"), "{}", server.startup_line);
    server.wait_ready(Duration::from_secs(10));
    cluster.kill(0);
    let (status, body) = http_get(&server.address, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("[-]storage failed: reason withheld\n"), "{body}");
    assert!(body.contains("[+]informer-sync ok\n"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(http_get(&server.address, "/livez").0, 200, "liveness does not depend on etcd");
    assert_eq!(server.terminate(Duration::from_secs(15)).code(), Some(0));
}

/// Runs the binary with standard error to a file until its caches have synced, then stops it;
/// the log it wrote.
fn log_to_file(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args(["serve", "--in-memory", "--listen=127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http_get(&address, "/readyz").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let log = log_to_file(&[]);
    assert!(log.contains("cache synced"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file:\n{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = log_to_file(&["--log-format", "json"]);
    let mut synced = 0;
    for line in log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(entry["level"].is_string() && entry["timestamp"].is_string(), "{line}");
        if entry["fields"]["message"] == "cache synced" {
            assert!(entry["fields"]["resource"].is_string(), "{line}");
            synced += 1;
        }
    }
    assert!(synced > 5, "{log}");
    assert!(!log.contains('\u{1b}'));
}
