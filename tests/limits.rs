//! Size limits and connection timeouts, as kube-apiserver applies them, against the real binary
//! over raw TCP: 431 past 1 MiB of headers, 414 for an over-long URL, 413 past 3 MiB of body
//! (declared, or chunked without a declared length), 400 for JSON nested too deep, idle
//! keep-alive connections closed (HTTP/1.1 and HTTP/2), slow headers cut off, and watches
//! untouched by either timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ServerProcess;

const CM: &str = "/api/v1/namespaces/default/configmaps";
const LIMIT: usize = 3 * 1024 * 1024;

fn server(extra: &[&str]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = format!("--data-dir={}", dir.path().display());
    let mut args = vec![data_dir.as_str()];
    args.extend_from_slice(extra);
    let server = ServerProcess::start(&args);
    server.wait_ready(Duration::from_secs(30));
    (server, dir)
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
}

/// One response of a keep-alive connection, read to the end of its body (Content-Length or
/// chunked): `(status, head, body)`.
fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).expect("the response's head arrives");
        assert_eq!(
            read,
            1,
            "the connection closed in the response's head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length") {
        body.resize(length.parse().unwrap(), 0);
        stream.read_exact(&mut body).unwrap();
    } else if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            while !size_line.ends_with(b"\r\n") {
                assert_eq!(stream.read(&mut byte).unwrap(), 1, "the connection closed in a chunked body");
                size_line.push(byte[0]);
            }
            let size = usize::from_str_radix(std::str::from_utf8(&size_line).unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Reads until the peer closes the connection (end of stream or reset): what arrived before.
/// Panics if the connection is still open after the read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return received,
            Err(error) => panic!(
                "the connection is still open ({error}) after {:?}; received {:?}",
                stream.read_timeout().unwrap(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

fn configmap_json(name: &str, padding: usize) -> Vec<u8> {
    let mut body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"b"}}"#
    )
    .into_bytes();
    body.resize(body.len() + padding, b' ');
    body.push(b'}');
    body
}

fn configmap_of_size(name: &str, size: usize) -> Vec<u8> {
    let base = configmap_json(name, 0).len();
    configmap_json(name, size - base)
}

/// Writes `body` as chunks of at most 64 KiB.
fn write_chunked(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    for chunk in body.chunks(64 * 1024) {
        write!(stream, "{:x}\r\n", chunk.len())?;
        stream.write_all(chunk)?;
        stream.write_all(b"\r\n")?;
    }
    stream.write_all(b"0\r\n\r\n")
}

#[test]
fn headers_past_one_mib_get_431_and_long_urls_414() {
    let (server, _dir) = server(&[]);
    let address = &server.address;
    // 900 KiB of headers is more than hyper's default buffer (~400 KiB) but within kube's 1 MiB.
    let mut stream = connect(address);
    let padding = "a".repeat(900 * 1024);
    write!(stream, "GET /version HTTP/1.1\r\nHost: {address}\r\nX-Padding: {padding}\r\n\r\n").unwrap();
    let (status, _, body) = read_response(&mut stream);
    assert_eq!(status, 200, "{body}");
    // Past 1 MiB (and Go's 4 KiB of slack): 431, and the connection is closed.
    let mut stream = connect(address);
    let padding = "a".repeat((1 << 20) + 8 * 1024);
    let _ = write!(stream, "GET /version HTTP/1.1\r\nHost: {address}\r\nX-Padding: {padding}\r\n\r\n");
    let (status, _, body) = read_response(&mut stream);
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("more than the limit of 1048576"), "{body}");
    read_until_closed(&mut stream);
    // A URL of 70,000 characters: 414 URI Too Long.
    let mut stream = connect(address);
    let selector = "a".repeat(70_000);
    write!(stream, "GET {CM}?labelSelector={selector} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let received = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
    assert!(received.starts_with("HTTP/1.1 414 "), "{received:.200}");
    // The server still serves.
    assert_eq!(common::http_get(address, "/version").0, 200);
}

#[test]
fn bodies_past_three_mib_get_413_declared_or_chunked() {
    let (server, _dir) = server(&[]);
    let address = &server.address;
    let too_large = |status: u16, body: &str| {
        assert_eq!(status, 413, "{body:.300}");
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        assert_eq!(status["code"], 413);
        assert_eq!(status["message"], format!("Request entity too large: limit is {LIMIT}"));
    };
    // Exactly 3 MiB, declared: accepted.
    let body = configmap_of_size("exact", LIMIT);
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let (status, _, reply) = read_response(&mut stream);
    assert_eq!(status, 201, "{reply:.300}");
    // Exactly 3 MiB, chunked: accepted.
    let body = configmap_of_size("chunked-exact", LIMIT);
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    write_chunked(&mut stream, &body).unwrap();
    let (status, _, reply) = read_response(&mut stream);
    assert_eq!(status, 201, "{reply:.300}");
    // One byte more, declared: refused from the Content-Length.
    let body = configmap_of_size("over", LIMIT + 1);
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = stream.write_all(&body);
    let (status, _, reply) = read_response(&mut stream);
    too_large(status, &reply);
    // One byte more, chunked.
    let body = configmap_of_size("chunked-over", LIMIT + 1);
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let _ = write_chunked(&mut stream, &body);
    let (status, _, reply) = read_response(&mut stream);
    too_large(status, &reply);
    // An endless chunked body: the server answers 413 once past the limit and closes the
    // connection, so the writer fails long before it has sent 256 MiB (nothing reads it all).
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        while sent < 256 << 20 {
            let result = write!(writer, "{:x}\r\n", chunk.len())
                .and_then(|()| writer.write_all(&chunk))
                .and_then(|()| writer.write_all(b"\r\n"));
            if result.is_err() {
                return sent;
            }
            sent += chunk.len();
        }
        sent
    });
    let (status, _, reply) = read_response(&mut stream);
    too_large(status, &reply);
    read_until_closed(&mut stream);
    let sent = sender.join().unwrap();
    assert!(sent < 256 << 20, "the server read all of an endless body");
    // Nothing over the limit was stored.
    let (status, list) = common::http_get(address, CM);
    assert_eq!(status, 200);
    assert!(list.contains("\"exact\"") && list.contains("\"chunked-exact\""), "{list:.300}");
    assert!(!list.contains("\"over\"") && !list.contains("chunked-over"), "{list:.300}");
}

#[test]
fn json_nested_too_deep_or_of_the_wrong_shape_is_a_client_error() {
    let (server, _dir) = server(&[]);
    let address = &server.address;
    let depth = 100_000;
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"deep","annotations":{}"x"{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let mut stream = connect(address);
    write!(
        stream,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _, reply) = read_response(&mut stream);
    assert_eq!(status, 400, "{reply:.300}");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["reason"], "BadRequest");
    assert!(reply["message"].as_str().unwrap().contains("recursion limit"), "{reply}");
    // A namespace whose labels are not an object: a client error, not a dropped connection.
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"odd","labels":5}}"#;
    let mut stream = connect(address);
    write!(
        stream,
        "POST /api/v1/namespaces HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _, reply) = read_response(&mut stream);
    assert!((400..500).contains(&status), "{status} {reply}");
    assert!(reply.contains(r#""kind":"Status""#), "{reply}");
    assert_eq!(common::http_get(address, "/version").0, 200);
}

#[test]
fn idle_connections_close_and_watches_outlive_the_idle_timeout() {
    let (server, _dir) = server(&["--idle-connection-timeout=1s", "--request-header-timeout=1s"]);
    let address = server.address.clone();
    // A keep-alive connection serves requests, then is closed once idle.
    let mut stream = connect(&address);
    for _ in 0..2 {
        write!(stream, "GET /version HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).0, 200);
    }
    assert!(read_until_closed(&mut stream).is_empty());
    // A watch that sees nothing for several idle timeouts stays open, gets its event, and ends at
    // its own timeout with the chunked body's end; then its connection is idle and closes.
    let mut watch = connect(&address);
    write!(watch, "GET {CM}?watch=true&timeoutSeconds=6 HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(watch.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&head));
    std::thread::sleep(Duration::from_secs(3));
    let body = configmap_json("late", 0);
    let mut writer = connect(&address);
    write!(
        writer,
        "POST {CM} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    writer.write_all(&body).unwrap();
    assert_eq!(read_response(&mut writer).0, 201);
    let rest = String::from_utf8_lossy(&read_until_closed(&mut watch)).into_owned();
    assert!(rest.contains(r#""type":"ADDED""#) && rest.contains(r#""name":"late""#), "{rest}");
    assert!(rest.ends_with("0\r\n\r\n"), "the watch did not end at its own timeout: {rest:?}");
}

#[test]
fn headers_sent_slower_than_the_header_timeout_are_cut_off() {
    let (server, _dir) = server(&["--request-header-timeout=1s"]);
    let address = server.address.clone();
    let mut stream = connect(&address);
    let mut writer = stream.try_clone().unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let sender = {
        let finished = Arc::clone(&finished);
        let address = address.clone();
        std::thread::spawn(move || {
            // 200 bytes, one each 100 ms: 20 s for a head the server gives 1 s.
            let head =
                format!("GET /version HTTP/1.1\r\nHost: {address}\r\nX-Slow: {}\r\n\r\n", "s".repeat(150));
            for byte in head.bytes().take(200) {
                if writer.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            finished.store(true, Ordering::SeqCst);
        })
    };
    let received = read_until_closed(&mut stream);
    assert!(!finished.load(Ordering::SeqCst), "the slow client sent its whole head");
    assert!(received.is_empty(), "{}", String::from_utf8_lossy(&received));
    sender.join().unwrap();
    // A client that sends its head at once is served.
    assert_eq!(common::http_get(&address, "/version").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_close_and_their_watches_outlive_the_idle_timeout() {
    use http_body_util::{BodyExt, Empty};
    let (server, _dir) = server(&["--idle-connection-timeout=1s"]);
    let stream = tokio::net::TcpStream::connect(&server.address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut connection = tokio::spawn(connection);
    let get = |path: &str| {
        http::Request::get(format!("http://{}{path}", server.address))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = sender.send_request(get("/version")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    // A watch that sees nothing for three idle timeouts keeps the connection open and ends at
    // its own timeout, with the stream's end.
    let response = sender.send_request(get(&format!("{CM}?watch=true&timeoutSeconds=3"))).await.unwrap();
    assert_eq!(response.status(), 200);
    // (Were the connection closed under it, reading the body would fail.)
    let events = response.into_body().collect().await.expect("the watch ends cleanly").to_bytes();
    assert!(events.is_empty(), "{events:?}");
    // Then, with nothing in progress, the server closes the connection (at the TCP level, without
    // a GOAWAY first: the client sees a closed connection).
    // hyper's client reports that as a connection error (a broken pipe): either way it ended.
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut connection)
        .await
        .expect("the idle connection is still open after 20 s");
    ended.expect("the connection task does not panic").ok();
}
