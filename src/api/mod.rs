//! HTTP: the only module that knows hyper, routes and Kubernetes `Status` errors.
//!
//! One hyper connection task per client connection, HTTP/1.1 or HTTP/2 (prior knowledge), both
//! from the same listener. On shutdown the listener closes, open connections are asked to close
//! gracefully, and [`serve`] returns once they have (or after [`DRAIN_TIMEOUT`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;

use crate::storage::Storage;

/// How long shutdown waits for open connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `/readyz` waits for the storage to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The Kubernetes version this server reports at `/version`.
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "32");

/// What request handlers share.
pub struct ApiState {
    /// The store behind every read and write.
    pub storage: Arc<dyn Storage>,
}

/// Serves HTTP on `listener` until `shutdown` completes, then drains open connections.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(handle(&state, request).await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn handle(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/healthz" | "/livez") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            match tokio::time::timeout(READY_TIMEOUT, state.storage.current_revision()).await {
                Ok(Ok(_)) => text(StatusCode::OK, "ok"),
                Ok(Err(error)) => {
                    text(StatusCode::SERVICE_UNAVAILABLE, &format!("storage not ready: {error}"))
                }
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "storage not ready: no answer in time"),
            }
        }
        (&Method::GET, "/version") => json_response(StatusCode::OK, &version()),
        (_, "/healthz" | "/livez" | "/readyz" | "/version") => status_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource: {}", request.method()),
        ),
        _ => status_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource: {path}"),
        ),
    }
}

fn version() -> serde_json::Value {
    let (major, minor) = KUBERNETES_VERSION;
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{major}.{minor}.0+watchcache-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("valid response")
}

fn json_response(code: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).expect("JSON value encodes"))))
        .expect("valid response")
}

/// A `metav1.Status` failure response.
fn status_error(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
