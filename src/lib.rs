//! watchcache: a Kubernetes-API-compatible API server whose reads and watches are served from an
//! in-memory watch cache.
//!
//! The crate is a library with one binary (`src/main.rs`). Its modules follow the path of a
//! request (see `ARCHITECTURE.md` at the repository root):
//!
//! - [`cli`]: the command line (`watchcache serve ...`);
//! - [`server`]: opens the storage, starts the HTTP server and runs it until a signal;
//! - [`api`]: HTTP — the only module that knows hyper and Kubernetes `Status` errors;
//! - [`cacher`]: the watch cache, one per resource type, fed by a reflector from storage;
//! - [`patch`]: JSON, merge and strategic merge patches;
//! - [`registry`]: the served resource types (built-ins and CRDs), each with its watch cache;
//! - [`selector`]: label and field selectors, parsed and matched as kube-apiserver does;
//! - [`storage`]: the versioned key-value store interface and its embedded and etcd backends;
//! - [`validation`]: object metadata validation with kube-apiserver's messages.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod cacher;
pub mod cli;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod server;
pub mod storage;
pub mod tls;
pub mod validation;
