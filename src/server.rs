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

/// Runs `watchcache serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let storage = open_storage(&args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen { address: args.listen, source })?;
    let address =
        listener.local_addr().map_err(|source| ServeError::Listen { address: args.listen, source })?;
    let description = storage.describe();
    let mut cache_config =
        CacheConfig { delivery_linger: args.watch_delivery_linger, ..CacheConfig::default() };
    let capacity = args.watch_cache_capacity as usize;
    cache_config.ring.max_events = capacity;
    cache_config.ring.min_events = cache_config.ring.min_events.min(capacity);
    let registry = Arc::new(Registry::new(Arc::clone(&storage), cache_config));
    create_default_namespaces(&storage).await?;
    crate::auth::bootstrap::ensure_policy(&storage).await.map_err(ServeError::Storage)?;
    let authorizer: Arc<dyn crate::auth::Authorizer> = match args.authorization_mode() {
        crate::cli::AuthorizationMode::AlwaysAllow => Arc::new(crate::auth::AlwaysAllow),
        crate::cli::AuthorizationMode::Rbac => {
            Arc::new(crate::auth::rbac::RbacAuthorizer::from_registry(Arc::clone(&registry)))
        }
    };
    api::crd::spawn_sync(Arc::clone(&registry));
    let metrics = api::metrics::Metrics::new(Arc::clone(&registry));
    let inflight = (args.max_requests_inflight > 0)
        .then(|| Arc::new(tokio::sync::Semaphore::new(args.max_requests_inflight)));
    let state = Arc::new(ApiState {
        registry,
        metrics,
        inflight,
        min_request_timeout: args.min_request_timeout,
        authorizer,
    });
    // The one startup line: scripts and tests read the address from it.
    println!("watchcache listening on http://{address} (storage: {description})");
    api::serve(listener, state, shutdown_signal()).await;
    tracing::info!("shut down cleanly");
    Ok(())
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
