//! End-to-end tests of watchcache with real clients: the kube crate (`tests/kube_client.rs`).
//! The official Python client's smoke test is `python/smoke.py`, run by the main crate's
//! `tests/python_client.rs`.
