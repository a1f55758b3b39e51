//! HTTP: the only module that knows hyper, routes and Kubernetes `Status` errors.
//!
//! One hyper connection task per client connection, HTTP/1.1 or HTTP/2 (prior knowledge), both
//! from the same listener. On shutdown the listener closes, watch streams end, open connections
//! are asked to close gracefully, and [`serve`] returns once they have (or after
//! [`DRAIN_TIMEOUT`]).
//!
//! - `request`: the resource path and the query parameters;
//! - `handlers`: the verbs on resources;
//! - `watch`: watch streams;
//! - `discovery`: discovery and OpenAPI documents;
//! - `health`: `/readyz` and its checks;
//! - `crd`: CustomResourceDefinitions;
//! - `deletion`: what a DELETE does (graceful deletion, propagation policies, finalizers);
//! - `namespaces`: the namespace lifecycle (Terminating, the namespace controller);
//! - `negotiate`: JSON or protobuf, from `Accept` and `Content-Type`;
//! - `printers`: Tables, with kube-apiserver's columns for each type;
//! - `status`: errors as `Status` objects.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;

use crate::registry::Registry;

pub mod audit;
pub mod crd;
pub mod deletion;
pub mod discovery;
pub mod handlers;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod namespaces;
pub mod negotiate;
pub mod printers;
pub mod request;
pub mod reviews;
pub mod status;
pub mod watch;

use status::ApiError;

/// The response body of every handler.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A body of known bytes.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed_unsync()
}

/// How long shutdown waits for open connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request other than a watch may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The Kubernetes version this server reports at `/version`.
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "32");

/// What request handlers share.
pub struct ApiState {
    /// The served resource types, their caches, and the storage.
    pub registry: Arc<Registry>,
    /// Request and cache metrics.
    pub metrics: metrics::Metrics,
    /// Permits for requests on resources other than watches (`--max-requests-inflight`);
    /// mutating ones take theirs from `mutating_inflight` when that is set. `None`: unlimited.
    pub inflight: Option<Arc<tokio::sync::Semaphore>>,
    /// Permits for create, update, patch and delete (`--max-mutating-requests-inflight`);
    /// `None`: they share `inflight`.
    pub mutating_inflight: Option<Arc<tokio::sync::Semaphore>>,
    /// Permits for open watches (`--max-watches`), each held until its stream ends; `None`:
    /// unlimited.
    pub watches: Option<Arc<tokio::sync::Semaphore>>,
    /// The shortest lifetime of a watch without `timeoutSeconds` (`--min-request-timeout`);
    /// each such watch ends after a random time between it and twice it.
    pub min_request_timeout: Duration,
    /// Decides whether each request may go on (`--authorization-mode`).
    pub authorizer: Arc<dyn crate::auth::Authorizer>,
    /// Who each request is from (`--token-auth-file`, `--client-ca-file`, ...); when none is
    /// configured every request is the loopback admin's.
    pub authenticator: Arc<crate::auth::authn::Authenticator>,
    /// The audit log (`--audit-log-path`), when configured.
    pub audit: Option<Arc<audit::AuditLog>>,
}

/// What a request knows of its connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// The verified client certificate (DER), when the client presented one over TLS.
    pub client_certificate: Option<Vec<u8>>,
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
}

/// Serves HTTP on `listener` (over TLS when `tls` is given) until `shutdown` completes, then
/// drains open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: limits::ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The idle and header timeouts are `limits::TimedIo`'s (hyper's header timeout would also
    // close idle connections). A head that does not fit hyper's read buffer gets 431: Go's
    // limit, MaxHeaderBytes and its 4 KiB of slack.
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(limits::MAX_HEADER_BYTES + 4096);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(limits::MAX_HEADER_BYTES as u32);
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
        let Some(acceptor) = acceptor.clone() else {
            let (stream, activity) = limits::TimedIo::new(stream, limits);
            let service =
                service(state, Arc::new(Connection { client_certificate: None, peer: Some(peer) }), activity);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's task, so a slow client holds up nobody.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let client_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec());
            let (stream, activity) = limits::TimedIo::new(stream, limits);
            let service =
                service(state, Arc::new(Connection { client_certificate, peer: Some(peer) }), activity);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // The caches stop, which ends every watch stream; then open connections finish their
    // requests.
    state.registry.stop();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

fn service(
    state: Arc<ApiState>,
    connection: Arc<Connection>,
    activity: Arc<limits::Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |request| {
        let state = Arc::clone(&state);
        let connection = Arc::clone(&connection);
        // The request is in progress, for the connection's idle timeout, until its response
        // body is dropped: a watch is never idle.
        let guard = activity.begin();
        // Boxed: hyper keeps a connection's in-flight request future in an allocation of that
        // future's size for the connection's life, so an idle watch connection would hold the
        // whole request path's state machine (~5 KB) after its request completed.
        async move {
            let response = Box::pin(handle(&state, &connection, request)).await;
            Ok::<_, Infallible>(response.map(|body| limits::Guarded::new(body, guard).boxed_unsync()))
        }
    })
}

/// The `verb` and `resource` labels of a request, as kube-apiserver names them.
pub(crate) fn classify(method: &Method, path: &str, is_watch: bool) -> (String, String) {
    let Some(parsed) = request::parse_path(path) else {
        return (method.as_str().to_lowercase(), String::new());
    };
    let mut resource = parsed.plural.unwrap_or_default();
    if let Some(subresource) = parsed.subresource {
        resource = format!("{resource}/{subresource}");
    }
    let item = parsed.name.is_some();
    let verb = match (method, item) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (other, _) => return (other.as_str().to_lowercase(), resource),
    };
    (verb.to_owned(), resource)
}

async fn handle(state: &ApiState, connection: &Connection, request: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let is_watch =
        request.uri().query().is_some_and(|query| query.contains("watch=true") || query.contains("watch=1"));
    let (verb, resource) = classify(request.method(), request.uri().path(), is_watch);
    let method = request.method().clone();
    let uri = request.uri().clone();
    // What the audit event needs from the request, taken before the handlers consume it.
    let audit = state.audit.as_ref().map(|log| {
        let headers = request.headers();
        let id = headers
            .get("audit-id")
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .cloned()
            .unwrap_or_else(|| log.new_id());
        (id, headers.get(header::USER_AGENT).cloned(), headers.get("x-forwarded-for").cloned())
    });
    let received = audit.as_ref().map(|_| std::time::SystemTime::now());
    let mut seen = Seen::default();
    let mut response = handle_inner(state, connection, request, is_watch, &mut seen).await;
    tracing::debug!(%method, %uri, status = response.status().as_u16(), elapsed = ?started.elapsed(), "request");
    state.metrics.observe(&verb, &resource, response.status().as_u16(), started.elapsed());
    if let (Some(log), Some((audit_id, user_agent, forwarded_for)), Some(received)) =
        (&state.audit, audit, received)
    {
        response.headers_mut().insert("audit-id", audit_id.clone());
        let created = response.extensions_mut().remove::<audit::CreatedName>().map(|name| name.0);
        let code = response.status().as_u16();
        let streaming = is_watch && response.status().is_success();
        let record = audit::Record {
            audit_id,
            stage: if streaming { audit::Stage::ResponseStarted } else { audit::Stage::ResponseComplete },
            method,
            uri,
            is_watch,
            user: seen.user,
            peer: connection.peer,
            forwarded_for,
            user_agent,
            created,
            code,
            failure: seen.failure,
            decision: seen.decision,
            received,
            at: std::time::SystemTime::now(),
        };
        if streaming {
            // ResponseComplete when the stream ends (its body is dropped).
            let complete = audit::OnComplete { log: Arc::clone(log), record: record.clone() };
            response = response.map(|body| {
                body.map_frame(move |frame| {
                    let _complete = &complete;
                    frame
                })
                .boxed_unsync()
            });
        }
        log.record(record);
    }
    response
}

/// What `handle_inner` learnt of a request, for its audit event.
#[derive(Default)]
struct Seen {
    /// The authenticated user.
    user: Option<Arc<crate::auth::UserInfo>>,
    /// The authorization decision and its reason.
    decision: Option<(&'static str, String)>,
    /// The error answered: its Status reason and message.
    failure: Option<(&'static str, String)>,
}

fn failed(seen: &mut Seen, error: ApiError, wire: crate::cacher::object::Wire) -> Response<Body> {
    let response = error.to_response_in(wire);
    seen.failure = Some((error.reason, error.message));
    response
}

async fn handle_inner(
    state: &ApiState,
    connection: &Connection,
    mut request: Request<Incoming>,
    is_watch: bool,
    seen: &mut Seen,
) -> Response<Body> {
    if let Err(error) = limits::check_head(&request) {
        let mut response = error.to_response_in(negotiate::error_wire(request.headers()));
        // As Go's server does after a 431, the connection is not reused.
        if request.version() < http::Version::HTTP_2 {
            response.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        return response;
    }
    // Requests on resources are limited; health, version and metrics endpoints are exempt.
    // Watches are long-running and counted apart, each holding its permit until it ends.
    let on_resources =
        request.uri().path().starts_with("/api/") || request.uri().path().starts_with("/apis/");
    let mutating = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let limit = match (on_resources, is_watch, mutating) {
        (false, _, _) => None,
        (true, true, _) => state.watches.as_ref(),
        (true, false, true) => state.mutating_inflight.as_ref().or(state.inflight.as_ref()),
        (true, false, false) => state.inflight.as_ref(),
    };
    let error_wire = negotiate::error_wire(request.headers());
    let permit = match limit {
        Some(semaphore) => match Arc::clone(semaphore).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return failed(seen, ApiError::too_many_requests(), crate::cacher::object::Wire::Json),
        },
        None => None,
    };
    let user = match authenticate(state, connection, &request) {
        Ok(user) => user,
        Err(error) => return failed(seen, error, error_wire),
    };
    seen.user = Some(Arc::clone(&user));
    // Later handlers (the reviews of who one is) find the user here.
    request.extensions_mut().insert(Arc::clone(&user));
    let decision = authorize(state, &user, &request, is_watch);
    seen.decision = Some(match &decision {
        Ok(()) => ("allow", String::new()),
        Err((_, reason)) => ("forbid", reason.clone()),
    });
    if let Err((error, _)) = decision {
        return failed(seen, error, error_wire);
    }
    let result = if is_watch {
        // The watch's permit lives as long as its stream.
        route(state, request).await.map(|response| match permit {
            Some(permit) => response.map(|body| {
                body.map_frame(move |frame| {
                    let _held = &permit;
                    frame
                })
                .boxed_unsync()
            }),
            None => response,
        })
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, route(state, request)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::unavailable("the request did not complete in time")),
        }
    };
    result.unwrap_or_else(|error| failed(seen, error, error_wire))
}

/// Who `request` is from: 401 Unauthorized for bad credentials, and for anonymous requests
/// beyond the health and version endpoints once authentication is configured.
fn authenticate(
    state: &ApiState,
    connection: &Connection,
    request: &Request<Incoming>,
) -> Result<Arc<crate::auth::UserInfo>, ApiError> {
    use crate::auth::authn::{Outcome, ANONYMOUS_PATHS};
    let authenticator = &state.authenticator;
    // Without authentication every request is the loopback admin's.
    if !authenticator.is_configured() {
        return Ok(Arc::new(crate::auth::UserInfo::loopback_admin()));
    }
    let authorization = request.headers().get(header::AUTHORIZATION).map(|value| value.to_str().ok());
    match authenticator.authenticate(authorization, connection.client_certificate.as_deref()) {
        Outcome::User(user) => Ok(user),
        Outcome::Anonymous if authenticator.anonymous && ANONYMOUS_PATHS.contains(&request.uri().path()) => {
            Ok(Arc::new(crate::auth::UserInfo::anonymous()))
        }
        Outcome::Anonymous | Outcome::Refused => Err(ApiError::unauthorized()),
    }
}

/// Asks the authorizer about `request` as `user`: 403 Forbidden (and the authorizer's reason)
/// unless it allows it.
fn authorize(
    state: &ApiState,
    user: &crate::auth::UserInfo,
    request: &Request<Incoming>,
    is_watch: bool,
) -> Result<(), (ApiError, String)> {
    let path = request.uri().path();
    let parsed = request::parse_path(path).filter(|parsed| parsed.plural.is_some());
    // A non-resource request's verb is its lower-case HTTP method, as in kube.
    let verb = match parsed {
        Some(_) => classify(request.method(), path, is_watch).0,
        None => request.method().as_str().to_lowercase(),
    };
    let attributes = match &parsed {
        Some(parsed) => crate::auth::Attributes {
            user,
            verb: &verb,
            resource_request: true,
            path,
            api_group: &parsed.group,
            api_version: &parsed.version,
            namespace: parsed.namespace.as_deref().unwrap_or(""),
            resource: parsed.plural.as_deref().unwrap_or(""),
            subresource: parsed.subresource.as_deref().unwrap_or(""),
            name: parsed.name.as_deref().unwrap_or(""),
        },
        None => crate::auth::Attributes {
            user,
            verb: &verb,
            resource_request: false,
            path,
            api_group: "",
            api_version: "",
            namespace: "",
            resource: "",
            subresource: "",
            name: "",
        },
    };
    match state.authorizer.authorize(&attributes) {
        crate::auth::Decision::Allow => Ok(()),
        crate::auth::Decision::Deny(reason) => Err((ApiError::forbidden(&attributes, &reason), reason)),
    }
}

async fn route(state: &ApiState, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let get = method == Method::GET;
    match path.as_str() {
        "/healthz" | "/livez" if get => return Ok(text(StatusCode::OK, "ok")),
        "/readyz" if get => return Ok(health::readyz(state, request.uri().query()).await),
        "/version" if get => return Ok(json_value(&version())),
        "/metrics" if get => {
            let revision = state.registry.storage().current_revision().await.ok();
            let text = state.metrics.render(revision);
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .body(full(Bytes::from(text)))
                .expect("valid response"));
        }
        "/api" | "/apis" if get => {
            let accept = request.headers().get(header::ACCEPT).and_then(|accept| accept.to_str().ok());
            if let Some(version) = discovery::aggregated_version(accept) {
                let document = discovery::aggregated(&state.registry, path == "/api", version);
                let mut response = json_value(&document);
                let content_type = discovery::aggregated_content_type(version);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.parse().expect("a header value"));
                response.headers_mut().insert(header::VARY, header::HeaderValue::from_static("Accept"));
                return Ok(response);
            }
            if path == "/apis" {
                return Ok(json_value(&discovery::group_list(&state.registry)));
            }
            let host = request.headers().get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("");
            return Ok(json_value(&discovery::core_versions(host)));
        }
        "/openapi/v3" if get => return Ok(json_value(&discovery::openapi_index(&state.registry))),
        "/healthz" | "/livez" | "/readyz" | "/version" | "/metrics" | "/api" | "/apis" | "/openapi/v3" => {
            return Err(ApiError::method_not_allowed(&method))
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3/") {
        let (group, version) = match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["api", version] => ("", *version),
            ["apis", group, version] => (*group, *version),
            _ => return Err(ApiError::no_route()),
        };
        return discovery::openapi_group_version(&state.registry, group, version)
            .map(|document| json_value(&document))
            .ok_or_else(ApiError::no_route);
    }
    if let Some(group) = path.strip_prefix("/apis/").filter(|rest| !rest.contains('/')) {
        if !get {
            return Err(ApiError::method_not_allowed(&method));
        }
        return discovery::group(&state.registry, group)
            .map(|document| json_value(&document))
            .ok_or_else(ApiError::no_route);
    }
    let parsed = request::parse_path(&path).ok_or_else(ApiError::no_route)?;
    if parsed.plural.is_none() {
        if !get {
            return Err(ApiError::method_not_allowed(&method));
        }
        return discovery::resource_list(&state.registry, &parsed.group, &parsed.version)
            .map(|document| json_value(&document))
            .ok_or_else(ApiError::no_route);
    }
    if parsed.name.is_none() {
        let namespaced = parsed.namespace.is_some();
        let review = parsed
            .plural
            .as_deref()
            .and_then(|plural| reviews::find(&parsed.group, &parsed.version, plural, namespaced));
        if let Some(review) = review {
            let user = reviews::requesting_user(&request);
            let (parts, body) = request.into_parts();
            let body = read_body(&parts.headers, body).await?;
            let namespace = parsed.namespace.as_deref();
            return reviews::handle(state, review, namespace, &method, &parts.headers, &user, &body);
        }
    }
    let target = handlers::Target::resolve(state, &parsed)?;
    let query = request::parse_query(request.uri().query())?;
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body).await?;
    handlers::dispatch(state, &target, &method, &query, &parts.headers, &body).await
}

/// Reads a request body of at most [`handlers::MAX_BODY_BYTES`] (413 beyond).
async fn read_body(headers: &http::HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    let limit = handlers::MAX_BODY_BYTES;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::too_large(limit))
        }
        Err(error) => Err(ApiError::bad_request(format!("cannot read the request body: {error}"))),
    }
}

fn json_value(value: &serde_json::Value) -> Response<Body> {
    handlers::json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(value).expect("JSON value encodes")),
    )
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

fn text(code: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::copy_from_slice(body.as_bytes())))
        .expect("valid response")
}
