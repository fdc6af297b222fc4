//! Wharf's one integration-test binary: every test starts the real `wharf` binary on a loopback port with
//! its own temp data dir and talks to it over HTTP (or through a real third-party client).

mod cli;
mod common;
mod errors;
mod external;
mod images;
mod layering;
mod mirror;
mod mirror_clients;
mod registry;
mod skopeo;
mod streaming;
mod sync;
