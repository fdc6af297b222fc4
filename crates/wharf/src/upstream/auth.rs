//! Registry authentication as clients do it: answer a `WWW-Authenticate` challenge with Basic credentials or
//! a Bearer token fetched from the challenge's realm, and cache tokens per scope until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass back.
        service: Option<String>,
        /// `scope` the registry asked for, if it said.
        scope: Option<String>,
    },
}

/// Parse a challenge header; unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| params.iter().find(|(pk, _)| pk.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    } else {
        None
    }
}

/// `k="v", k2=v2` with quoted strings that may contain commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
        }
        out.push((key.trim().to_owned(), value));
    }
    out
}

/// Most scopes remembered at once (one per repository pulled); beyond it expired tokens go, then all.
const MAX_TOKENS: usize = 4096;

/// Longest a token is kept, whatever the endpoint says: absurd `expires_in` values (`u64::MAX`, `1e300`)
/// must not overflow the expiry arithmetic, and a revoked token should not be used for days.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Lifetime assumed when `expires_in` is absent, zero, negative or not a number (the token spec's default).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Tokens by scope, with their expiry.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    /// A still-valid token for `scope`.
    pub fn get(&self, scope: &str) -> Option<String> {
        let map = lock(&self.tokens);
        map.get(scope).filter(|(_, exp)| *exp > Instant::now()).map(|(t, _)| t.clone())
    }

    /// Remember a token; it is dropped a little before the registry would expire it (and after at most
    /// [`MAX_TOKEN_TTL`]).
    pub fn put(&self, scope: &str, token: String, expires_in: Duration) {
        let expires_in = expires_in.min(MAX_TOKEN_TTL);
        let margin = Duration::from_secs(10).min(expires_in / 2);
        let mut map = lock(&self.tokens);
        if map.len() >= MAX_TOKENS {
            let now = Instant::now();
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MAX_TOKENS {
                map.clear();
            }
        }
        map.insert(scope.to_owned(), (token, Instant::now() + expires_in - margin));
    }

    /// Forget a token the registry rejected.
    pub fn forget(&self, scope: &str) {
        lock(&self.tokens).remove(scope);
    }
}

/// The token endpoint's answer (Docker uses `token`, OAuth2 style `access_token`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    /// Docker-style token.
    #[serde(default)]
    pub token: Option<String>,
    /// OAuth2-style token.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds, as the endpoint wrote it: any JSON value, so a float, a negative or a huge number
    /// never makes the whole answer unreadable ([`TokenResponse::into_token`] clamps it).
    #[serde(default)]
    pub expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    /// The token and its lifetime: `expires_in` clamped to at most [`MAX_TOKEN_TTL`]; absent, zero, negative
    /// or non-numeric values mean [`DEFAULT_TOKEN_TTL`].
    pub fn into_token(self) -> Option<(String, Duration)> {
        let t = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let ttl = match self.expires_in.as_ref().and_then(serde_json::Value::as_f64) {
            Some(secs) if secs > 0.0 && secs.is_finite() => {
                Duration::try_from_secs_f64(secs.min(MAX_TOKEN_TTL.as_secs_f64())).unwrap_or(MAX_TOKEN_TTL)
            }
            _ => DEFAULT_TOKEN_TTL,
        };
        Some((t, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://x/t, service=s"),
            Some(Challenge::Bearer { realm: "http://x/t".into(), service: Some("s".into()), scope: None })
        );
        assert_eq!(parse_challenge("Bearer service=s"), None, "a realm is required");
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn token_cache_expires() {
        let c = TokenCache::default();
        c.put("a", "t".into(), Duration::from_secs(300));
        assert_eq!(c.get("a").as_deref(), Some("t"));
        c.put("b", "t".into(), Duration::from_millis(0));
        assert_eq!(c.get("b"), None);
        c.forget("a");
        assert_eq!(c.get("a"), None);
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"x","expires_in":30}"#).unwrap();
        assert_eq!(r.into_token(), Some(("x".into(), Duration::from_secs(30))));
    }

    #[test]
    fn absurd_lifetimes_are_clamped_without_panicking() {
        let ttl = |json: &str| {
            let r: TokenResponse = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            r.into_token().unwrap().1
        };
        assert_eq!(ttl(r#"{"token":"t","expires_in":18446744073709551615}"#), MAX_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t","expires_in":1e300}"#), MAX_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t","expires_in":-5}"#), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t","expires_in":0}"#), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t","expires_in":"soon"}"#), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t"}"#), DEFAULT_TOKEN_TTL);
        assert_eq!(ttl(r#"{"token":"t","expires_in":2.5}"#), Duration::from_millis(2500));
        // The cache itself takes any Duration: Instant + Duration::MAX would panic without the clamp.
        let c = TokenCache::default();
        c.put("s", "t".into(), Duration::MAX);
        assert_eq!(c.get("s").as_deref(), Some("t"));
    }

    #[test]
    fn a_poisoned_token_cache_still_works() {
        let c = std::sync::Arc::new(TokenCache::default());
        c.put("a", "t".into(), Duration::from_secs(300));
        let c2 = c.clone();
        let r = std::thread::spawn(move || {
            let _held = c2.tokens.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(r.is_err() && c.tokens.is_poisoned());
        assert_eq!(c.get("a").as_deref(), Some("t"));
        c.put("b", "u".into(), Duration::from_secs(300));
        c.forget("a");
        assert_eq!((c.get("a"), c.get("b").as_deref()), (None, Some("u")));
    }
}
