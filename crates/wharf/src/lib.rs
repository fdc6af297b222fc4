//! Wharf: a self-hosted OCI registry and pull-through mirror.
//!
//! Layer rule (each layer may use the ones to its right, never the ones to its left):
//! ```text
//! cli → app (+ tasks, tls) → { api → service → mirror, sync → transfer } → { store, upstream } → oci
//! config, policy: plain data and pure rules used from above; they import nothing from api, service or store.
//! ```
//! `api` is HTTP only; `service` is the one path for repository reads and writes and applies the registry's
//! rules; `mirror` fetches and caches for mirrored repositories; `store` owns durable state and never imports
//! axum; `upstream` (the outbound client) never imports `store`. `tests/layering.rs` keeps this true.

pub mod access_log;
pub mod api;
pub mod app;
pub mod auth;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod events;
pub mod gc;
pub mod history;
pub mod images;
pub mod inflight;
pub mod metrics;
pub mod mirror;
pub mod nodes;
pub mod policy;
pub mod scrub;
pub mod service;
pub mod store;
pub mod stream;
pub mod sync;
pub mod tasks;
pub mod tls;
pub mod transfer;
pub mod upstream;
pub mod verify;
pub mod zero_copy;
