//! Wharf: a self-hosted OCI registry and pull-through mirror.
//!
//! Layer rule (each layer may use the ones to its right, never the ones to its left):
//! ```text
//! cli → app (+ tasks) → { api → service → mirror, sync → transfer } → { store, upstream } → oci
//! config, policy: plain data and pure rules used from above; they import nothing from api, service or store.
//! ```
//! `api` is HTTP only; `service` is the one path for repository reads and writes and applies the registry's
//! rules; `mirror` fetches and caches for mirrored repositories; `store` owns durable state and never imports
//! axum; `upstream` (the outbound client) never imports `store`. `tests/layering.rs` keeps this true.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod history;
pub mod inflight;
pub mod metrics;
pub mod mirror;
pub mod policy;
pub mod service;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod transfer;
pub mod upstream;
