//! Wiring: opens the storage the flags name, binds the listener, serves until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, ApiState};
use crate::cacher::CacheConfig;
use crate::cli::{ServeArgs, StorageMediaType};
use crate::registry::Registry;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
use crate::storage::etcd::{self, EtcdOptions, EtcdStorage};
use crate::storage::Storage;

/// Why `watchcache serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The storage could not be opened or reached.
    #[error("cannot open storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Authentication could not be set up.
    #[error("authentication: {0}")]
    Authn(#[from] crate::auth::authn::AuthnError),
    /// A non-loopback address without TLS and authentication.
    #[error(
        "refusing to listen on {0}, which is not a loopback address, without TLS and authentication: \
         give --tls-cert-file/--tls-private-key-file or --tls-self-signed, and --token-auth-file, \
         --client-ca-file or --write-kubeconfig; or --insecure-allow-remote to serve it anyway"
    )]
    InsecureRemote(std::net::SocketAddr),
    /// A flag combination that cannot work.
    #[error("{0}")]
    Flags(String),
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address from `--listen`.
        address: std::net::SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Opens the storage selected by `args`.
pub async fn open_storage(args: &ServeArgs) -> Result<Arc<dyn Storage>, ServeError> {
    if !args.etcd_endpoints.is_empty() {
        let options = EtcdOptions {
            prefix: args.etcd_prefix.clone(),
            startup_timeout: Duration::from_secs(args.etcd_startup_timeout),
            media_type: match args.storage_media_type {
                StorageMediaType::Json => etcd::StorageMediaType::Json,
                StorageMediaType::Protobuf => etcd::StorageMediaType::Protobuf,
            },
            ..EtcdOptions::default()
        };
        return Ok(Arc::new(EtcdStorage::connect(&args.etcd_endpoints, options).await?));
    }
    let options = EmbeddedOptions { history_revisions: args.history_revisions };
    let storage = if args.in_memory {
        EmbeddedStorage::in_memory(options)?
    } else {
        let dir = args.data_dir.clone();
        tokio::task::spawn_blocking(move || EmbeddedStorage::open(&dir, options))
            .await
            .expect("storage open task panicked")?
    };
    Ok(Arc::new(storage))
}

/// How many connections the kernel may queue for `accept` (capped by `net.core.somaxconn`).
/// tokio's `TcpListener::bind` asks for 1,024; when a restarted server faces thousands of
/// clients reconnecting at once, a full queue drops their SYNs and each waits for TCP's 1 s
/// retry. Go's servers (kube-apiserver's included) ask for the kernel's maximum.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `address` with [`LISTEN_BACKLOG`], reusing the address as tokio's `bind` does.
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs `watchcache serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let security = Security::new(&args)?;
    let storage = open_storage(&args).await?;
    let listener =
        listen(args.listen).map_err(|source| ServeError::Listen { address: args.listen, source })?;
    let address =
        listener.local_addr().map_err(|source| ServeError::Listen { address: args.listen, source })?;
    let description = storage.describe();
    let mut authenticator = security.authenticator;
    if let Some(path) = &args.write_kubeconfig {
        write_kubeconfig(path, address, security.tls.as_ref(), &mut authenticator)?;
    }
    let mut cache_config =
        CacheConfig { delivery_linger: args.watch_delivery_linger, ..CacheConfig::default() };
    let capacity = args.watch_cache_capacity as usize;
    cache_config.ring.max_events = capacity;
    cache_config.ring.min_events = cache_config.ring.min_events.min(capacity);
    cache_config.store.retain_for = args.paginated_list_retention;
    cache_config.ring.max_bytes = usize::try_from(args.watch_cache_max_bytes).unwrap_or(usize::MAX);
    if args.watch_cache_total_max_bytes > 0 {
        let limit = usize::try_from(args.watch_cache_total_max_bytes).unwrap_or(usize::MAX);
        cache_config.ring.budget = Some(Arc::new(crate::cacher::ring::ByteBudget::new(limit)));
    }
    let registry = Arc::new(Registry::new(Arc::clone(&storage), cache_config));
    create_default_namespaces(&storage).await?;
    crate::auth::bootstrap::ensure_policy(&storage).await.map_err(ServeError::Storage)?;
    let authorizer: Arc<dyn crate::auth::Authorizer> =
        match args.authorization_mode(authenticator.is_configured()) {
            crate::cli::AuthorizationMode::AlwaysAllow => Arc::new(crate::auth::AlwaysAllow),
            crate::cli::AuthorizationMode::Rbac => {
                Arc::new(crate::auth::rbac::RbacAuthorizer::from_registry(Arc::clone(&registry)))
            }
        };
    // ServiceAccount tokens name objects that must still exist: looked up in the watch cache.
    authenticator.set_token_objects(Arc::new(crate::auth::authn::CacheObjects(Arc::clone(&registry))));
    api::crd::spawn_sync(Arc::clone(&registry));
    api::namespaces::spawn(Arc::clone(&registry));
    let mut metrics = api::metrics::Metrics::new(Arc::clone(&registry));
    if !args.etcd_compaction_interval.is_zero() {
        let stats = Arc::new(crate::storage::compactor::CompactorStats::default());
        crate::storage::compactor::spawn(
            Arc::clone(&storage),
            args.etcd_compaction_interval,
            Arc::clone(&stats),
        );
        metrics.register_compactor(stats);
    }
    let audit = match &args.audit_log_path {
        None => None,
        Some(path) => {
            let log = api::audit::AuditLog::open(path).map_err(|error| {
                ServeError::Flags(format!("--audit-log-path {}: {error}", path.display()))
            })?;
            metrics.register_audit(log.stats());
            Some(Arc::new(log))
        }
    };
    let permits = |limit: usize| (limit > 0).then(|| Arc::new(tokio::sync::Semaphore::new(limit)));
    let inflight = permits(args.max_requests_inflight);
    let mutating_inflight = permits(args.max_mutating_requests_inflight);
    let watches = permits(args.max_watches);
    let state = Arc::new(ApiState {
        registry,
        metrics,
        inflight,
        mutating_inflight,
        watches,
        min_request_timeout: args.min_request_timeout,
        authorizer,
        authenticator: Arc::new(authenticator),
        audit,
    });
    // The one startup line: scripts and tests read the address from it.
    let scheme = if security.tls.is_some() { "https" } else { "http" };
    println!("watchcache listening on {scheme}://{address} (storage: {description})");
    if let Some(files) = &security.self_signed {
        println!("self-signed CA certificate: {}", files.ca_cert.display());
        println!("self-signed serving certificate: {} (key {})", files.cert.display(), files.key.display());
    }
    if let Some(path) = &args.write_kubeconfig {
        println!("kubeconfig written to {}", path.display());
    }
    let config = security.tls.map(|tls| Arc::new(tls.config));
    let limits = api::limits::ConnectionLimits {
        idle_timeout: args.idle_connection_timeout,
        header_timeout: args.request_header_timeout,
    };
    api::serve(listener, state, config, limits, shutdown_signal()).await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// TLS as the flags set it up.
struct Tls {
    config: rustls::ServerConfig,
    /// The CA clients should trust (PEM): the self-signed CA, or the last certificate of the
    /// served chain.
    ca_pem: String,
}

/// TLS and authentication, from the flags.
struct Security {
    tls: Option<Tls>,
    self_signed: Option<crate::tls::SelfSigned>,
    authenticator: crate::auth::authn::Authenticator,
}

impl Security {
    fn new(args: &ServeArgs) -> Result<Security, ServeError> {
        let self_signed = if args.tls_self_signed {
            Some(crate::tls::self_signed(&args.data_dir, args.listen.ip())?)
        } else {
            None
        };
        let files = match (&self_signed, &args.tls_cert_file, &args.tls_private_key_file) {
            (Some(files), _, _) => Some((files.cert.clone(), files.key.clone())),
            (None, Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        };
        if args.client_ca_file.is_some() && files.is_none() {
            return Err(ServeError::Flags(
                "--client-ca-file needs TLS (--tls-cert-file/--tls-private-key-file or --tls-self-signed)"
                    .into(),
            ));
        }
        let tls = match files {
            None => None,
            Some((cert, key)) => {
                let certificate = Arc::new(crate::tls::ReloadingCertificate::new(&cert, &key)?);
                let ca_der = match &self_signed {
                    Some(files) => crate::tls::read_certificates(&files.ca_cert)?.remove(0),
                    None => certificate.chain().pop().expect("a chain has a certificate"),
                };
                let ca_pem = pem_certificate(&ca_der);
                let config = crate::tls::server_config(certificate, args.client_ca_file.as_deref())?;
                Some(Tls { config, ca_pem })
            }
        };
        let mut authenticator = crate::auth::authn::Authenticator::new(args.anonymous_auth);
        if let Some(path) = &args.token_auth_file {
            authenticator.load_token_file(path)?;
        }
        if args.client_ca_file.is_some() {
            authenticator.enable_client_certificates();
        }
        if let Some(key_file) = &args.service_account_key_file {
            authenticator.set_service_accounts(crate::auth::authn::ServiceAccountTokens::new(
                args.service_account_issuer.clone(),
                args.api_audiences.clone(),
                key_file,
                args.service_account_signing_key_file.as_deref(),
            )?);
        }
        // Under TLS, --write-kubeconfig configures a token.
        let authenticated = authenticator.is_configured() || args.write_kubeconfig.is_some();
        let secured = tls.is_some() && authenticated;
        if !(args.listen.ip().is_loopback() || secured || args.insecure_allow_remote) {
            return Err(ServeError::InsecureRemote(args.listen));
        }
        Ok(Security { tls, self_signed, authenticator })
    }
}

fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Writes a kubeconfig for `address` with a new admin token (system:admin in system:masters),
/// which `authenticator` learns.
fn write_kubeconfig(
    path: &std::path::Path,
    address: std::net::SocketAddr,
    tls: Option<&Tls>,
    authenticator: &mut crate::auth::authn::Authenticator,
) -> Result<(), ServeError> {
    use base64::Engine;
    // kubectl sends no bearer token over plain HTTP: without TLS the kubeconfig has no
    // credential, and the server stays as it is without one (the loopback admin's, unless
    // other authenticators are configured).
    let mut user = serde_json::json!({});
    if tls.is_some() {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        authenticator.add_token(
            token.clone(),
            crate::auth::UserInfo {
                name: "system:admin".into(),
                groups: vec![crate::auth::MASTERS_GROUP.into()],
                ..crate::auth::UserInfo::default()
            },
        );
        user["token"] = token.into();
    }
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut cluster = serde_json::json!({"server": format!("{scheme}://{}", std::net::SocketAddr::new(host, address.port()))});
    if let Some(tls) = tls {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(tls.ca_pem.as_bytes()).into();
    }
    // JSON is YAML: kubectl and client libraries read it as a kubeconfig.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "watchcache", "cluster": cluster}],
        "users": [{"name": "watchcache-admin", "user": user}],
        "contexts": [{"name": "watchcache", "context": {"cluster": "watchcache", "user": "watchcache-admin", "namespace": "default"}}],
        "current-context": "watchcache",
        "preferences": {},
    });
    let bytes = serde_json::to_vec_pretty(&kubeconfig).expect("JSON value encodes");
    crate::tls::write_private(path, &bytes)
        .map_err(|error| ServeError::Kubeconfig { path: path.to_owned(), reason: error.to_string() })
}

/// The namespaces kube-apiserver always has.
async fn create_default_namespaces(storage: &Arc<dyn Storage>) -> Result<(), ServeError> {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let object = serde_json::json!({
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let value = bytes::Bytes::from(serde_json::to_vec(&object).expect("JSON value encodes"));
        match storage.create(&format!("/namespaces/{name}"), value).await {
            Ok(_) | Err(crate::storage::StorageError::AlreadyExists { .. }) => {}
            Err(error) => return Err(ServeError::Storage(error)),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
