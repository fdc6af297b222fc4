//! Wharf's one integration-test binary: every test starts the real `wharf` binary on a loopback port with
//! its own temp data dir and talks to it over HTTP (or through a real third-party client).

mod auth;
mod bundle;
mod cache_budget;
mod cli;
mod clients;
mod common;
mod conformance;
mod console;
mod crash;
mod errors;
mod events;
mod external;
mod gc;
mod gc_crash;
mod image_refs;
mod images;
mod isolation;
mod layering;
mod mirror;
mod mirror_clients;
mod nodes;
mod oidc;
mod registry;
mod retention;
mod robots;
mod s3;
mod scrub;
mod skopeo;
mod streaming;
mod sync;
mod tag_policy;
mod tls;
mod tokens;
mod uploads;
mod verify;
