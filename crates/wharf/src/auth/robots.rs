//! Robot tokens: long-lived secrets for machines (CI jobs, deploy bots) that carry their own permissions.
//!
//! `wharf token create` makes one and prints its secret once; only a SHA-256 of the secret is kept, as a
//! meta document `auth/robots/<id>` in the content store, so every process on the data directory (the
//! server, the CLI beside it) sees the same tokens and a revoke needs no running server. The secret is
//! `wharf_rt_<id>_<random>`: the id says which record to read, the 32 random bytes (base64url) are what
//! makes it unguessable — high entropy, so one SHA-256 is enough (no bcrypt), compared in constant time.
//!
//! A client presents it as the password of `Authorization: Basic` (the user name is ignored; the robot's name
//! is conventional) or as `Authorization: Bearer wharf_rt_…`. A verified token becomes the caller
//! `robot:<name>` whose `--allow` grants alone decide what it may do (see `policy::access::Caller::grants`).
//! Verified tokens are remembered for at most [`ROBOT_CACHE_TTL`], keyed by the SHA-256, so a revoke made by
//! another process takes effect within that time. No secret and no stored hash appears in a log line, an
//! error or `Debug` output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::config::sync::parse_every;
use crate::policy::access::{Caller, Grant};
use crate::store::{ContentStore, StoreError};

/// Every robot secret starts with this, so a credential can be recognised as one before any lookup.
pub const SECRET_PREFIX: &str = "wharf_rt_";
/// Where the token records live among the store's meta documents (`<prefix>/<id>`).
pub const META_PREFIX: &str = "auth/robots";
/// How long a verified token is trusted without reading its record again; bounds how late a revoke (or an
/// expiry) made by another process is noticed.
pub const ROBOT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most verified tokens remembered at once (expired entries are dropped first, then everything).
const ROBOT_CACHE_MAX: usize = 10_000;
/// Random bytes in a secret (256 bits).
const SECRET_RANDOM_BYTES: usize = 32;
/// Random bytes in an id (shown in `wharf token list`, part of the secret; not secret itself).
const ID_BYTES: usize = 8;
/// Longest robot name.
const NAME_MAX: usize = 64;

/// Why a token operation failed. Never contains a secret or a stored hash.
#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    /// The name is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid token name {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    /// No `--allow` entry, or one that does not parse.
    #[error("invalid --allow: {0}")]
    InvalidAllow(String),
    /// `--expires` is neither a duration nor `never`.
    #[error("invalid --expires: {0}")]
    InvalidExpiry(String),
    /// An active token already has this name.
    #[error("an active token is already named {0:?} (revoke it first or choose another name)")]
    NameTaken(String),
    /// Nothing matches the name or id given to `revoke`.
    #[error("no token with name or id {0:?}")]
    NotFound(String),
    /// The token named is already revoked.
    #[error("token {0:?} is already revoked")]
    AlreadyRevoked(String),
    /// A stored record that does not parse.
    #[error("robot token record {key} is corrupt: {reason}")]
    Corrupt {
        /// The meta key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token's state, as `wharf token list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked with `wharf token revoke` (whatever its expiry).
    Revoked,
}

impl TokenState {
    /// The word shown in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

/// One stored token (the JSON document at `auth/robots/<id>`). Holds the SHA-256 of the secret, never the
/// secret; `Debug` leaves the hash out too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotToken {
    /// Random hex id, part of the secret; names the record.
    pub id: String,
    /// Human name, unique among active tokens; the caller is `robot:<name>`.
    pub name: String,
    /// The `--allow` grants as written (`team/*:pull,push`).
    pub allow: Vec<String>,
    /// Unix seconds of creation.
    pub created: u64,
    /// Unix seconds after which the token is refused; `None` for `--expires never`.
    pub expires: Option<u64>,
    /// Unix seconds of the revoke, if revoked.
    pub revoked: Option<u64>,
    /// Hex SHA-256 of the whole secret.
    sha256: String,
}

impl std::fmt::Debug for RobotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("allow", &self.allow)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl RobotToken {
    /// The state at `now` (Unix seconds): revoked wins over expired.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked.is_some() {
            TokenState::Revoked
        } else if self.expires.is_some_and(|e| now >= e) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// The stored grants, parsed again (they were checked when the token was created).
    fn grants(&self) -> Result<Vec<Grant>, String> {
        self.allow.iter().map(|a| Grant::parse(a)).collect()
    }
}

/// A freshly created token's secret. Shown once by the CLI; `Debug` never prints it.
pub struct Secret(String);

impl Secret {
    /// The secret itself, for printing it once to the person who created it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Parse `--allow` values (`REPOS:ACTIONS`, see [`Grant::parse`]); at least one is required, since a token
/// that may do nothing is a mistake.
pub fn parse_allow(values: &[String]) -> Result<Vec<Grant>, RobotError> {
    if values.is_empty() {
        return Err(RobotError::InvalidAllow("at least one --allow REPOS:ACTIONS is required".into()));
    }
    values.iter().map(|v| Grant::parse(v).map_err(RobotError::InvalidAllow)).collect()
}

/// Parse `--expires`: a duration as in the configuration (`90s`, `12h`, `30d`, at most a year) or `never`
/// (`None`). There is no default: a token that never expires must be asked for by name.
pub fn parse_expires(s: &str) -> Result<Option<Duration>, RobotError> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    parse_every(s).map(Some).map_err(RobotError::InvalidExpiry)
}

/// Check a robot name: it ends up in the caller name `robot:<name>`, in access logs and listings.
pub fn validate_name(name: &str) -> Result<(), RobotError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RobotError::InvalidName(name.to_owned()))
    }
}

/// The robot secret in an `Authorization` value, if it carries one: the password of a Basic pair or the
/// token of a Bearer value starting with [`SECRET_PREFIX`]. Anything else is left to the other schemes.
pub fn presented_secret(header: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, value) = text.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = value.trim();
        return token.starts_with(SECRET_PREFIX).then(|| token.to_owned());
    }
    let (_user, password) = super::parse_basic(header)?;
    password.starts_with(SECRET_PREFIX).then_some(password)
}

/// The id inside a secret, if the secret is well-formed (`wharf_rt_<16 hex>_<random>`). Checked before the
/// id becomes a store key.
fn secret_id(secret: &str) -> Option<&str> {
    let (id, random) = secret.strip_prefix(SECRET_PREFIX)?.split_once('_')?;
    let ok = id.len() == 2 * ID_BYTES && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (ok && !random.is_empty()).then_some(id)
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    b
}

fn now_secs() -> u64 {
    crate::history::now_secs()
}

fn key(id: &str) -> String {
    format!("{META_PREFIX}/{id}")
}

#[derive(Clone)]
struct Cached {
    caller: Caller,
    expires: Option<u64>,
    checked: Instant,
}

/// The robot tokens of one content store: create, list and revoke (the CLI), verify (the server).
pub struct Robots {
    store: Arc<dyn ContentStore>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl std::fmt::Debug for Robots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Robots").field("cached", &cached).finish_non_exhaustive()
    }
}

impl Robots {
    /// Tokens kept in `store`'s meta documents.
    pub fn new(store: Arc<dyn ContentStore>) -> Robots {
        Robots { store, cache: Mutex::new(HashMap::new()) }
    }

    /// Every stored token (any state), oldest first.
    pub async fn list(&self) -> Result<Vec<RobotToken>, RobotError> {
        let mut out = Vec::new();
        for k in self.store.meta_list(META_PREFIX).await? {
            if let Some(t) = self.read(&k).await? {
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    async fn read(&self, key: &str) -> Result<Option<RobotToken>, RobotError> {
        let Some(bytes) = self.store.meta_get(key).await? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RobotError::Corrupt { key: key.to_owned(), reason: e.to_string() })
    }

    async fn write(&self, token: &RobotToken) -> Result<(), RobotError> {
        let json = serde_json::to_vec_pretty(token).expect("a token serialises");
        self.store.meta_put(&key(&token.id), Bytes::from(json)).await?;
        Ok(())
    }

    /// Make a token named `name` allowed `allow`, expiring after `expires` (`None`: never). Returns the
    /// record and the secret, which exists nowhere else afterwards.
    pub async fn create(
        &self,
        name: &str,
        allow: &[Grant],
        expires: Option<Duration>,
    ) -> Result<(RobotToken, Secret), RobotError> {
        validate_name(name)?;
        if allow.is_empty() {
            return Err(RobotError::InvalidAllow("at least one grant is required".into()));
        }
        let now = now_secs();
        if self.list().await?.iter().any(|t| t.name == name && t.state(now) == TokenState::Active) {
            return Err(RobotError::NameTaken(name.to_owned()));
        }
        let id = hex::encode(random_bytes::<ID_BYTES>());
        let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_RANDOM_BYTES>());
        let secret = Secret(format!("{SECRET_PREFIX}{id}_{random}"));
        let token = RobotToken {
            id,
            name: name.to_owned(),
            allow: allow.iter().map(ToString::to_string).collect(),
            created: now,
            expires: expires.map(|d| now + d.as_secs()),
            revoked: None,
            sha256: hex::encode(sha256(secret.expose())),
        };
        self.write(&token).await?;
        Ok((token, secret))
    }

    /// Revoke the token with this id, or the active token with this name. Returns the revoked record.
    pub async fn revoke(&self, name_or_id: &str) -> Result<RobotToken, RobotError> {
        let now = now_secs();
        let all = self.list().await?;
        let found = all
            .iter()
            .find(|t| t.id == name_or_id)
            .or_else(|| all.iter().find(|t| t.name == name_or_id && t.state(now) == TokenState::Active))
            .or_else(|| all.iter().find(|t| t.name == name_or_id && t.revoked.is_none()))
            .or_else(|| all.iter().find(|t| t.name == name_or_id));
        let Some(token) = found else { return Err(RobotError::NotFound(name_or_id.to_owned())) };
        if token.revoked.is_some() {
            return Err(RobotError::AlreadyRevoked(name_or_id.to_owned()));
        }
        let mut token = token.clone();
        token.revoked = Some(now);
        self.write(&token).await?;
        Ok(token)
    }

    /// The caller a robot secret stands for, or `None` when it is malformed, unknown, expired or revoked (or
    /// its record cannot be read, which is logged without the secret).
    pub async fn verify(&self, secret: &str) -> Option<Caller> {
        let hash = sha256(secret);
        let now = now_secs();
        if let Some(c) = self.cache.lock().expect("robot cache lock").get(&hash) {
            // The key is the hash of the whole secret, so a hit is the same secret.
            if c.checked.elapsed() < ROBOT_CACHE_TTL && c.expires.is_none_or(|e| now < e) {
                return Some(c.caller.clone());
            }
        }
        let id = secret_id(secret)?;
        let token = match self.read(&key(id)).await {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(target: "wharf::auth", token_id = id, "robot token lookup failed: {e}");
                return None;
            }
        };
        let stored: [u8; 32] = hex::decode(&token.sha256).ok()?.try_into().ok()?;
        if !bool::from(stored.ct_eq(&hash)) || token.state(now) != TokenState::Active {
            return None;
        }
        let grants = match token.grants() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(target: "wharf::auth", token_id = id, "robot token has an unusable grant: {e}");
                return None;
            }
        };
        let caller = Caller {
            user: Some(format!("robot:{}", token.name)),
            groups: Vec::new(),
            grants: Some(grants),
            token: None,
        };
        let mut cache = self.cache.lock().expect("robot cache lock");
        if cache.len() >= ROBOT_CACHE_MAX {
            cache.retain(|_, c| c.checked.elapsed() < ROBOT_CACHE_TTL);
            if cache.len() >= ROBOT_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(hash, Cached { caller: caller.clone(), expires: token.expires, checked: Instant::now() });
        Some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access::Action;
    use crate::store::memory::MemoryStore;

    fn robots() -> (Arc<MemoryStore>, Robots) {
        let store = Arc::new(MemoryStore::new());
        (store.clone(), Robots::new(store))
    }

    #[test]
    fn parsing_allow_expires_and_names() {
        let g = parse_allow(&["team/*:pull,push".into(), "re:^a/(b|c)$:delete".into()]).unwrap();
        assert_eq!(g[0].to_string(), "team/*:pull,push");
        assert!(g[1].allows("a/c", Action::Delete));
        assert!(parse_allow(&[]).is_err(), "a token must allow something");
        assert!(parse_allow(&["team/*:write".into()]).unwrap_err().to_string().contains("write"));
        assert!(parse_allow(&["team/*".into()]).is_err());
        assert_eq!(parse_expires("30d").unwrap(), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_expires("1s").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(parse_expires("never").unwrap(), None);
        for bad in ["0s", "2y", "", "400d", "soon"] {
            assert!(parse_expires(bad).is_err(), "{bad}");
        }
        assert!(validate_name("ci-deploy_1.x").is_ok());
        for bad in ["", "a b", "robot:x", "x/y", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_in_headers_and_their_ids() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = "wharf_rt_0123456789abcdef_abc_-XYZ";
        assert_eq!(presented_secret(format!("Basic {}", b64(&format!("x:{secret}"))).as_bytes()).unwrap(), secret);
        assert_eq!(presented_secret(format!("Basic {}", b64(&format!(":{secret}"))).as_bytes()).unwrap(), secret);
        assert_eq!(presented_secret(format!("Bearer {secret}").as_bytes()).unwrap(), secret);
        assert_eq!(presented_secret(format!("bearer  {secret} ").as_bytes()).unwrap(), secret);
        assert_eq!(presented_secret(format!("Basic {}", b64("alice:pw")).as_bytes()), None, "a user's password");
        assert_eq!(presented_secret(b"Bearer eyJhbGciOi.x.y"), None, "a JWT is for the token flow");
        assert_eq!(presented_secret(b"Basic !!!"), None);
        assert_eq!(secret_id(secret), Some("0123456789abcdef"));
        for bad in [
            "wharf_rt_0123456789abcdef",
            "wharf_rt_0123456789abcdef_",
            "wharf_rt_0123456789ABCDEF_x",
            "wharf_rt_../../etc/pass_x",
            "wharf_rt_012345_x",
        ] {
            assert_eq!(secret_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn states_and_debug() {
        let t = RobotToken {
            id: "0123456789abcdef".into(),
            name: "ci".into(),
            allow: vec!["a/*:pull".into()],
            created: 100,
            expires: Some(200),
            revoked: None,
            sha256: hex::encode(sha256("wharf_rt_x")),
        };
        assert_eq!(t.state(199), TokenState::Active);
        assert_eq!(t.state(200), TokenState::Expired);
        assert_eq!(RobotToken { revoked: Some(150), ..t.clone() }.state(120), TokenState::Revoked);
        assert_eq!(RobotToken { expires: None, ..t.clone() }.state(u64::MAX), TokenState::Active);
        assert!(!format!("{t:?}").contains(&t.sha256), "Debug shows no hash");
        assert_eq!(format!("{:?}", Secret("wharf_rt_s3cret".into())), "Secret(<redacted>)");
    }

    #[tokio::test]
    async fn create_verify_revoke() {
        let (store, robots) = robots();
        let allow = parse_allow(&["team/*:pull,push".into()]).unwrap();
        let (token, secret) = robots.create("ci", &allow, Some(Duration::from_secs(3600))).await.unwrap();
        let s = secret.expose();
        assert!(s.starts_with(&format!("wharf_rt_{}_", token.id)));
        let random = s.rsplit_once(&format!("{}_", token.id)).unwrap().1;
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
        // Only the hash is stored.
        let doc = store.meta_get(&key(&token.id)).await.unwrap().unwrap();
        let doc = String::from_utf8(doc.to_vec()).unwrap();
        assert!(!doc.contains(random) && doc.contains(&hex::encode(sha256(s))), "{doc}");
        assert!(matches!(robots.create("ci", &allow, None).await, Err(RobotError::NameTaken(_))));

        let caller = robots.verify(s).await.unwrap();
        assert_eq!(caller.user.as_deref(), Some("robot:ci"));
        assert_eq!(caller.grants, Some(allow.clone()));
        assert!(caller.groups.is_empty());
        // Same id, other random part: refused (constant-time hash comparison).
        assert!(robots.verify(&format!("wharf_rt_{}_AAAA", token.id)).await.is_none());
        assert!(robots.verify("wharf_rt_ffffffffffffffff_AAAA").await.is_none(), "unknown id");

        // A revoke by another process (another `Robots` on the same store) is noticed once the cache entry ages.
        let other = Robots::new(store.clone());
        assert_eq!(other.revoke("ci").await.unwrap().state(now_secs()), TokenState::Revoked);
        assert!(matches!(other.revoke("ci").await, Err(RobotError::AlreadyRevoked(_))));
        assert!(matches!(other.revoke("nope").await, Err(RobotError::NotFound(_))));
        assert!(robots.verify(s).await.is_some(), "still cached");
        robots.cache.lock().unwrap().values_mut().for_each(|c| c.checked -= ROBOT_CACHE_TTL);
        assert!(robots.verify(s).await.is_none(), "revoked");

        // The name is free again; the new token is distinct and revocable by id.
        let (t2, s2) = robots.create("ci", &allow, None).await.unwrap();
        assert_ne!(t2.id, token.id);
        assert!(robots.verify(s2.expose()).await.is_some());
        robots.revoke(&t2.id).await.unwrap();
        let states: Vec<_> = robots.list().await.unwrap().iter().map(|t| t.state(now_secs())).collect();
        assert_eq!(states, [TokenState::Revoked, TokenState::Revoked]);
    }

    #[tokio::test]
    async fn expired_tokens_are_refused_even_when_cached() {
        let (_store, robots) = robots();
        let allow = parse_allow(&["a/*:pull".into()]).unwrap();
        let (mut token, secret) = robots.create("short", &allow, Some(Duration::from_secs(60))).await.unwrap();
        assert!(robots.verify(secret.expose()).await.is_some());
        // Its expiry passes (in the record and in the fresh cache entry): the cache does not serve it.
        token.expires = Some(now_secs());
        robots.write(&token).await.unwrap();
        robots.cache.lock().unwrap().values_mut().for_each(|c| c.expires = token.expires);
        assert!(robots.verify(secret.expose()).await.is_none(), "the cached expiry is checked");
        assert_eq!(robots.list().await.unwrap()[0].state(now_secs()), TokenState::Expired);
        // An expired token does not hold its name.
        robots.create("short", &allow, None).await.unwrap();
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let (_store, robots) = robots();
        let (_, secret) = robots.create("x", &parse_allow(&["a:pull".into()]).unwrap(), None).await.unwrap();
        {
            let mut c = robots.cache.lock().unwrap();
            for i in 0..ROBOT_CACHE_MAX as u32 {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                c.insert(k, Cached { caller: Caller::anonymous(), expires: None, checked: Instant::now() });
            }
        }
        assert!(robots.verify(secret.expose()).await.is_some());
        assert!(robots.cache.lock().unwrap().len() <= ROBOT_CACHE_MAX);
    }
}
