//! Tag rules for hosted repositories (`[[tags]]`): which tags are immutable and which platforms an image
//! must carry. Pure decisions; the service applies them on manifest PUT and tag delete.
//!
//! Every entry whose repositories and tags match applies (they add up): a tag is immutable if any matching
//! entry says so, and the required platforms are the union of the matching entries'. Exclusions only take a
//! tag out of their own entry.

use super::tags::{TagPattern, TagSelector};
use crate::config::tags::TagRuleConfig;

/// One compiled `[[tags]]` entry.
#[derive(Debug, Clone)]
pub struct TagRule {
    repositories: Vec<TagPattern>,
    tags: Vec<TagSelector>,
    exclude: Vec<TagSelector>,
    immutable: bool,
    required_platforms: Vec<String>,
    enforce_platforms: bool,
}

impl TagRule {
    /// Compile an entry; every problem comes with the key it concerns.
    pub fn compile(c: &TagRuleConfig) -> Result<TagRule, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if c.repositories.is_empty() {
            problems.push(("repositories".into(), "must list at least one glob (\"*\" for every repository)".into()));
        }
        if !c.immutable && c.required_platforms.is_empty() {
            problems.push(("immutable".into(), "the entry does nothing: set immutable or required_platforms".into()));
        }
        let mut rule = TagRule {
            repositories: Vec::new(),
            tags: Vec::new(),
            exclude: Vec::new(),
            immutable: c.immutable,
            required_platforms: Vec::new(),
            enforce_platforms: c.enforce_platforms.unwrap_or(true),
        };
        for (i, r) in c.repositories.iter().enumerate() {
            match TagPattern::parse(r.trim()) {
                Ok(p) => rule.repositories.push(p),
                Err(e) => problems.push((format!("repositories[{i}]"), e)),
            }
        }
        for (key, list, out) in [("tags", &c.tags, &mut rule.tags), ("exclude", &c.exclude, &mut rule.exclude)] {
            for (i, t) in list.iter().enumerate() {
                match TagSelector::parse(t) {
                    Ok(s) => out.push(s),
                    Err(e) => problems.push((format!("{key}[{i}]"), e)),
                }
            }
        }
        for (i, p) in c.required_platforms.iter().enumerate() {
            let parts: Vec<&str> = p.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|x| x.is_empty()) {
                problems.push((format!("required_platforms[{i}]"), format!("{p:?} is not os/arch or os/arch/variant")));
            } else {
                rule.required_platforms.push(p.clone());
            }
        }
        if problems.is_empty() {
            Ok(rule)
        } else {
            Err(problems)
        }
    }

    fn covers(&self, repo: &str, tag: &str) -> bool {
        self.repositories.iter().any(|p| p.matches(repo))
            && (self.tags.is_empty() || self.tags.iter().any(|s| s.matches(tag)))
            && !self.exclude.iter().any(|s| s.matches(tag))
    }
}

/// Platforms a push must carry, and whether a missing one refuses the push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Required {
    /// `os/arch[/variant]`, sorted, no duplicates.
    pub platforms: Vec<String>,
    /// Refuse (true) or only report (false).
    pub enforce: bool,
    /// The entries that asked (`tags[0]`), for messages.
    pub rules: Vec<String>,
}

/// The `[[tags]]` entries.
#[derive(Debug, Clone, Default)]
pub struct TagRules {
    rules: Vec<TagRule>,
}

impl TagRules {
    /// The entries in file order.
    pub fn new(rules: Vec<TagRule>) -> TagRules {
        TagRules { rules }
    }

    /// Whether there are no entries (then nothing is checked).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first entry making `repo:tag` immutable, as `tags[i]`.
    pub fn immutable(&self, repo: &str, tag: &str) -> Option<String> {
        self.rules.iter().position(|r| r.immutable && r.covers(repo, tag)).map(|i| format!("tags[{i}]"))
    }

    /// The platforms required for `repo:tag`, if any entry requires some.
    pub fn required(&self, repo: &str, tag: &str) -> Option<Required> {
        let mut out = Required { enforce: false, ..Required::default() };
        for (i, r) in self.rules.iter().enumerate() {
            if r.required_platforms.is_empty() || !r.covers(repo, tag) {
                continue;
            }
            out.platforms.extend(r.required_platforms.iter().cloned());
            out.enforce |= r.enforce_platforms;
            out.rules.push(format!("tags[{i}]"));
        }
        out.platforms.sort();
        out.platforms.dedup();
        (!out.platforms.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &[&str], tags: &[&str], immutable: bool, platforms: &[&str]) -> TagRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        TagRule::compile(&TagRuleConfig {
            repositories: s(repos),
            tags: s(tags),
            immutable,
            required_platforms: s(platforms),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn immutability_and_required_platforms_add_up() {
        let mut excluded = rule(&["prod/*"], &["v*"], true, &[]);
        excluded.exclude = vec![TagSelector::parse("v0.*").unwrap()];
        let rules = TagRules::new(vec![
            excluded,
            rule(&["prod/*"], &[], false, &["linux/amd64"]),
            rule(&["*"], &["semver:>=2.0.0"], false, &["linux/arm64", "linux/amd64"]),
        ]);
        assert_eq!(rules.immutable("prod/app", "v1.2.3").as_deref(), Some("tags[0]"));
        assert_eq!(rules.immutable("prod/app", "v0.9"), None, "excluded");
        assert_eq!(rules.immutable("prod/app", "latest"), None);
        assert_eq!(rules.immutable("dev/app", "v1"), None);
        let r = rules.required("prod/app", "2.1.0").unwrap();
        assert_eq!(r.platforms, ["linux/amd64", "linux/arm64"]);
        assert!(r.enforce);
        assert_eq!(r.rules, ["tags[1]", "tags[2]"]);
        assert_eq!(rules.required("dev/app", "1.0.0"), None);
    }

    #[test]
    fn compile_names_problems() {
        let e = TagRule::compile(&TagRuleConfig {
            repositories: vec!["re:(".into()],
            tags: vec!["semver:>>1".into()],
            required_platforms: vec!["linux".into()],
            ..Default::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["repositories[0]", "tags[0]", "required_platforms[0]"]);
        assert!(TagRule::compile(&TagRuleConfig { repositories: vec!["*".into()], ..Default::default() }).is_err());
    }
}
