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

/// Whether any pattern matches.
pub fn any_match(patterns: &[TagPattern], tag: &str) -> bool {
    patterns.iter().any(|p| p.matches(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::DEFAULT_IMMUTABLE;

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

    #[test]
    fn default_immutable_is_full_semver() {
        let p = TagPattern::parse(DEFAULT_IMMUTABLE).unwrap();
        for t in ["1.2.3", "v1.29.0", "0.0.1"] {
            assert!(p.matches(t), "{t}");
        }
        for t in ["latest", "1.2", "3", "1.2.3-alpine", "stable"] {
            assert!(!p.matches(t), "{t}");
        }
    }
}
