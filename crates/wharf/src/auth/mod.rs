//! Identities for access control: users from an htpasswd file (bcrypt), registry tokens (`token.rs`), robot
//! tokens (`robots.rs`), workload identities from OIDC JWTs (`oidc.rs`), verified mutual-TLS client
//! certificates (`mtls.rs`), groups from `[auth.groups]`, and the checks around them (a short cache of verified
//! credentials, a per-address limit on failed logins).
//!
//! The HTTP layer (`api::access`) calls [`AccessControl::authenticate`] with the `Authorization` header and then
//! asks the rules; a token endpoint can make the same two calls. Secrets never leave this module: the cache is
//! keyed by a SHA-256 of user and password, and no error, log line or `Debug` output contains a password or a
//! stored hash.

mod htpasswd;
mod limiter;
pub mod mtls;
pub mod oidc;
pub mod robots;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use sha2::{Digest as _, Sha256};

pub use self::htpasswd::{load as load_htpasswd, Users};
use self::limiter::FailureLimiter;
use self::oidc::Oidc;
use self::robots::Robots;
use self::token::TokenIssuer;
use crate::config::Config;
use crate::policy::access::{Action, Caller, Rules};
use crate::tls::ClientIdentity;

/// How long a verified user/password pair is trusted without running bcrypt again.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most verified pairs remembered at once (the cache is emptied of expired entries, then cleared, when full).
const CREDENTIAL_CACHE_MAX: usize = 10_000;
/// bcrypt cost of the stand-in hash checked for unknown users, so a miss takes about as long as a hit.
const DUMMY_COST: u32 = 10;

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong user or password, or a malformed `Authorization` header.
    #[error("authentication required: invalid credentials")]
    Invalid,
    /// Too many failed logins from this address recently.
    #[error("too many failed logins from this address; retry later")]
    RateLimited {
        /// Seconds until logins are accepted again.
        retry_after: u64,
    },
}

/// The client's address as a request extension (so the failed-login limit works per address); set for plain
/// HTTP by the listener's connect info, for TLS taken from [`crate::tls::TlsPeer`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::zero_copy::Listener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::zero_copy::Listener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

#[derive(Clone)]
struct Cached {
    user: String,
    /// The stored hash the pair was verified against: a changed or removed entry invalidates the cache.
    hash: Arc<str>,
    expires: Instant,
}

/// Everything access control needs at request time.
pub struct AccessControl {
    users: RwLock<Arc<Users>>,
    htpasswd: Option<PathBuf>,
    groups: HashMap<String, Vec<String>>,
    /// `[[auth.oidc]]` issuers whose JWTs log in (workload identity).
    oidc: Oidc,
    rules: Rules,
    /// `[auth] public_status`: status pages and metrics without `admin`.
    pub public_status: bool,
    reload_every: Duration,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    limiter: Mutex<FailureLimiter>,
    dummy_hash: String,
    /// Issues and verifies registry tokens; set by the application once the signing key is loaded from the
    /// store (without it, clients are challenged for Basic credentials).
    tokens: std::sync::OnceLock<TokenIssuer>,
    /// `[auth] token_realm`, when set.
    token_realm: Option<String>,
    /// Robot tokens of the data directory (`None`: robot secrets are refused like wrong passwords).
    robots: Option<Robots>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("users", &self.users.read().map(|u| u.len()).unwrap_or(0))
            .field("htpasswd", &self.htpasswd)
            .field("oidc", &self.oidc)
            .field("public_status", &self.public_status)
            .finish_non_exhaustive()
    }
}

impl AccessControl {
    /// Build from the configuration; `None` when access control is not configured (everything is open, as
    /// before). The error names what is wrong (an unreadable htpasswd file, an invalid rule).
    pub fn from_config(config: &Config) -> Result<Option<AccessControl>, String> {
        if !config.access_control() {
            return Ok(None);
        }
        let auth = config.auth.clone().unwrap_or_default();
        let users = match &auth.htpasswd {
            Some(p) => load_htpasswd(p)?,
            None => Users::default(),
        };
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for (g, members) in &auth.groups {
            for m in members {
                groups.entry(m.clone()).or_default().push(g.clone());
            }
        }
        let mut rules = Vec::new();
        for (i, a) in config.access.iter().enumerate() {
            rules.push(a.compile().map_err(|p| {
                p.into_iter().map(|(k, r)| format!("access[{i}].{k}: {r}")).collect::<Vec<_>>().join("; ")
            })?);
        }
        let oidc = Oidc::from_config(&auth.oidc)?;
        let dummy_hash = bcrypt::hash("wharf: no such user", DUMMY_COST).map_err(|e| e.to_string())?;
        Ok(Some(AccessControl {
            users: RwLock::new(Arc::new(users)),
            htpasswd: auth.htpasswd.clone(),
            groups,
            oidc,
            rules: Rules::new(rules),
            public_status: auth.public_status,
            reload_every: auth.reload_interval(),
            cache: Mutex::new(HashMap::new()),
            limiter: Mutex::new(FailureLimiter::default()),
            dummy_hash,
            tokens: std::sync::OnceLock::new(),
            token_realm: auth.token_realm.clone(),
            robots: None,
        }))
    }

    /// Accept the robot tokens kept in this store (the server's own data directory).
    pub fn with_robots(mut self, robots: Robots) -> AccessControl {
        self.robots = Some(robots);
        self
    }

    /// Turn on the token flow with the issuer built from the store's signing key (once, at start-up; a
    /// second call is ignored).
    pub fn set_tokens(&self, tokens: TokenIssuer) {
        let _ = self.tokens.set(tokens);
    }

    /// The token issuer, when the token flow is on.
    pub fn tokens(&self) -> Option<&TokenIssuer> {
        self.tokens.get()
    }

    /// `[auth] token_realm`, when configured.
    pub fn token_realm(&self) -> Option<&str> {
        self.token_realm.as_deref()
    }

    /// A fingerprint of `user`'s stored password hash (for binding refresh tokens); `None` for a name that
    /// is not an htpasswd user.
    pub fn credential_fingerprint(&self, user: &str) -> Option<String> {
        let stored = self.users.read().expect("users lock").get(user)?;
        Some(token::credential_fingerprint(&stored))
    }

    /// The caller a refresh token stands for, if its user still exists with the same password.
    pub fn refresh_subject(&self, user: &str, fingerprint: &str) -> Option<Caller> {
        let now = self.credential_fingerprint(user)?;
        subtle_eq(now.as_bytes(), fingerprint.as_bytes()).then(|| self.caller(user.to_owned()))
    }

    /// The `[[access]]` rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Whether `caller` may take `action` on `repo`.
    pub fn allows(&self, caller: &Caller, repo: &str, action: Action) -> bool {
        self.rules.allows(caller, repo, action)
    }

    /// Who sent the request: anonymous without an `Authorization` header, the verified user with valid Basic
    /// credentials or an OIDC JWT from a configured issuer (as Bearer or as the Basic password), an error
    /// otherwise. Failures count against `peer`; past the limit every attempt from it is refused for a while,
    /// right or wrong.
    pub async fn authenticate(&self, authorization: Option<&[u8]>, peer: Option<IpAddr>) -> Result<Caller, AuthError> {
        let Some(header) = authorization else { return Ok(Caller::anonymous()) };
        if let Some(bearer) = parse_bearer(header).filter(|b| !b.starts_with(robots::SECRET_PREFIX)) {
            // Registry tokens are not guessable and expire quickly; a failure is not counted as a login
            // attempt (clients routinely present an expired token, then fetch a new one).
            if let Some(t) = self.tokens.get().filter(|t| t.is_ours(bearer)) {
                return t.verify(bearer).map_err(|_| AuthError::Invalid);
            }
        }
        if let Some(ip) = peer {
            if let Some(retry_after) = self.limiter.lock().expect("limiter lock").blocked(ip, Instant::now()) {
                return Err(AuthError::RateLimited { retry_after });
            }
        }
        // Robot tokens (auth/robots.rs): a `wharf_rt_` secret as the Basic password or the Bearer token.
        if let Some(secret) = robots::presented_secret(header) {
            let verified = match &self.robots {
                Some(robots) => robots.verify(&secret).await,
                None => None,
            };
            return verified.ok_or_else(|| self.failed(peer));
        }
        // Workload identity (oidc.rs): a Bearer JWT, or a JWT as the Basic password, from a configured issuer.
        // `None` (another scheme or issuer, not a JWT) falls through to htpasswd users.
        let verified = match self.oidc.login(header).await {
            Some(result) => result.ok().map(|c| self.with_groups(c)),
            None => match parse_basic(header) {
                // Clients without credentials may still answer a Basic challenge with an empty pair
                // (containers/image sends `Basic Og==`): that is an anonymous request, not a failed login.
                Some((user, password)) if user.is_empty() && password.is_empty() => return Ok(Caller::anonymous()),
                Some((user, _)) if user.is_empty() => None,
                Some((user, password)) => self.verify(user, password).await.map(|u| self.caller(u)),
                None => None,
            },
        };
        match verified {
            Some(caller) => Ok(caller),
            None => Err(self.failed(peer)),
        }
    }

    /// Count a failed login against `peer`; the error to answer with.
    fn failed(&self, peer: Option<IpAddr>) -> AuthError {
        if let Some(ip) = peer {
            self.limiter.lock().expect("limiter lock").failed(ip, Instant::now());
        }
        AuthError::Invalid
    }

    /// Who sent the request, given also the connection's verified client certificate (mutual TLS, see
    /// `mtls.rs`): explicit credentials decide as in [`AccessControl::authenticate`]; a request without any
    /// (no `Authorization` header, or the empty Basic pair some clients send) is the certificate's user, with
    /// its `[auth.groups]`, instead of anonymous.
    pub async fn identify(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
        certificate: Option<&ClientIdentity>,
    ) -> Result<Caller, AuthError> {
        let caller = self.authenticate(authorization, peer).await?;
        if caller.user.is_some() {
            return Ok(caller);
        }
        Ok(certificate.and_then(mtls::certificate_user).map_or(caller, |user| self.caller(user)))
    }

    fn caller(&self, user: String) -> Caller {
        let groups = self.groups.get(&user).cloned().unwrap_or_default();
        Caller::user(user, groups)
    }

    /// `caller`'s groups (an OIDC token's) plus those `[auth.groups]` gives its user name.
    fn with_groups(&self, mut caller: Caller) -> Caller {
        if let Some(extra) = caller.user.as_ref().and_then(|u| self.groups.get(u)) {
            for g in extra {
                if !caller.groups.contains(g) {
                    caller.groups.push(g.clone());
                }
            }
        }
        caller
    }

    /// The user name if `password` is right; bcrypt runs on the blocking pool, and only on a cache miss.
    async fn verify(&self, user: String, password: String) -> Option<String> {
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let stored = self.users.read().expect("users lock").get(&user);
        let now = Instant::now();
        if let Some(c) = self.cache.lock().expect("cache lock").get(&key) {
            // The key is a hash of both parts, so a hit is already the same pair; the stored hash must not have
            // changed since it was verified.
            if c.expires > now && stored.as_ref().is_some_and(|s| **s == *c.hash) && c.user == user {
                return Some(user);
            }
        }
        let hash: Arc<str> = match &stored {
            Some(h) => h.clone(),
            None => Arc::from(self.dummy_hash.as_str()),
        };
        let h = hash.clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &h).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok || stored.is_none() {
            return None;
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CREDENTIAL_CACHE_MAX {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= CREDENTIAL_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, Cached { user: user.clone(), hash, expires: now + CREDENTIAL_CACHE_TTL });
        Some(user)
    }

    /// Watch the htpasswd file and load it again when its modification time or size changes; a file that no
    /// longer parses is reported and the previous users stay. Also fetches the `[[auth.oidc]]` key sets once
    /// (later refreshes happen on use). Must run inside the runtime; stops when the access control is dropped.
    pub fn start_reload(self: &Arc<Self>) {
        if !self.oidc.is_empty() {
            // Fetch `jwks_url` key sets now, so the first login does not wait and a bad URL shows at start-up.
            let ac = Arc::clone(self);
            tokio::spawn(async move { ac.oidc.prefetch().await });
        }
        let Some(path) = self.htpasswd.clone() else { return };
        let weak = Arc::downgrade(self);
        let every = self.reload_every;
        tokio::spawn(async move {
            let mut seen = stamp(&path);
            loop {
                tokio::time::sleep(every).await;
                let Some(ac) = weak.upgrade() else { return };
                let now = stamp(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                let p = path.clone();
                match tokio::task::spawn_blocking(move || load_htpasswd(&p)).await {
                    Ok(Ok(users)) => {
                        let n = users.len();
                        *ac.users.write().expect("users lock") = Arc::new(users);
                        tracing::info!(target: "wharf::auth", file = %path.display(), users = n, "htpasswd reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(target: "wharf::auth", "htpasswd changed but cannot be used, keeping the previous users: {e}")
                    }
                    Err(e) => tracing::error!(target: "wharf::auth", "htpasswd reload failed: {e}"),
                }
            }
        });
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Constant-time equality of two byte strings (the length is not secret).
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// The value of `Bearer <token>`; `None` for any other scheme.
fn parse_bearer(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, value) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim()).filter(|v| !v.is_empty())
}

/// `Basic base64(user:password)`; `None` for any other scheme or malformed value.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, value) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        assert_eq!(parse_basic(b"Basic YWxpY2U6czNjcjN0Og=="), Some(("alice".into(), "s3cr3t:".into())));
        assert_eq!(parse_basic(b"basic YWxpY2U6czNjcjN0Og=="), Some(("alice".into(), "s3cr3t:".into())));
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic Og=="), Some((String::new(), String::new())));
    }

    #[tokio::test]
    async fn verify_cache_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, format!("alice:{}\n", bcrypt::hash("right", 4).unwrap())).unwrap();
        let text = format!("[auth]\nhtpasswd = {:?}\n", file.to_str().unwrap());
        let config = Config::parse(&text, std::path::Path::new("f")).unwrap();
        let ac = AccessControl::from_config(&config).unwrap().unwrap();
        let basic = |u: &str, p: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(ac.authenticate(None, Some(ip)).await, Ok(Caller::anonymous()));
        assert_eq!(ac.authenticate(Some(b"Basic Og=="), Some(ip)).await, Ok(Caller::anonymous()), "empty pair");
        assert_eq!(ac.authenticate(Some(b"Basic OnB3"), Some(ip)).await, Err(AuthError::Invalid), "no user name");
        let alice = ac.authenticate(Some(basic("alice", "right").as_bytes()), Some(ip)).await.unwrap();
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert_eq!(ac.cache.lock().unwrap().len(), 1, "the verified pair is cached");
        assert!(format!("{:?}", ac.cache.lock().unwrap().values().next().unwrap().user).contains("alice"));
        // A changed password invalidates the cached pair.
        *ac.users.write().unwrap() =
            Arc::new(Users::parse(&format!("alice:{}\n", bcrypt::hash("new", 4).unwrap())).unwrap());
        assert_eq!(ac.authenticate(Some(basic("alice", "right").as_bytes()), Some(ip)).await, Err(AuthError::Invalid));
        // Two failures so far (no user name, the old password).
        for _ in 0..limiter::MAX_FAILURES - 2 {
            assert_eq!(ac.authenticate(Some(basic("bob", "x").as_bytes()), Some(ip)).await, Err(AuthError::Invalid));
        }
        assert!(matches!(
            ac.authenticate(Some(basic("alice", "new").as_bytes()), Some(ip)).await,
            Err(AuthError::RateLimited { .. })
        ));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(ac.authenticate(Some(basic("alice", "new").as_bytes()), Some(other)).await.is_ok());
        assert!(!format!("{ac:?}").contains("$2"), "Debug shows no hash");
    }

    fn open_config() -> AccessControl {
        let text = concat!(
            "[[access]]\nrepositories = [\"team/*\"]\nusers = [\"ci-bot\", \"group:ci\"]\nactions = [\"push\"]\n\n",
            "[auth.groups]\nci = [\"carol\"]\n",
        );
        let config = Config::parse(text, std::path::Path::new("f")).unwrap();
        AccessControl::from_config(&config).unwrap().unwrap()
    }

    #[tokio::test]
    async fn robot_secrets_log_in_and_failures_count() {
        let store = Arc::new(crate::store::memory::MemoryStore::new());
        let robots = Robots::new(store.clone());
        let allow = robots::parse_allow(&["a/*:pull".into()]).unwrap();
        let (_, secret) = robots.create("ci", &allow, None).await.unwrap();
        let secret = secret.expose().to_owned();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("anything:{secret}")));
        let bearer = format!("Bearer {secret}");

        // Without the store's robots, a robot secret is a failed login like any wrong password.
        let plain = open_config();
        assert_eq!(plain.authenticate(Some(basic.as_bytes()), Some(ip)).await, Err(AuthError::Invalid));

        let ac = open_config().with_robots(Robots::new(store));
        for header in [&basic, &bearer] {
            let c = ac.authenticate(Some(header.as_bytes()), Some(ip)).await.unwrap();
            assert_eq!(c.user.as_deref(), Some("robot:ci"));
            assert!(ac.allows(&c, "a/x", Action::Pull) && !ac.allows(&c, "team/x", Action::Push), "grants decide");
        }
        let wrong = format!("Bearer {}", &secret[..secret.len() - 4]);
        for _ in 0..limiter::MAX_FAILURES {
            assert_eq!(ac.authenticate(Some(wrong.as_bytes()), Some(ip)).await, Err(AuthError::Invalid));
        }
        assert!(matches!(ac.authenticate(Some(bearer.as_bytes()), Some(ip)).await, Err(AuthError::RateLimited { .. })));
        assert!(!format!("{ac:?}").contains(&secret));
    }

    #[tokio::test]
    async fn certificate_identity_when_no_credentials_are_sent() {
        let ac = open_config();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let cert = ClientIdentity { common_name: Some("ci-bot".into()), sans: vec!["DNS:ci-bot.example".into()] };
        let c = ac.identify(None, Some(ip), Some(&cert)).await.unwrap();
        assert_eq!(c, Caller::user("ci-bot", vec![]));
        assert!(ac.allows(&c, "team/app", Action::Push));
        assert_eq!(ac.identify(Some(b"Basic Og=="), Some(ip), Some(&cert)).await.unwrap(), c, "the empty pair");
        assert_eq!(ac.identify(None, Some(ip), None).await.unwrap(), Caller::anonymous());
        // Explicit credentials win, even wrong ones.
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("carol:nope"));
        assert_eq!(ac.identify(Some(wrong.as_bytes()), Some(ip), Some(&cert)).await, Err(AuthError::Invalid));
        // Groups apply to certificate users too; a certificate without a CN is its first SAN.
        let carol = ClientIdentity { common_name: Some("carol".into()), sans: vec![] };
        assert_eq!(ac.identify(None, None, Some(&carol)).await.unwrap().groups, ["ci"]);
        let san = ClientIdentity { common_name: None, sans: vec!["DNS:ci-bot.example".into()] };
        assert_eq!(ac.identify(None, None, Some(&san)).await.unwrap().user.as_deref(), Some("DNS:ci-bot.example"));
    }
}
