//! Wharf: a self-hosted OCI registry and pull-through mirror.
//!
//! Layer rule (each layer may use the ones to its right, never the ones to its left):
//! ```text
//! cli → app → api → service → store → oci
//! config: plain data used from above; it imports nothing from api, service or store.
//! ```
//! `api` is HTTP only; `service` is the one path for repository reads and writes and applies the registry's
//! rules; `store` owns durable state and never imports axum. `tests/layering.rs` keeps this true.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod service;
pub mod store;
