//! Pure rules over configuration data, no I/O: which upstream serves a repository, which tags are immutable.
//! The only place these rules are enforced is `service`/`mirror`; this module only answers questions.

pub mod access;
pub mod events;
pub mod retention;
pub mod routing;
pub mod tag_rules;
pub mod tags;
