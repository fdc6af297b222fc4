//! Image references in builds and deployments: find them (`scan`), pin them to digests resolved through Wharf
//! (a lock file), and rewrite them in place to Wharf's name and/or to digests, changing only the reference
//! text. Pure text and data: the CLI reads and writes files and asks the server.

pub mod scan;

use std::collections::BTreeMap;

use oci::reference::Reference;
use oci::Digest;
use serde::{Deserialize, Serialize};

use self::scan::Found;

/// The lock file: every reference found, with the digest it resolved to through Wharf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Format version (1).
    pub version: u32,
    /// By normalised reference (`docker.io/library/alpine:3.20`).
    pub images: BTreeMap<String, Locked>,
}

/// One locked reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locked {
    /// Digest of what the reference resolved to (the index for a multi-platform image).
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// For an index: each platform (`linux/arm64/v8`) and its manifest digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, String>,
    /// Where the reference was found (`file:line`).
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Lock {
    /// Parse a lock file's text.
    pub fn parse(text: &str) -> Result<Lock, String> {
        let lock: Lock = serde_json::from_str(text).map_err(|e| format!("not a wharf lock file: {e}"))?;
        if lock.version != 1 {
            return Err(format!("lock file version {} is not supported (expected 1)", lock.version));
        }
        for (r, l) in &lock.images {
            l.digest.parse::<Digest>().map_err(|e| format!("{r}: digest {:?}: {e}", l.digest))?;
        }
        Ok(lock)
    }

    /// The digest `reference` is locked to.
    pub fn digest_of(&self, reference: &str) -> Option<Digest> {
        self.images.get(reference).and_then(|l| l.digest.parse().ok())
    }

    /// What is wrong with this lock against a fresh resolution `now` of the references found: references not
    /// locked, and locked digests that no longer match. Empty when the lock is current.
    pub fn problems(&self, now: &Lock) -> Vec<String> {
        let mut out = Vec::new();
        for (r, l) in &now.images {
            match self.images.get(r) {
                None => out.push(format!("{r}: not in the lock file ({})", l.sources.join(", "))),
                Some(old) if old.digest != l.digest => {
                    out.push(format!("{r}: locked at {} but now resolves to {}", old.digest, l.digest))
                }
                Some(_) => {}
            }
        }
        out
    }
}

/// How to rewrite references.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Wharf's `host:port`: references move to its path-prefix name (`wharf:5000/docker.io/library/alpine`).
    pub registry: Option<String>,
    /// Digests to pin references to (`@sha256:…` appended, the tag kept), by normalised original reference.
    pub pins: Option<Lock>,
}

/// The reference a name under Wharf's path-prefix form stands for (`wharf:5000/docker.io/library/alpine:1` →
/// `docker.io/library/alpine:1`); other references are returned as they are.
pub fn original(r: &Reference, registry: Option<&str>) -> Reference {
    if registry != Some(r.registry.as_str()) {
        return r.clone();
    }
    let Some((first, rest)) = r.repo.as_str().split_once('/') else { return r.clone() };
    if !oci::reference::looks_like_host(first) {
        return r.clone();
    }
    // The path prefix spells a port as `_` (`registry.local_5000`); hosts cannot contain `_`.
    let host = first.replace('_', ":");
    match format!("{host}/{rest}").parse::<Reference>() {
        Ok(mut o) => {
            o.tag = r.tag.clone();
            o.digest = r.digest.clone();
            o
        }
        Err(_) => r.clone(),
    }
}

/// The lock file's key for a reference: its tag form when it has a tag (a pin written next to the tag is what
/// the lock records, not part of the name), else the digest form.
pub fn lock_key(r: &Reference) -> String {
    let mut k = r.clone();
    if k.tag.is_some() {
        k.digest = None;
    }
    k.to_string()
}

impl Rewrite {
    /// The new text for one found reference, or `None` when it stays as written.
    pub fn replacement(&self, f: &Found) -> Option<String> {
        let registry = self.registry.as_deref();
        let orig = original(&f.reference, registry);
        let mut r = f.reference.clone();
        let mut changed = false;
        if let Some(reg) = registry {
            if r.registry != reg {
                let prefix = crate::policy::routing::cache_host(&r.registry);
                r.repo = format!("{prefix}/{}", r.repo).parse().ok()?;
                r.registry = reg.to_owned();
                changed = true;
            }
        }
        if r.digest.is_none() {
            if let Some(d) = self.pins.as_ref().and_then(|p| p.digest_of(&lock_key(&orig))) {
                r.digest = Some(d);
                changed = true;
            }
        }
        changed.then(|| r.to_string())
    }

    /// Apply to `text` the replacements of the references found in it; returns the new text and how many
    /// references changed. Only the references' own bytes change.
    pub fn apply(&self, text: &str, found: &[Found]) -> (String, usize) {
        let mut edits: Vec<((usize, usize), String)> =
            found.iter().filter_map(|f| Some((f.span?, self.replacement(f)?))).collect();
        edits.sort_by_key(|((start, _), _)| std::cmp::Reverse(*start));
        let mut out = text.to_owned();
        for ((start, end), new) in &edits {
            out.replace_range(*start..*end, new);
        }
        (out, edits.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::scan::{scan, Kind};
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn lock(entries: &[(&str, &str)]) -> Lock {
        let images = entries
            .iter()
            .map(|(r, d)| {
                (
                    r.to_string(),
                    Locked {
                        digest: d.to_string(),
                        media_type: "application/vnd.oci.image.index.v1+json".into(),
                        platforms: BTreeMap::new(),
                        sources: vec!["f:1".into()],
                    },
                )
            })
            .collect();
        Lock { version: 1, images }
    }

    fn rewrite_twice(kind: Kind, text: &str, how: &Rewrite) -> String {
        let (found, _) = scan(kind, text, &HashMap::new());
        let (once, _) = how.apply(text, &found);
        let (found2, _) = scan(kind, &once, &HashMap::new());
        let (twice, n) = how.apply(&once, &found2);
        assert_eq!(once, twice, "rewriting twice changes nothing more");
        assert_eq!(n, 0);
        once
    }

    #[test]
    fn rewrite_changes_only_reference_text_and_is_idempotent() {
        let yaml = "spec:\n  containers:\n    - image: \"nginx:1.27\"   # web\n    - image: registry.local:5000/team/app:2\n      name: app\n";
        let how = Rewrite {
            registry: Some("wharf.example:5000".into()),
            pins: Some(lock(&[("docker.io/library/nginx:1.27", DIGEST)])),
        };
        let out = rewrite_twice(Kind::Yaml, yaml, &how);
        assert_eq!(
            out,
            format!(
                "spec:\n  containers:\n    - image: \"wharf.example:5000/docker.io/library/nginx:1.27@{DIGEST}\"   # web\n    - image: wharf.example:5000/registry.local_5000/team/app:2\n      name: app\n"
            )
        );
        let docker = "ARG V=3.20\nFROM alpine:${V} AS a\nFROM golang:1.22 AS b # not a comment in Dockerfiles\nCOPY --from=a /x /y\n";
        let how = Rewrite { registry: Some("wharf:5000".into()), pins: None };
        let out = rewrite_twice(Kind::Dockerfile, docker, &how);
        assert_eq!(out, docker.replace("golang:1.22", "wharf:5000/docker.io/library/golang:1.22"), "variables stay");
        // Pinning alone keeps the name and adds the digest.
        let how = Rewrite { registry: None, pins: Some(lock(&[("docker.io/library/golang:1.22", DIGEST)])) };
        let out = rewrite_twice(Kind::Dockerfile, docker, &how);
        assert!(out.contains(&format!("FROM docker.io/library/golang:1.22@{DIGEST} AS b")), "{out}");
    }

    #[test]
    fn original_reverses_the_path_prefix() {
        let r: Reference = "wharf:5000/registry.local_5000/team/app:2".parse().unwrap();
        assert_eq!(original(&r, Some("wharf:5000")).to_string(), "registry.local:5000/team/app:2");
        let hosted: Reference = "wharf:5000/team/app:2".parse().unwrap();
        assert_eq!(original(&hosted, Some("wharf:5000")), hosted);
    }

    #[test]
    fn lock_check_finds_missing_and_stale() {
        let old = lock(&[("docker.io/library/a:1", DIGEST)]);
        let other = DIGEST.replace('1', "2");
        let now = lock(&[("docker.io/library/a:1", &other), ("docker.io/library/b:1", DIGEST)]);
        let p = old.problems(&now);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(old.problems(&old).is_empty());
        let text = serde_json::to_string(&old).unwrap();
        assert_eq!(Lock::parse(&text).unwrap(), old);
        assert!(Lock::parse("{\"version\": 2, \"images\": {}}").is_err());
    }
}
