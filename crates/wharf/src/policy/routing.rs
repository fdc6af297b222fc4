//! Which upstream, if any, serves a repository request. All three client forms land on one cache key,
//! the canonical `<registry host>/<repository>`:
//!
//! - containerd mirror form: `/v2/library/alpine/...?ns=docker.io`
//! - path-prefix form: `/v2/docker.io/library/alpine/...` (also `/v2/docker.io/alpine/...`)
//! - default upstream (Docker daemon `registry-mirrors`, no `ns`): `/v2/library/alpine/...`, used only when
//!   the repository has no hosted content of that name.

use oci::reference::{normalize_registry, normalize_repo};
use oci::RepoName;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A repository hosted here (push and pull).
    Hosted(RepoName),
    /// A mirrored repository (read-only).
    Mirror(MirrorRoute),
    /// Hosted content of this name if there is any, otherwise the default upstream.
    HostedOrMirror(RepoName, MirrorRoute),
}

/// A repository of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRoute {
    /// Index of the upstream in the configuration.
    pub upstream: usize,
    /// Repository name at the upstream (`library/alpine`).
    pub remote: RepoName,
    /// Where the cache keeps it locally (`docker.io/library/alpine`).
    pub local: RepoName,
    /// The `ns` value that selected this upstream, echoed back in `OCI-Namespace`.
    pub ns: Option<String>,
}

/// The first path component of a host's cache (`registry.local:5000` → `registry.local_5000`): a port
/// cannot appear in a repository name, an underscore can.
pub fn cache_host(host: &str) -> String {
    normalize_registry(host).replace(':', "_")
}

/// Routing table built from the `[[upstream]]` names.
#[derive(Debug, Clone, Default)]
pub struct Router {
    names: Vec<String>,
    default: Option<usize>,
}

impl Router {
    /// `names[i]` is upstream i's registry host; `default` the upstream for un-prefixed requests.
    pub fn new(names: Vec<String>, default: Option<usize>) -> Router {
        Router { names: names.iter().map(|n| normalize_registry(n)).collect(), default }
    }

    fn find(&self, host: &str) -> Option<usize> {
        let host = normalize_registry(host);
        self.names.iter().position(|n| *n == host)
    }

    fn mirror(&self, upstream: usize, remote: &str, ns: Option<String>) -> Option<MirrorRoute> {
        let host = &self.names[upstream];
        let remote: RepoName = normalize_repo(host, remote).parse().ok()?;
        let local: RepoName = format!("{}/{remote}", cache_host(host)).parse().ok()?;
        Some(MirrorRoute { upstream, remote, local, ns })
    }

    /// Route a request for `repo`, with the `ns` query parameter if the client sent one. `None` when the
    /// resulting cache name would be invalid (too long).
    pub fn resolve(&self, repo: &RepoName, ns: Option<&str>) -> Option<Route> {
        if let Some(i) = ns.and_then(|ns| self.find(ns)) {
            return self.mirror(i, repo.as_str(), ns.map(str::to_owned)).map(Route::Mirror);
        }
        if let Some((first, rest)) = repo.as_str().split_once('/') {
            if let Some(i) = self.find(first).or_else(|| self.names.iter().position(|n| cache_host(n) == first)) {
                return self.mirror(i, rest, None).map(Route::Mirror);
            }
        }
        if let Some(i) = self.default {
            if let Some(m) = self.mirror(i, repo.as_str(), None) {
                return Some(Route::HostedOrMirror(repo.clone(), m));
            }
        }
        Some(Route::Hosted(repo.clone()))
    }

    /// Whether any upstream is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn mirror(up: usize, remote: &str, local: &str, ns: Option<&str>) -> MirrorRoute {
        MirrorRoute { upstream: up, remote: r(remote), local: r(local), ns: ns.map(str::to_owned) }
    }

    #[test]
    fn three_forms_share_one_cache_key() {
        let router = Router::new(vec!["docker.io".into(), "registry.k8s.io".into()], Some(0));
        let want = mirror(0, "library/alpine", "docker.io/library/alpine", None);
        assert_eq!(
            router.resolve(&r("library/alpine"), Some("docker.io")),
            Some(Route::Mirror(MirrorRoute { ns: Some("docker.io".into()), ..want.clone() }))
        );
        assert_eq!(router.resolve(&r("docker.io/library/alpine"), None), Some(Route::Mirror(want.clone())));
        assert_eq!(router.resolve(&r("docker.io/alpine"), None), Some(Route::Mirror(want.clone())));
        assert_eq!(router.resolve(&r("alpine"), None), Some(Route::HostedOrMirror(r("alpine"), want.clone())));
        assert_eq!(
            router.resolve(&r("alpine"), Some("index.docker.io")),
            Some(Route::Mirror(MirrorRoute { ns: Some("index.docker.io".into()), ..want }))
        );
        assert_eq!(
            router.resolve(&r("registry.k8s.io/pause"), None),
            Some(Route::Mirror(mirror(1, "pause", "registry.k8s.io/pause", None)))
        );
        assert_eq!(
            router.resolve(&r("pause"), Some("registry.k8s.io")),
            Some(Route::Mirror(mirror(1, "pause", "registry.k8s.io/pause", Some("registry.k8s.io"))))
        );
    }

    #[test]
    fn hosts_with_ports() {
        let router = Router::new(vec!["registry.local:5000".into()], None);
        let want = mirror(0, "team/app", "registry.local_5000/team/app", Some("registry.local:5000"));
        assert_eq!(router.resolve(&r("team/app"), Some("registry.local:5000")), Some(Route::Mirror(want.clone())));
        assert_eq!(
            router.resolve(&r("registry.local_5000/team/app"), None),
            Some(Route::Mirror(MirrorRoute { ns: None, ..want }))
        );
    }

    #[test]
    fn unknown_hosts_are_never_mirrored() {
        let router = Router::new(vec!["registry.k8s.io".into()], None);
        assert_eq!(router.resolve(&r("team/app"), Some("ghcr.io")), Some(Route::Hosted(r("team/app"))));
        assert_eq!(router.resolve(&r("ghcr.io/o/p"), None), Some(Route::Hosted(r("ghcr.io/o/p"))));
        assert_eq!(router.resolve(&r("team/app"), None), Some(Route::Hosted(r("team/app"))));
        assert!(Router::default().is_empty());
    }
}
