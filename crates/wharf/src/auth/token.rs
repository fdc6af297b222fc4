//! Registry tokens: the distribution token flow every client speaks. `/auth/token` issues short-lived JWTs
//! (EdDSA, signed with a key Wharf generates once and keeps in the store so every process agrees); the registry
//! verifies them locally, with no round trip, and caches the verification so a Bearer request costs one SHA-256
//! and a map lookup.
//!
//! A token carries two things: the **granted scopes** (`access`: repository name → actions, already cut down to
//! what the rules allow at issue time), which alone decide repository requests, and the **subject** (`sub`,
//! its groups, its own grants for a robot), which the catalog filter and `ns`-selected mirror names are checked
//! against (a scope cannot name every repository, and names no `ns`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::policy::access::{Action, Caller, Grant, TokenSubject};

/// `iss` of every token Wharf issues (and the only one its verifier accepts).
pub const ISSUER: &str = "wharf";
/// The store meta document holding the signing key.
pub const KEY_DOCUMENT: &str = "auth/token-signing-key";
/// Most verified tokens remembered at once.
const VERIFIED_CACHE_MAX: usize = 10_000;
/// Most scopes honoured in one token request (each becomes a claim entry; a client asks for a handful).
pub const MAX_SCOPES: usize = 64;
/// Clock skew tolerated on `nbf`/`exp` between replicas.
const LEEWAY_SECS: u64 = 30;
/// `typ` of a refresh token: it can only be exchanged at the token endpoint, never used on `/v2/`.
const REFRESH: &str = "refresh";

/// Why a token was not accepted (never says more to the client than "invalid").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, wrong issuer or audience, expired, malformed.
    #[error("invalid or expired token")]
    Invalid,
    /// The stored signing key does not load.
    #[error("token signing key in the store ({KEY_DOCUMENT}) is unusable: {0}")]
    Key(String),
}

/// The signing key as kept in the store.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    /// Key id, put in every token's header.
    kid: String,
    /// Always `EdDSA` (Ed25519) today; recorded so a later key type can be told apart.
    algorithm: String,
    /// PKCS#8 document, standard base64.
    pkcs8: String,
}

/// One `access` entry of a token (the distribution token format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry` (for `registry:catalog:*`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    /// The subject's user name; empty for an anonymous token.
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(default)]
    access: Vec<AccessEntry>,
    /// The subject's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    grp: Vec<String>,
    /// The subject's own grants (a robot's allow list), written `REPOS:ACTIONS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sgr: Option<Vec<String>>,
    /// `refresh` for a refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    /// For a refresh token: a fingerprint of the credential it was issued against, so changing the password
    /// revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cfp: Option<String>,
}

/// A requested scope, as in `repository:team/app:pull,push` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository` (a `repository(plugin)` class is folded into it) or `registry`.
    pub kind: String,
    /// The resource name.
    pub name: String,
    /// Requested actions (`*` is kept as written).
    pub actions: Vec<String>,
}

impl Scope {
    /// Parse one scope; `None` for anything malformed (ignored, as other token servers do). The name may
    /// itself contain `:` (a host with a port), so the type is up to the first `:` and the actions after the
    /// last.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = match kind.split_once('(') {
            Some((k, _)) => k,
            None => kind,
        };
        if name.is_empty() || !matches!(kind, "repository" | "registry") {
            return None;
        }
        let actions = actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        Some(Scope { kind: kind.to_owned(), name: name.to_owned(), actions })
    }

    /// `repository:<name>:<actions>` as put in a challenge.
    pub fn repository(name: &str, actions: &[Action]) -> String {
        let a: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        format!("repository:{name}:{}", a.join(","))
    }
}

/// A verified access token: the caller it stands for, and when it stops being valid.
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    expires: SystemTime,
}

/// An issued token as the endpoint returns it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// RFC 3339 issue time.
    pub issued_at: String,
}

/// Issues and verifies registry tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    service: String,
    ttl: Duration,
    refresh_ttl: Option<Duration>,
    cache: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("kid", &self.kid).field("service", &self.service).finish_non_exhaustive()
    }
}

/// A new signing key as the bytes to store (the caller writes them, then loads what the store holds, so
/// two processes starting at once end up with the same key).
pub fn generate_key() -> Result<Vec<u8>, TokenError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| TokenError::Key(e.to_string()))?;
    let mut id = [0u8; 8];
    ring::rand::SecureRandom::fill(&rng, &mut id).map_err(|e| TokenError::Key(e.to_string()))?;
    let stored = StoredKey {
        kid: hex(&id),
        algorithm: "EdDSA".into(),
        pkcs8: base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()),
    };
    serde_json::to_vec(&stored).map_err(|e| TokenError::Key(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_id() -> String {
    let mut id = [0u8; 16];
    // A failing system RNG leaves zeros: jti is informational (no replay cache keys on it).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
    hex(&id)
}

/// A fingerprint of a stored credential (an htpasswd hash): changes when the password does, says nothing
/// about it.
pub fn credential_fingerprint(stored: &str) -> String {
    hex(&Sha256::digest(stored.as_bytes())[..12])
}

impl TokenIssuer {
    /// Load the key document from the store's bytes.
    pub fn new(
        key_document: &[u8],
        service: &str,
        ttl: Duration,
        refresh_ttl: Option<Duration>,
    ) -> Result<TokenIssuer, TokenError> {
        let stored: StoredKey =
            serde_json::from_slice(key_document).map_err(|e| TokenError::Key(format!("not a key document: {e}")))?;
        if stored.algorithm != "EdDSA" {
            return Err(TokenError::Key(format!("unsupported algorithm {:?}", stored.algorithm)));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(stored.pkcs8.as_bytes())
            .map_err(|e| TokenError::Key(format!("bad base64: {e}")))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(TokenIssuer {
            encoding: EncodingKey::from_ed_der(&der),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            kid: stored.kid,
            service: service.to_owned(),
            ttl,
            refresh_ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The `service` of challenges and the tokens' audience.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether refresh tokens are issued.
    pub fn refresh_enabled(&self) -> bool {
        self.refresh_ttl.is_some()
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| TokenError::Key(e.to_string()))
    }

    fn base_claims(&self, subject: &Caller, ttl: Duration) -> (Claims, u64) {
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: subject.user.clone().unwrap_or_default(),
            aud: self.service.clone(),
            exp: now + ttl.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: random_id(),
            access: Vec::new(),
            grp: subject.groups.clone(),
            sgr: subject.grants.as_ref().map(|g| g.iter().map(ToString::to_string).collect()),
            typ: None,
            cfp: None,
        };
        (claims, now)
    }

    /// An access token for `subject` with exactly `access` (the caller has already cut it down to the rules).
    pub fn issue(&self, subject: &Caller, access: Vec<AccessEntry>) -> Result<Issued, TokenError> {
        let (mut claims, now) = self.base_claims(subject, self.ttl);
        claims.access = access;
        Ok(Issued {
            token: self.sign(&claims)?,
            expires_in: self.ttl.as_secs(),
            issued_at: crate::history::rfc3339(now),
        })
    }

    /// A refresh token for a password-authenticated `subject`, bound to `fingerprint` of its stored
    /// credential; `None` when refresh tokens are turned off.
    pub fn issue_refresh(&self, subject: &Caller, fingerprint: String) -> Result<Option<String>, TokenError> {
        let Some(ttl) = self.refresh_ttl else { return Ok(None) };
        let (mut claims, _) = self.base_claims(subject, ttl);
        claims.typ = Some(REFRESH.into());
        claims.cfp = Some(fingerprint);
        // The subject's groups and grants are looked up again at refresh time, not carried.
        claims.grp.clear();
        claims.sgr = None;
        self.sign(&claims).map(Some)
    }

    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|_| TokenError::Invalid)?;
        if data.header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }

    /// Whether `token` looks like one of ours (so other Bearer verifiers are not asked). Reads the unverified
    /// header only.
    pub fn is_ours(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|h| h.kid.as_deref() == Some(self.kid.as_str()))
    }

    /// Verify an access token (a refresh token is refused here) into the caller it stands for: its scopes as
    /// grants, its subject in [`Caller::token`]. Cached until it expires.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now();
        if let Some(v) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if v.expires > now {
                return Ok(v.caller.clone());
            }
        }
        let claims = self.decode(token)?;
        if claims.typ.is_some() {
            return Err(TokenError::Invalid);
        }
        let verified = Arc::new(verified(claims)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, v| v.expires > now);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, verified.clone());
        Ok(verified.caller.clone())
    }

    /// Verify a refresh token: the subject's user name and the credential fingerprint it was bound to.
    pub fn verify_refresh(&self, token: &str) -> Result<(String, String), TokenError> {
        let claims = self.decode(token)?;
        match (claims.typ.as_deref(), claims.cfp) {
            (Some(REFRESH), Some(cfp)) if !claims.sub.is_empty() => Ok((claims.sub, cfp)),
            _ => Err(TokenError::Invalid),
        }
    }
}

fn verified(claims: Claims) -> Result<Verified, TokenError> {
    let user = (!claims.sub.is_empty()).then(|| claims.sub.clone());
    let mut grants = Vec::new();
    let mut catalog = false;
    for a in &claims.access {
        let actions: Vec<Action> = a.actions.iter().filter_map(|x| Action::parse(x).ok()).collect();
        match a.kind.as_str() {
            "registry" if a.name == "catalog" => catalog = true,
            // Names in tokens are exact repository names (validated at issue time), never patterns.
            "repository" if a.name.parse::<oci::RepoName>().is_ok() && !actions.is_empty() => {
                grants.push(Grant::new(&a.name, actions).map_err(|_| TokenError::Invalid)?)
            }
            _ => {}
        }
    }
    let subject_grants = match claims.sgr {
        Some(list) => {
            Some(list.iter().map(|g| Grant::parse(g)).collect::<Result<Vec<_>, _>>().map_err(|_| TokenError::Invalid)?)
        }
        None => None,
    };
    let subject = Caller { user: user.clone(), groups: claims.grp.clone(), grants: subject_grants, token: None };
    Ok(Verified {
        caller: Caller {
            user,
            groups: claims.grp,
            grants: Some(grants),
            token: Some(Box::new(TokenSubject { caller: subject, catalog })),
        },
        expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(service: &str) -> TokenIssuer {
        TokenIssuer::new(&generate_key().unwrap(), service, Duration::from_secs(300), Some(Duration::from_secs(3600)))
            .unwrap()
    }

    fn entry(name: &str, actions: &[&str]) -> AccessEntry {
        AccessEntry {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_parse_like_the_spec_writes_them() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.actions.clone()),
            ("repository", "team/app", vec!["pull".into(), "push".into()])
        );
        let s = Scope::parse("repository(plugin):localhost:5000/app:pull").unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("repository", "localhost:5000/app"));
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().actions, ["*"]);
        assert_eq!(Scope::parse("nonsense"), None);
        assert_eq!(Scope::parse("repository::pull"), None);
        assert_eq!(Scope::parse("user:x:pull"), None);
        assert_eq!(Scope::repository("a/b", &[Action::Pull, Action::Push]), "repository:a/b:pull,push");
    }

    #[test]
    fn a_token_grants_exactly_its_scopes() {
        let t = issuer("wharf");
        let alice = Caller::user("alice", vec!["ci".into()]);
        let issued = t.issue(&alice, vec![entry("a/x", &["pull", "push"]), entry("re:.*", &["pull"])]).unwrap();
        let v = t.verify(&issued.token).unwrap();
        let rules = crate::policy::access::Rules::default();
        assert!(rules.allows(&v, "a/x", Action::Push));
        assert!(!rules.allows(&v, "a/y", Action::Pull), "a token for a/x is refused for a/y");
        assert!(!rules.allows(&v, "a/x", Action::Delete));
        assert!(!rules.allows(&v, "anything", Action::Pull), "a pattern smuggled into a claim is ignored");
        assert_eq!(v.token, Some(Box::new(TokenSubject { caller: alice, catalog: false })));
        assert!(t.is_ours(&issued.token));
        assert_eq!(issued.expires_in, 300);
        assert!(issued.issued_at.ends_with('Z') && issued.issued_at.len() == 20);
    }

    #[test]
    fn foreign_expired_and_refresh_tokens_are_refused() {
        let t = issuer("wharf");
        let other = issuer("wharf");
        let alice = Caller::user("alice", vec![]);
        let theirs = other.issue(&alice, vec![entry("a/x", &["pull"])]).unwrap().token;
        assert_eq!(t.verify(&theirs).unwrap_err(), TokenError::Invalid, "another key's signature");
        assert!(!t.is_ours(&theirs));
        let wrong_aud = issuer("elsewhere");
        let key = generate_key().unwrap();
        let (a, b) = (
            TokenIssuer::new(&key, "wharf", Duration::from_secs(300), None).unwrap(),
            TokenIssuer::new(&key, "elsewhere", Duration::from_secs(300), None).unwrap(),
        );
        assert_eq!(a.verify(&b.issue(&alice, vec![]).unwrap().token).unwrap_err(), TokenError::Invalid, "audience");
        drop(wrong_aud);
        // Expired: sign claims in the past with the same key.
        let (mut claims, _) = a.base_claims(&alice, Duration::from_secs(1));
        claims.exp = now_secs() - 3600;
        claims.nbf = now_secs() - 7200;
        assert_eq!(a.verify(&a.sign(&claims).unwrap()).unwrap_err(), TokenError::Invalid, "expired");
        // alg none with our kid: refused.
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, a.kid));
        let (mut claims, _) = a.base_claims(&alice, Duration::from_secs(60));
        claims.access = vec![entry("a/x", &["push"])];
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(a.verify(&format!("{header}.{body}.")).unwrap_err(), TokenError::Invalid, "alg none");
        // A refresh token is not an access token, and vice versa.
        let r = t.issue_refresh(&alice, "fp".into()).unwrap().unwrap();
        assert_eq!(t.verify(&r).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify_refresh(&r).unwrap(), ("alice".into(), "fp".into()));
        let access = t.issue(&alice, vec![]).unwrap().token;
        assert_eq!(t.verify_refresh(&access).unwrap_err(), TokenError::Invalid);
        assert!(TokenIssuer::new(b"{}", "wharf", Duration::from_secs(1), None).is_err());
    }

    #[test]
    fn robots_keep_their_grants_as_the_subject() {
        let t = issuer("wharf");
        let mut robot = Caller::user("robot:ci", vec![]);
        robot.grants = Some(vec![Grant::parse("team/*:pull,push").unwrap()]);
        let issued = t
            .issue(
                &robot,
                vec![AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }],
            )
            .unwrap();
        let v = t.verify(&issued.token).unwrap();
        assert_eq!(v.token, Some(Box::new(TokenSubject { caller: robot, catalog: true })));
    }

    #[test]
    fn dates() {
        assert_eq!(crate::history::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(crate::history::rfc3339(1_796_083_200), "2026-12-01T00:00:00Z");
        assert_eq!(crate::history::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
