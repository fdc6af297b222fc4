//! Retention rules for hosted repositories (`[[retention]]`): which tags garbage collection removes and how
//! long untagged manifests stay. Pure decisions; `service::retention` gathers the facts and applies them.
//!
//! The first entry whose `repositories` match a repository applies to it. Within it a tag is kept when any
//! of these holds, checked in this order (the first one is the reason shown): it is immutable (a `[[tags]]`
//! rule), its manifest is pinned by a sync, it matches `keep_tags`, it is among the `keep_last` newest by
//! push time, or it was pushed or pulled within `keep_within`. An entry with none of the three `keep_*` keys
//! removes no tag (it only sets `untagged_after`).

use std::time::Duration;

use super::tags::{TagPattern, TagSelector};
use crate::config::retention::RetentionConfig;
use crate::config::sync::parse_duration;

/// One compiled `[[retention]]` entry.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    repositories: Vec<TagPattern>,
    keep_last: Option<usize>,
    keep_within: Option<Duration>,
    keep_tags: Vec<TagSelector>,
    untagged_after: Option<Duration>,
}

impl RetentionRule {
    /// Compile an entry; every problem comes with the key it concerns.
    pub fn compile(c: &RetentionConfig) -> Result<RetentionRule, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if c.repositories.is_empty() {
            problems.push(("repositories".into(), "must list at least one glob (\"*\" for every repository)".into()));
        }
        if c.keep_last.is_none() && c.keep_within.is_none() && c.keep_tags.is_empty() && c.untagged_after.is_none() {
            problems.push((
                "keep_last".into(),
                "the entry does nothing: set keep_last, keep_within, keep_tags or untagged_after".into(),
            ));
        }
        let mut rule = RetentionRule {
            repositories: Vec::new(),
            keep_last: c.keep_last,
            keep_within: None,
            keep_tags: Vec::new(),
            untagged_after: None,
        };
        for (i, r) in c.repositories.iter().enumerate() {
            match TagPattern::parse(r.trim()) {
                Ok(p) => rule.repositories.push(p),
                Err(e) => problems.push((format!("repositories[{i}]"), e)),
            }
        }
        for (i, t) in c.keep_tags.iter().enumerate() {
            match TagSelector::parse(t) {
                Ok(s) => rule.keep_tags.push(s),
                Err(e) => problems.push((format!("keep_tags[{i}]"), e)),
            }
        }
        for (key, value, out) in [
            ("keep_within", &c.keep_within, &mut rule.keep_within),
            ("untagged_after", &c.untagged_after, &mut rule.untagged_after),
        ] {
            if let Some(v) = value {
                match parse_duration(v) {
                    Ok(d) => *out = Some(d),
                    Err(e) => problems.push((key.into(), e)),
                }
            }
        }
        if problems.is_empty() {
            Ok(rule)
        } else {
            Err(problems)
        }
    }

    /// Whether the entry can remove tags at all.
    pub fn removes_tags(&self) -> bool {
        self.keep_last.is_some() || self.keep_within.is_some() || !self.keep_tags.is_empty()
    }

    /// How long untagged manifests stay, when set.
    pub fn untagged_after(&self) -> Option<Duration> {
        self.untagged_after
    }

    /// Whether pulls matter to this entry (`keep_within`), so the registry notes them.
    pub fn counts_pulls(&self) -> bool {
        self.keep_within.is_some()
    }
}

/// What the service knows about one tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    /// The tag.
    pub tag: String,
    /// When the tag was last pointed at its current manifest (unix milliseconds).
    pub pushed_ms: u64,
    /// When its current manifest was last pulled (unix milliseconds), if known.
    pub pulled_ms: Option<u64>,
    /// A reason no retention rule may remove it (`immutable (tags[0])`, `pinned by sync:base`).
    pub protected: Option<String>,
}

/// The decision for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The tag.
    pub tag: String,
    /// Kept (true) or removed.
    pub keep: bool,
    /// Why, for reports and logs.
    pub reason: String,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The `[[retention]]` entries.
#[derive(Debug, Clone, Default)]
pub struct RetentionRules {
    rules: Vec<RetentionRule>,
}

impl RetentionRules {
    /// The entries in file order.
    pub fn new(rules: Vec<RetentionRule>) -> RetentionRules {
        RetentionRules { rules }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entry that applies to `repo` (the first matching one) and its name (`retention[i]`).
    pub fn for_repo(&self, repo: &str) -> Option<(String, &RetentionRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.repositories.iter().any(|p| p.matches(repo)))
            .map(|(i, r)| (format!("retention[{i}]"), r))
    }

    /// Whether any entry counts pulls.
    pub fn counts_any_pulls(&self) -> bool {
        self.rules.iter().any(RetentionRule::counts_pulls)
    }

    /// Whether pulls of `repo` should be noted.
    pub fn counts_pulls(&self, repo: &str) -> bool {
        self.for_repo(repo).is_some_and(|(_, r)| r.counts_pulls())
    }

    /// How long untagged manifests of `repo` stay, when its entry sets it.
    pub fn untagged_after(&self, repo: &str) -> Option<Duration> {
        self.for_repo(repo).and_then(|(_, r)| r.untagged_after)
    }
}

/// Judge every tag of one repository under `rule` at `now_ms`. Ties in push time are broken by name, so the
/// verdict does not depend on listing order.
pub fn judge(rule: &RetentionRule, name: &str, tags: &[TagFacts], now_ms: u64) -> Vec<Verdict> {
    let mut by_age: Vec<&TagFacts> = tags.iter().collect();
    by_age.sort_by(|a, b| b.pushed_ms.cmp(&a.pushed_ms).then_with(|| a.tag.cmp(&b.tag)));
    let within_ms = rule.keep_within.map(|d| d.as_millis() as u64);
    by_age
        .iter()
        .enumerate()
        .map(|(rank, t)| {
            let keep = |reason: String| Verdict { tag: t.tag.clone(), keep: true, reason };
            if !rule.removes_tags() {
                return keep(format!("{name} sets no keep_* rule"));
            }
            if let Some(p) = &t.protected {
                return keep(p.clone());
            }
            if let Some(i) = rule.keep_tags.iter().position(|s| s.matches(&t.tag)) {
                return keep(format!("matches {name}.keep_tags[{i}]"));
            }
            if let Some(n) = rule.keep_last.filter(|n| rank < *n) {
                return keep(format!("among the newest {n} ({name}.keep_last)"));
            }
            if let (Some(w), Some(d)) = (within_ms, rule.keep_within) {
                if now_ms.saturating_sub(t.pushed_ms) <= w {
                    return keep(format!("pushed within {} ({name}.keep_within)", human(d)));
                }
                if t.pulled_ms.is_some_and(|p| now_ms.saturating_sub(p) <= w) {
                    return keep(format!("pulled within {} ({name}.keep_within)", human(d)));
                }
            }
            let mut why = Vec::new();
            if !rule.keep_tags.is_empty() {
                why.push("matches no keep_tags".to_owned());
            }
            if let Some(n) = rule.keep_last {
                why.push(format!("not among the newest {n}"));
            }
            if let Some(d) = rule.keep_within {
                why.push(format!("neither pushed nor pulled within {}", human(d)));
            }
            Verdict { tag: t.tag.clone(), keep: false, reason: format!("{name}: {}", why.join(", ")) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn rule(toml_text: &str) -> RetentionRule {
        let c: RetentionConfig = toml::from_str(&format!("repositories = [\"team/*\"]\n{toml_text}")).unwrap();
        RetentionRule::compile(&c).unwrap()
    }

    fn facts(tag: &str, pushed_days_ago: u64, pulled_days_ago: Option<u64>) -> TagFacts {
        let now = 100 * DAY;
        TagFacts {
            tag: tag.into(),
            pushed_ms: now.saturating_sub(pushed_days_ago * DAY),
            pulled_ms: pulled_days_ago.map(|d| now - d * DAY),
            protected: None,
        }
    }

    fn removed(rule: &RetentionRule, tags: &[TagFacts]) -> Vec<String> {
        let mut out: Vec<String> =
            judge(rule, "retention[0]", tags, 100 * DAY).into_iter().filter(|v| !v.keep).map(|v| v.tag).collect();
        out.sort();
        out
    }

    #[test]
    fn keep_last_keeps_the_newest_by_push_time_not_by_name() {
        let r = rule("keep_last = 2");
        let tags = [facts("v1", 30, None), facts("v3", 10, None), facts("v2", 20, None), facts("a", 5, None)];
        assert_eq!(removed(&r, &tags), ["v1", "v2"]);
    }

    #[test]
    fn keep_within_counts_pulls_as_well_as_pushes() {
        let r = rule("keep_within = \"7d\"");
        let tags = [facts("old-pulled", 60, Some(2)), facts("old", 60, Some(30)), facts("new", 3, None)];
        assert_eq!(removed(&r, &tags), ["old"]);
        let v = judge(&r, "retention[0]", &tags, 100 * DAY);
        let pulled = v.iter().find(|v| v.tag == "old-pulled").unwrap();
        assert_eq!(pulled.reason, "pulled within 7d (retention[0].keep_within)");
        let old = v.iter().find(|v| v.tag == "old").unwrap();
        assert_eq!(old.reason, "retention[0]: neither pushed nor pulled within 7d");
    }

    #[test]
    fn keep_tags_patterns_and_the_union_of_keep_rules() {
        let r = rule("keep_last = 1\nkeep_tags = [\"latest\", \"release-*\", \"semver:>=2\"]");
        let tags = [
            facts("latest", 90, None),
            facts("release-1", 80, None),
            facts("2.1.0", 70, None),
            facts("1.0.0", 60, None),
            facts("dev-7", 1, None),
            facts("dev-6", 2, None),
        ];
        assert_eq!(removed(&r, &tags), ["1.0.0", "dev-6"]);
    }

    #[test]
    fn protected_tags_are_never_removed_and_say_why() {
        let r = rule("keep_last = 0");
        let mut imm = facts("1.0", 400, None);
        imm.protected = Some("immutable (tags[0])".into());
        let tags = [imm, facts("1.1", 300, None)];
        let v = judge(&r, "retention[0]", &tags, 100 * DAY);
        assert!(v.iter().any(|v| v.tag == "1.0" && v.keep && v.reason == "immutable (tags[0])"));
        assert_eq!(removed(&r, &tags), ["1.1"]);
    }

    #[test]
    fn an_entry_with_only_untagged_after_removes_no_tag() {
        let r = rule("untagged_after = \"30d\"");
        assert!(!r.removes_tags());
        assert_eq!(r.untagged_after(), Some(Duration::from_secs(30 * 86_400)));
        assert!(removed(&r, &[facts("x", 999, None)]).is_empty());
    }

    #[test]
    fn the_first_matching_entry_applies() {
        let mk = |repos: &str, extra: &str| {
            let c: RetentionConfig = toml::from_str(&format!("repositories = [{repos}]\n{extra}")).unwrap();
            RetentionRule::compile(&c).unwrap()
        };
        let rules =
            RetentionRules::new(vec![mk("\"team/keep/*\"", "keep_tags = [\"*\"]"), mk("\"team/*\"", "keep_last = 1")]);
        assert_eq!(rules.for_repo("team/keep/app").unwrap().0, "retention[0]");
        assert_eq!(rules.for_repo("team/app").unwrap().0, "retention[1]");
        assert!(rules.for_repo("other/app").is_none());
        assert!(!rules.counts_pulls("team/app"));
    }

    #[test]
    fn config_problems_name_their_keys() {
        let c: RetentionConfig =
            toml::from_str("keep_within = \"soon\"\nkeep_tags = [\"re:(\"]\nrepositories = []").unwrap();
        let keys: Vec<String> = RetentionRule::compile(&c).unwrap_err().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["repositories", "keep_tags[0]", "keep_within"]);
        let empty: RetentionConfig = toml::from_str("repositories = [\"*\"]").unwrap();
        assert_eq!(RetentionRule::compile(&empty).unwrap_err()[0].0, "keep_last");
    }
}
