//! Which upstream, if any, serves a repository request. All three client forms land on one cache key,
//! the canonical `<registry host>/<repository>`:
//!
//! - containerd mirror form: `/v2/library/alpine/...?ns=docker.io`
//! - path-prefix form: `/v2/docker.io/library/alpine/...` (also `/v2/docker.io/alpine/...`)
//! - default upstream (Docker daemon `registry-mirrors`, no `ns`): `/v2/library/alpine/...`, used only when
//!   the repository has no hosted content of that name (the service decides that per repository, never per
//!   reference, so a hosted repository's misses never reach an upstream).
//!
//! An `ns` that names no configured upstream never reaches any upstream: the request is for hosted content
//! of that name only. A node that sends every registry through Wharf (`_default/hosts.toml`) therefore never
//! gets Docker Hub's `org/app` when it asked for `quay.io/org/app`.

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
    /// A name inside a mirrored namespace asked for with an `ns` that names no configured upstream: there is
    /// nothing to serve (the cache belongs to another registry) and nothing may be written.
    Foreign {
        /// The repository as asked for.
        repo: RepoName,
        /// The unconfigured `ns`.
        ns: String,
    },
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

/// The local repository where content of `remote` from upstream `host` is kept (`docker.io/library/alpine`,
/// `registry.local_5000/team/app`): the one cache-name formula, shared by request-time routing and by sync,
/// so a synced image is exactly where the mirror looks for it.
pub fn cache_repo(host: &str, remote: &RepoName) -> Result<RepoName, oci::NameError> {
    format!("{}/{remote}", cache_host(host)).parse()
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
        let local = cache_repo(host, &remote).ok()?;
        Some(MirrorRoute { upstream, remote, local, ns })
    }

    /// The upstream whose mirrored namespace `repo` is in (`docker.io/...`, `registry.local_5000/...`), and
    /// the rest of the name.
    fn prefixed<'a>(&self, repo: &'a RepoName) -> Option<(usize, &'a str)> {
        let (first, rest) = repo.as_str().split_once('/')?;
        let i = self.find(first).or_else(|| self.names.iter().position(|n| cache_host(n) == first))?;
        Some((i, rest))
    }

    /// Route a request for `repo`, with the `ns` query parameter if the client sent one. `None` when the
    /// resulting cache name would be invalid (too long).
    pub fn resolve(&self, repo: &RepoName, ns: Option<&str>) -> Option<Route> {
        if let Some(ns) = ns {
            return match self.find(ns) {
                Some(i) => self.mirror(i, repo.as_str(), Some(ns.to_owned())).map(Route::Mirror),
                // An unconfigured ns: hosted content only, and never a mirror's cache (which holds another
                // registry's content under that name).
                None if self.prefixed(repo).is_some() => Some(Route::Foreign { repo: repo.clone(), ns: ns.to_owned() }),
                None => Some(Route::Hosted(repo.clone())),
            };
        }
        if let Some((i, rest)) = self.prefixed(repo) {
            return self.mirror(i, rest, None).map(Route::Mirror);
        }
        if let Some(i) = self.default {
            if let Some(m) = self.mirror(i, repo.as_str(), None) {
                return Some(Route::HostedOrMirror(repo.clone(), m));
            }
        }
        Some(Route::Hosted(repo.clone()))
    }

    /// The configured registry hosts (the `ns` values that select a mirrored namespace).
    pub fn names(&self) -> &[String] {
        &self.names
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
    fn unconfigured_ns_never_reaches_an_upstream() {
        // With a default upstream, an ns that names no configured upstream must not fall through to it.
        let router = Router::new(vec!["docker.io".into()], Some(0));
        assert_eq!(router.resolve(&r("org/app"), Some("quay.io")), Some(Route::Hosted(r("org/app"))));
        // Nor may it reach the default upstream's cache through a prefixed name.
        assert_eq!(
            router.resolve(&r("docker.io/org/app"), Some("quay.io")),
            Some(Route::Foreign { repo: r("docker.io/org/app"), ns: "quay.io".into() })
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
