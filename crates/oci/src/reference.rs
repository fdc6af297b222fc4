//! Full image references (`registry/repo:tag@digest`) as users write them in mirror and sync configuration.
//!
//! Docker Hub's conventions are applied here, once: a reference without a registry host means `docker.io`,
//! `index.docker.io` is `docker.io`, and a single-component Docker Hub name lives under `library/`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::name::{NameError, RepoName, Tag};

/// The registry host Docker Hub images are named under.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty string.
    #[error("empty image reference")]
    Empty,
    /// The registry host part is malformed.
    #[error("invalid registry host {0:?}")]
    Registry(String),
    /// A part failed its own grammar.
    #[error("invalid image reference {0:?}: {1}")]
    Part(String, NameError),
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port if any), normalised (`docker.io`, not `index.docker.io`).
    pub registry: String,
    /// Repository within that registry (with `library/` added for Docker Hub official images).
    pub repo: RepoName,
    /// Tag, if given.
    pub tag: Option<Tag>,
    /// Digest, if given; wins over the tag when both are present.
    pub digest: Option<Digest>,
}

/// Canonical registry host: Docker Hub's aliases collapse to `docker.io`.
pub fn normalize_registry(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        h => h.to_ascii_lowercase(),
    }
}

/// Docker Hub's `library/` rule for a repository on `registry`.
pub fn normalize_repo(registry: &str, repo: &str) -> String {
    if registry == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo.to_owned()
    }
}

/// Whether a name's first component would be read as a registry host (`ghcr.io`, `registry.local:5000`,
/// `localhost`), as Docker's reference grammar reads it. Such components are reserved for mirrored registries.
pub fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Whether `h` is a registry host as references and configuration name it: dot-separated labels of ASCII
/// letters, digits and `-`, with an optional numeric port (`registry.local:5000`). The one host check, used by
/// reference parsing and by `[[upstream]] name` validation.
pub fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let part = |e: NameError| ReferenceError::Part(s.to_owned(), e);
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| part(e.into()))?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if looks_like_host(first) => {
                if !valid_host(first) {
                    return Err(ReferenceError::Registry(first.to_owned()));
                }
                (normalize_registry(first), path)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        // The tag separator is a ':' after the last '/'.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match path[last_slash..].find(':') {
            Some(i) => (&path[..last_slash + i], Some(path[last_slash + i + 1..].parse::<Tag>().map_err(part)?)),
            None => (path, None),
        };
        let repo = normalize_repo(&registry, repo).parse::<RepoName>().map_err(part)?;
        Ok(Reference { registry, repo, tag, digest })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(r("alpine").to_string(), "docker.io/library/alpine");
        assert_eq!(r("alpine:3.19").to_string(), "docker.io/library/alpine:3.19");
        assert_eq!(r("index.docker.io/nginx").to_string(), "docker.io/library/nginx");
        assert_eq!(r("bitnami/redis:7").to_string(), "docker.io/bitnami/redis:7");
        assert_eq!(r("docker.io/library/alpine").repo.as_str(), "library/alpine");
    }

    #[test]
    fn other_registries() {
        let x = r("registry.k8s.io/pause:3.10");
        assert_eq!((x.registry.as_str(), x.repo.as_str()), ("registry.k8s.io", "pause"));
        let x = r("localhost:5000/a/b:c");
        assert_eq!((x.registry.as_str(), x.repo.as_str(), x.tag.unwrap().as_str()), ("localhost:5000", "a/b", "c"));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let x = r(&format!("ghcr.io/o/p:v1@{d}"));
        assert_eq!(x.digest.unwrap().to_string(), d);
        assert_eq!(x.tag.unwrap().as_str(), "v1");
    }

    #[test]
    fn rejects() {
        for bad in ["", "UPPER/x", "a:b:c", "host.io/", "x@sha256:1", "bad_host.io:99999999/x"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn round_trip(host in "(localhost|[a-z]{1,8}\\.(io|com))(:[0-9]{1,5})?",
                      repo in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}",
                      tag in proptest::option::of("[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}")) {
            let mut s = format!("{host}/{repo}");
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            let parsed: Reference = s.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), s);
        }
    }
}
