//! Tag patterns: globs (`v1.*`, `*-alpine`) or regular expressions (`re:^v[0-9]+$`), matched against whole tags.

use regex::Regex;

/// A compiled tag pattern.
#[derive(Debug, Clone)]
pub struct TagPattern {
    source: String,
    re: Regex,
}

fn glob_to_regex(glob: &str) -> String {
    let mut re = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

impl TagPattern {
    /// Compile `re:<regex>` or a glob; the error says what is wrong.
    pub fn parse(s: &str) -> Result<TagPattern, String> {
        let re = match s.strip_prefix("re:") {
            Some(r) => Regex::new(r).map_err(|e| format!("invalid regular expression {r:?}: {e}"))?,
            None if s.is_empty() => return Err("empty pattern".into()),
            None => Regex::new(&glob_to_regex(s)).map_err(|e| format!("invalid glob {s:?}: {e}"))?,
        };
        Ok(TagPattern { source: s.to_owned(), re })
    }

    /// Whether the whole tag matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.re.is_match(tag)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// One entry of a sync `tags` or `exclude` list.
#[derive(Debug, Clone)]
pub enum TagSelector {
    /// A literal tag: copied without listing the repository.
    Exact(String),
    /// A glob or `re:` pattern.
    Pattern(TagPattern),
    /// `semver:<range>`, e.g. `semver:>=1.29, <1.32`.
    Semver(semver::VersionReq),
}

impl TagSelector {
    /// Parse one entry; the error says what is wrong.
    pub fn parse(s: &str) -> Result<TagSelector, String> {
        if let Some(req) = s.strip_prefix("semver:") {
            return semver::VersionReq::parse(req.trim())
                .map(TagSelector::Semver)
                .map_err(|e| format!("invalid semver range {req:?}: {e}"));
        }
        if s.starts_with("re:") || s.contains(['*', '?']) {
            return TagPattern::parse(s).map(TagSelector::Pattern);
        }
        s.parse::<oci::Tag>().map_err(|e| e.to_string())?;
        Ok(TagSelector::Exact(s.to_owned()))
    }

    /// Whether `tag` is selected.
    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagSelector::Exact(t) => t == tag,
            TagSelector::Pattern(p) => p.matches(tag),
            TagSelector::Semver(req) => parse_version(tag).is_some_and(|v| req.matches(&v)),
        }
    }

    /// The literal tag, when this entry needs no listing.
    pub fn exact(&self) -> Option<&str> {
        match self {
            TagSelector::Exact(t) => Some(t),
            _ => None,
        }
    }
}

/// A tag read as a version: `v1.2.3`, `1.2.3`, `1.2` (as 1.2.0) and `1.2.3-rc.1` parse; others do not.
pub fn parse_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, pre) = t.split_once('-').map_or((t, None), |(c, p)| (c, Some(p)));
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        let full = match pre {
            Some(p) => format!("{core}.0-{p}"),
            None => format!("{core}.0"),
        };
        return semver::Version::parse(&full).ok();
    }
    None
}

/// Pick tags from `available`: any `include` matches, no `exclude` matches, then the newest `newest`
/// (version order where every candidate parses as a version, lexical otherwise). Sorted oldest first.
pub fn select(
    available: &[String],
    include: &[TagSelector],
    exclude: &[TagSelector],
    newest: Option<usize>,
) -> Vec<String> {
    let mut picked: Vec<String> = available
        .iter()
        .filter(|t| include.iter().any(|s| s.matches(t)) && !exclude.iter().any(|s| s.matches(t)))
        .cloned()
        .collect();
    picked.sort();
    picked.dedup();
    if picked.iter().all(|t| parse_version(t).is_some()) {
        picked.sort_by(|a, b| parse_version(a).cmp(&parse_version(b)).then(a.cmp(b)));
    }
    if let Some(n) = newest {
        let skip = picked.len().saturating_sub(n);
        picked.drain(..skip);
    }
    picked
}

/// Whether any pattern matches.
pub fn any_match(patterns: &[TagPattern], tag: &str) -> bool {
    patterns.iter().any(|p| p.matches(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::SEMVER_RELEASES;

    #[test]
    fn globs_and_regexes() {
        let g = TagPattern::parse("v1.*").unwrap();
        assert!(g.matches("v1.2") && g.matches("v1.") && !g.matches("v10") && !g.matches("xv1.2"));
        let q = TagPattern::parse("3.1?").unwrap();
        assert!(q.matches("3.19") && !q.matches("3.1"));
        let r = TagPattern::parse("re:^[0-9]+$").unwrap();
        assert!(r.matches("42") && !r.matches("4a"));
        assert!(TagPattern::parse("re:(").is_err());
        assert!(TagPattern::parse("").is_err());
    }

    fn sel(v: &[&str]) -> Vec<TagSelector> {
        v.iter().map(|s| TagSelector::parse(s).unwrap()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selectors() {
        assert!(matches!(TagSelector::parse("3.20").unwrap(), TagSelector::Exact(_)));
        assert!(matches!(TagSelector::parse("3.*").unwrap(), TagSelector::Pattern(_)));
        assert!(matches!(TagSelector::parse("semver:>=1.29, <1.32").unwrap(), TagSelector::Semver(_)));
        assert!(TagSelector::parse("semver:>=>1").is_err());
        assert!(TagSelector::parse("bad tag").is_err());
        let s = TagSelector::parse("semver:>=1.29, <1.32").unwrap();
        for t in ["v1.29.0", "1.31.9", "1.30"] {
            assert!(s.matches(t), "{t}");
        }
        for t in ["1.28.9", "v1.32.0", "latest", "1.30.0-rc.1"] {
            assert!(!s.matches(t), "{t}");
        }
    }

    #[test]
    fn selection_with_exclude_and_newest() {
        let avail = strings(&["1.28.0", "1.29.0", "1.29.1", "1.30.0", "1.30.0-rc.1", "1.31.2", "latest", "1.9.0"]);
        let got = select(&avail, &sel(&["semver:>=1.29"]), &[], None);
        assert_eq!(got, strings(&["1.29.0", "1.29.1", "1.30.0", "1.31.2"]));
        let got = select(&avail, &sel(&["1.*"]), &sel(&["*-rc*"]), Some(3));
        assert_eq!(got, strings(&["1.29.1", "1.30.0", "1.31.2"]), "version order, not lexical (1.9 < 1.28)");
        let got = select(&avail, &sel(&["latest", "re:^1\\.2[89]"]), &[], Some(2));
        assert_eq!(got, strings(&["1.29.1", "latest"]), "lexical order when not all parse");
    }

    #[test]
    fn semver_releases_pattern_is_full_semver() {
        let p = TagPattern::parse(SEMVER_RELEASES).unwrap();
        for t in ["1.2.3", "v1.29.0", "0.0.1"] {
            assert!(p.matches(t), "{t}");
        }
        for t in ["latest", "1.2", "3", "1.2.3-alpine", "stable"] {
            assert!(!p.matches(t), "{t}");
        }
    }
}
