//! Repository names, tags and the `<reference>` path component of `/manifests/<reference>`.
//!
//! The grammar is the distribution spec's, checked by hand (component by component) instead of one large
//! regular expression, so errors can say what is wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted, as recommended by the distribution spec.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec's grammar allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the grammar.
    #[error("invalid repository name {0:?}: {1}")]
    Repo(String, &'static str),
    /// The tag breaks the grammar.
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    /// The reference looked like a digest but is not a valid one.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A validated repository name such as `library/alpine` or `team/app/api`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(Box<str>);

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path components, e.g. `["library", "alpine"]`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Repo(s.to_owned(), "empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::Repo(s.to_owned(), "longer than 255 characters"));
        }
        if !s.split('/').all(valid_component) {
            return Err(NameError::Repo(
                s.to_owned(),
                "each path component must be lowercase alphanumerics separated by '.', '_', '__' or '-'",
            ));
        }
        Ok(RepoName(s.into()))
    }
}

/// A validated tag such as `latest` or `v1.2.3`. Shared (`Arc`), so tag lists are copied without allocating.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(std::sync::Arc<str>);

impl Tag {
    /// The tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..].iter().all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.into()))
        } else {
            Err(NameError::Tag(s.to_owned()))
        }
    }
}

/// What may follow `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RefSpec {
    /// A mutable name.
    Tag(Tag),
    /// Immutable content.
    Digest(Digest),
}

impl FromStr for RefSpec {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(RefSpec::Digest(s.parse()?))
        } else {
            Ok(RefSpec::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for RefSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefSpec::Tag(t) => t.fmt(f),
            RefSpec::Digest(d) => d.fmt(f),
        }
    }
}

macro_rules! string_newtype {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), &*self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype!(RepoName);
string_newtype!(Tag);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn repo_names() {
        for good in
            ["a", "library/alpine", "a/b/c/d/e", "my-org/my_app", "x__y", "a.b/c---d", "0/1", "registry.k8s.io/pause"]
        {
            assert!(good.parse::<RepoName>().is_ok(), "{good:?} rejected");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a_.b", "a___b", "a..b", "a b", "a/B", "a:b", "a@b"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good:?} rejected");
        }
        for bad in ["", ".a", "-a", "a:b", "a/b", &"a".repeat(129), "ä"] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refspec() {
        assert!(matches!("latest".parse::<RefSpec>(), Ok(RefSpec::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<RefSpec>(),
            Ok(RefSpec::Digest(_))
        ));
        assert!("sha256:nope".parse::<RefSpec>().is_err());
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,2}"
    }

    proptest! {
        #[test]
        fn repo_round_trip(parts in proptest::collection::vec(component(), 1..5)) {
            let s = parts.join("/");
            prop_assume!(s.len() <= MAX_NAME_LEN);
            let n: RepoName = s.parse().unwrap();
            prop_assert_eq!(n.to_string(), s);
        }

        #[test]
        fn tag_round_trip(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            let t: Tag = s.parse().unwrap();
            prop_assert_eq!(t.to_string(), s);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = s.parse::<RepoName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<RefSpec>();
        }
    }
}
