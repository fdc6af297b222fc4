//! Which webhook wants which event: the event types Wharf emits and the `[[webhook]]` filters over them.

use super::tags::TagPattern;

/// Every event type, without the `io.wharf.` prefix.
pub const KINDS: &[&str] = &[
    "manifest.pushed",
    "manifest.deleted",
    "tag.moved",
    "tag.deleted",
    "mirror.filled",
    "sync.finished",
    "sync.conflict",
    "gc.finished",
    "scrub.corrupt",
];

/// Whether a filter (`tag.moved`, `tag.*`, `*`) names at least one type.
pub fn known_filter(f: &str) -> bool {
    KINDS.iter().any(|k| kind_matches(f, k))
}

fn kind_matches(filter: &str, kind: &str) -> bool {
    match filter.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => filter == kind,
    }
}

/// One endpoint's filters, compiled.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    kinds: Vec<String>,
    repositories: Vec<TagPattern>,
}

impl Filter {
    /// From `events` and `repositories` (checked by the configuration first).
    pub fn new(kinds: &[String], repositories: &[String]) -> Result<Filter, String> {
        let repositories = repositories.iter().map(|r| TagPattern::parse(r.trim())).collect::<Result<_, _>>()?;
        Ok(Filter { kinds: kinds.to_vec(), repositories })
    }

    /// Whether an event of `kind` about `repository` goes to this endpoint.
    pub fn wants(&self, kind: &str, repository: Option<&str>) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|f| kind_matches(f, kind)))
            && match repository {
                Some(r) => self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches(r)),
                None => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_kind_prefix_and_repository() {
        let f = Filter::new(&["tag.*".into(), "gc.finished".into()], &["team/*".into()]).unwrap();
        assert!(f.wants("tag.moved", Some("team/app")));
        assert!(f.wants("tag.deleted", Some("team/a/b")));
        assert!(!f.wants("tag.moved", Some("other/app")));
        assert!(!f.wants("manifest.pushed", Some("team/app")));
        assert!(f.wants("gc.finished", None), "events without a repository pass the repository filter");
        let all = Filter::new(&[], &[]).unwrap();
        assert!(KINDS.iter().all(|k| all.wants(k, Some("x"))));
        assert!(known_filter("sync.*") && known_filter("*") && !known_filter("push"));
    }
}
