//! Workload identity: OIDC JWTs (Kubernetes service-account tokens, GitHub Actions and GitLab CI tokens) log
//! in without a secret stored in Wharf. Each `[[auth.oidc]]` entry names an issuer, the audience its tokens
//! must carry and where its public keys (a JWK Set) are; a verified token becomes a user (`user_prefix` + the
//! username claim) with groups from an optional claim, and the `[[access]]` rules decide as for any user.
//!
//! Only the token's `iss` is read before verification, to pick the entry; a token from an issuer that is not
//! configured is left to the other verifiers ([`Oidc::verify`] answers `Ok(None)`). Everything else comes from
//! the verified token. Only asymmetric algorithms are accepted (`alg: none` and HMAC are refused, so a public
//! key can never be used as an HMAC secret), and the key is chosen by `kid` among the issuer's keys, never
//! taken from the token. No token, claim value or key material is ever logged or put in an error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::AuthError;
use crate::config::auth::OidcConfig;
use crate::policy::access::Caller;

/// Clock skew tolerated on `exp`, `nbf` and `iat` (issuers and Wharf rarely agree to the second).
pub const LEEWAY_SECS: u64 = 60;
/// A token naming a `kid` Wharf does not know triggers a JWKS fetch at most this often per issuer (keys are
/// rotated rarely; made-up `kid`s must not turn Wharf into a request amplifier against the issuer).
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// Largest JWK Set body accepted from `jwks_url` (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A `jwks_file` is `stat`ed at most this often (and at once when a token names an unknown `kid`).
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Timeout of one JWKS fetch, so a slow issuer holds logins up for a bounded time.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The signature algorithms accepted: asymmetric only.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a JWK Set could not be used; the previous keys stay in use when a reload fails this way.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The `jwks_file`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON with a `keys` array.
    #[error("not a JWK Set (JSON object with a \"keys\" array): {0}")]
    NotJwks(String),
    /// No key in the set can verify signatures with an accepted algorithm.
    #[error("none of its {0} keys is a usable signature key (RSA, EC P-256/P-384 or Ed25519, use \"sig\")")]
    NoUsableKey(usize),
    /// The HTTP request failed.
    #[error("fetch failed: {0}")]
    Fetch(String),
    /// The issuer answered with an error status.
    #[error("fetch answered HTTP {0}")]
    Status(u16),
    /// The body exceeded [`MAX_JWKS_BYTES`].
    #[error("body larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

/// The key types that can verify an accepted algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// One usable public key of an issuer.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl Key {
    fn compatible(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// An issuer's usable keys.
#[derive(Clone, Default)]
struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| (k.kid.as_deref(), k.kind))).finish()
    }
}

/// The outcome of looking a token's key up.
enum Lookup {
    Found(DecodingKey),
    /// A `kid` not in the set: worth a reload.
    UnknownKid,
    /// The key exists but does not fit the algorithm, or several keys could fit a token without `kid`.
    Unusable,
}

impl KeySet {
    /// Parse a JWK Set, keeping the keys that can verify an accepted algorithm (others, such as encryption
    /// keys or symmetric `oct` keys, are skipped: one exotic key must not make the issuer's set unusable).
    fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let total = raw.keys.len();
        let keys: Vec<Key> = raw.keys.into_iter().filter_map(|v| usable(serde_json::from_value(v).ok()?)).collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(total));
        }
        Ok(KeySet { keys })
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let key = match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.compatible(alg) => k,
                Some(_) => return Lookup::Unusable,
                None => return Lookup::UnknownKid,
            },
            None => {
                let mut fits = self.keys.iter().filter(|k| k.compatible(alg));
                match (fits.next(), fits.next()) {
                    (Some(k), None) => k,
                    _ => return Lookup::Unusable,
                }
            }
        };
        Lookup::Found(key.key.clone())
    }
}

/// A JWK that can verify signatures with an accepted algorithm, or `None`.
fn usable(jwk: Jwk) -> Option<Key> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyKind::P256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => KeyKind::P384,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        // Symmetric keys never verify anything here; other curves are not supported by the verifier.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            let alg = match a {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            if !kind.verifies(alg) {
                return None;
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key { kid: jwk.common.key_id, kind, alg, key })
}

/// `(modification time, size)` of a file, to notice changes.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(m: &std::fs::Metadata) -> Stamp {
    Some((m.modified().ok()?, m.len()))
}

/// Read and parse a `jwks_file` (also what `wharf config check` runs).
pub fn load_jwks_file(path: &Path) -> Result<(), JwksError> {
    let bytes = std::fs::read(path).map_err(|source| JwksError::Read { path: path.to_owned(), source })?;
    KeySet::parse(&bytes).map(|_| ())
}

struct FileState {
    keys: Arc<KeySet>,
    stamp: Stamp,
    /// SHA-256 of the bytes the keys were parsed from (a rewrite within the file system's timestamp
    /// granularity can keep size and mtime).
    digest: [u8; 32],
    checked: Instant,
}

struct UrlState {
    keys: Arc<KeySet>,
    /// Last successful fetch.
    fetched: Option<Instant>,
    /// Last fetch, successful or not.
    attempted: Option<Instant>,
}

/// Where an issuer's keys come from.
enum Source {
    File {
        path: PathBuf,
        state: Mutex<FileState>,
    },
    Url {
        url: reqwest::Url,
        http: reqwest::Client,
        refresh: Duration,
        state: Mutex<UrlState>,
        fetching: tokio::sync::Mutex<()>,
    },
}

/// One configured issuer.
struct Issuer {
    issuer: String,
    audience: String,
    username_claim: String,
    groups_claim: Option<String>,
    user_prefix: String,
    source: Source,
}

/// The configured OIDC issuers (`[[auth.oidc]]`) and their keys.
pub struct Oidc {
    issuers: Vec<Issuer>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.issuers.iter().map(|i| &i.issuer)).finish()
    }
}

/// Why a token was refused, for the log line (never the token or its claims).
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        InvalidSignature | Crypto(_) => "bad signature",
        ExpiredSignature => "expired",
        ImmatureSignature => "not valid yet (nbf)",
        InvalidAudience => "wrong audience",
        InvalidIssuer => "wrong issuer",
        MissingRequiredClaim(c) if c == "exp" => "no exp claim",
        MissingRequiredClaim(c) if c == "aud" => "no aud claim",
        MissingRequiredClaim(_) => "a required claim is missing",
        InvalidAlgorithm | MissingAlgorithm | InvalidAlgorithmName => "algorithm not accepted",
        _ => "malformed token",
    }
}

impl Oidc {
    /// Build from `[[auth.oidc]]`, reading every `jwks_file` now (so a bad file stops start-up with its key
    /// named); `jwks_url` sets are fetched by [`Oidc::prefetch`] or on first use, and kept fresh from then on.
    pub fn from_config(entries: &[OidcConfig]) -> Result<Oidc, String> {
        let mut issuers = Vec::new();
        for (i, c) in entries.iter().enumerate() {
            let source = match (&c.jwks_file, &c.jwks_url) {
                (Some(path), None) => {
                    let at = |e: JwksError| format!("auth.oidc[{i}].jwks_file: {e}");
                    let meta =
                        std::fs::metadata(path).map_err(|source| at(JwksError::Read { path: path.clone(), source }))?;
                    let bytes =
                        std::fs::read(path).map_err(|source| at(JwksError::Read { path: path.clone(), source }))?;
                    let keys = KeySet::parse(&bytes).map_err(at)?;
                    Source::File {
                        path: path.clone(),
                        state: Mutex::new(FileState {
                            keys: Arc::new(keys),
                            stamp: stamp(&meta),
                            digest: Sha256::digest(&bytes).into(),
                            checked: Instant::now(),
                        }),
                    }
                }
                (None, Some(url)) => {
                    let url = reqwest::Url::parse(url).map_err(|_| format!("auth.oidc[{i}].jwks_url: not a URL"))?;
                    let http = reqwest::Client::builder()
                        .timeout(FETCH_TIMEOUT)
                        .redirect(reqwest::redirect::Policy::limited(3))
                        .build()
                        .map_err(|e| format!("auth.oidc[{i}].jwks_url: HTTP client: {e}"))?;
                    Source::Url {
                        url,
                        http,
                        refresh: c.jwks_refresh(),
                        state: Mutex::new(UrlState { keys: Arc::default(), fetched: None, attempted: None }),
                        fetching: tokio::sync::Mutex::new(()),
                    }
                }
                _ => return Err(format!("auth.oidc[{i}]: set exactly one of jwks_file and jwks_url")),
            };
            issuers.push(Issuer {
                issuer: c.issuer.clone(),
                audience: c.audience.clone(),
                username_claim: c.username_claim().to_owned(),
                groups_claim: c.groups_claim.clone(),
                user_prefix: c.user_prefix.clone(),
                source,
            });
        }
        Ok(Oidc { issuers })
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The login an `Authorization` value carries, if it is for this module: `Bearer <jwt>`, or Basic with a
    /// JWT as the password (`docker login -u anything -p $TOKEN`), from a configured issuer. `None` for
    /// everything else (other schemes, other issuers, passwords that are not JWTs), which other verifiers
    /// then handle. The caller's groups are the token's; `[auth.groups]` is merged by the caller.
    pub async fn login(&self, authorization: &[u8]) -> Option<Result<Caller, AuthError>> {
        if self.issuers.is_empty() {
            return None;
        }
        let text = std::str::from_utf8(authorization).ok()?.trim();
        let (scheme, value) = text.split_once(' ')?;
        let jwt = if scheme.eq_ignore_ascii_case("bearer") {
            value.trim().to_owned()
        } else {
            let (_, password) = super::parse_basic(authorization)?;
            if !looks_like_jwt(&password) {
                return None;
            }
            password
        };
        self.verify(&jwt).await.transpose()
    }

    /// Verify `jwt`: `Ok(None)` when it is not a JWT from a configured issuer (so other verifiers can try),
    /// the caller when it verifies, [`AuthError::Invalid`] otherwise (bad signature, expired, wrong audience,
    /// an algorithm or key that is not accepted).
    pub async fn verify(&self, jwt: &str) -> Result<Option<Caller>, AuthError> {
        let Some(iss) = unverified_issuer(jwt) else { return Ok(None) };
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer == iss) else { return Ok(None) };
        match issuer.verify(jwt).await {
            Ok(caller) => Ok(Some(caller)),
            Err(why) => {
                tracing::info!(target: "wharf::auth", issuer = %issuer.issuer, reason = why, "OIDC token refused");
                Err(AuthError::Invalid)
            }
        }
    }

    /// Fetch every `jwks_url` once, so the first login does not wait for it and a wrong URL shows in the log
    /// at start-up. Failures are logged and retried on use.
    pub async fn prefetch(&self) {
        for i in &self.issuers {
            if matches!(i.source, Source::Url { .. }) {
                i.source.refresh_url(true, false).await;
            }
        }
    }
}

/// Three dot-separated base64url parts, the first one a JSON object (`eyJ` is `{"`).
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && s.starts_with("eyJ")
        && parts[..2].iter().all(|p| !p.is_empty())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// The `iss` claim read without verifying anything: only used to choose which issuer verifies the token.
fn unverified_issuer(jwt: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<serde_json::Value>,
    }
    let mut parts = jwt.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice::<Iss>(&bytes).ok()?.iss? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Issuer {
    async fn verify(&self, jwt: &str) -> Result<Caller, &'static str> {
        // The header is read only to learn the algorithm and `kid`; both are checked against what we accept.
        // `alg: none` does not even parse (jsonwebtoken has no such algorithm).
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| reason(&e))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err("algorithm not accepted (only RS*, PS*, ES256, ES384, EdDSA)");
        }
        let key = self.source.key(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(jwt, &key, &v)
            .map_err(|e| reason(&e))?
            .claims;
        if claims.get("iat").and_then(|v| v.as_f64()).is_some_and(|iat| iat > (now_secs() + LEEWAY_SECS) as f64) {
            return Err("issued in the future (iat)");
        }
        let name = match claims.get(&self.username_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            _ => return Err("the username claim is missing or not a string"),
        };
        let groups = match self.groups_claim.as_ref().and_then(|c| claims.get(c)) {
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(|g| g.as_str()).filter(|g| !g.is_empty()).map(str::to_owned).collect()
            }
            Some(serde_json::Value::String(g)) if !g.is_empty() => vec![g.clone()],
            _ => Vec::new(),
        };
        Ok(Caller::user(format!("{}{name}", self.user_prefix), groups))
    }
}

impl Source {
    /// The key for a token's `kid` and algorithm, reloading the set when it is due or the `kid` is unknown.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, &'static str> {
        let lookup = match self {
            Source::File { .. } => {
                self.check_file(false).await;
                match self.keys().lookup(kid, alg) {
                    Lookup::UnknownKid => {
                        self.check_file(true).await;
                        self.keys().lookup(kid, alg)
                    }
                    other => other,
                }
            }
            Source::Url { .. } => {
                self.refresh_url(false, false).await;
                match self.keys().lookup(kid, alg) {
                    Lookup::UnknownKid => {
                        self.refresh_url(false, true).await;
                        self.keys().lookup(kid, alg)
                    }
                    other => other,
                }
            }
        };
        match lookup {
            Lookup::Found(k) => Ok(k),
            Lookup::UnknownKid => Err("unknown kid"),
            Lookup::Unusable => Err("no key of the issuer fits the token's kid and algorithm"),
        }
    }

    fn keys(&self) -> Arc<KeySet> {
        match self {
            Source::File { state, .. } => state.lock().expect("jwks lock").keys.clone(),
            Source::Url { state, .. } => state.lock().expect("jwks lock").keys.clone(),
        }
    }

    /// Read the file again if its size or modification time changed (checked at most every second), or,
    /// with `force` (a token named an unknown `kid`), read it and compare the contents. A file that no longer
    /// parses is logged and the previous keys stay.
    async fn check_file(&self, force: bool) {
        let Source::File { path, state } = self else { return };
        let seen = {
            let mut st = state.lock().expect("jwks lock");
            if !force && st.checked.elapsed() < FILE_CHECK_EVERY {
                return;
            }
            st.checked = Instant::now();
            st.stamp
        };
        let unreadable = |e: std::io::Error| {
            let file = path.display();
            tracing::warn!(target: "wharf::auth", %file, "jwks_file unreadable, keeping the previous keys: {e}");
        };
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) => return unreadable(e),
        };
        if !force && stamp(&meta) == seen {
            return;
        }
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) => return unreadable(e),
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let mut st = state.lock().expect("jwks lock");
        st.stamp = stamp(&meta);
        if digest == st.digest {
            return;
        }
        st.digest = digest;
        match KeySet::parse(&bytes) {
            Ok(keys) => {
                let (file, keys_n) = (path.display(), keys.keys.len());
                tracing::info!(target: "wharf::auth", %file, keys = keys_n, "jwks_file reloaded");
                st.keys = Arc::new(keys);
            }
            Err(e) => tracing::error!(
                target: "wharf::auth",
                file = %path.display(),
                "jwks_file changed but cannot be used, keeping the previous keys: {e}"
            ),
        }
    }

    /// Fetch the JWK Set if it is due: never fetched or older than `refresh` (`force` skips that), or
    /// `unknown_kid` and the last attempt is at least [`MIN_REFETCH`] old. Attempts are never closer than
    /// `min(refresh, MIN_REFETCH)`, failed ones included. One fetch at a time per issuer; a failure keeps the
    /// previous keys. With `unknown_kid` and no fetch due, waits for one in flight.
    async fn refresh_url(&self, force: bool, unknown_kid: bool) {
        let Source::Url { url, http, refresh, state, fetching } = self else { return };
        let due = || {
            let st = state.lock().expect("jwks lock");
            let since_attempt = st.attempted.map_or(Duration::MAX, |a| a.elapsed());
            let stale = force || st.fetched.is_none_or(|f| f.elapsed() >= *refresh);
            since_attempt >= (*refresh).min(MIN_REFETCH) && (stale || (unknown_kid && since_attempt >= MIN_REFETCH))
        };
        if !due() {
            // A fetch may be under way (the start-up prefetch, another request's): when the key is missing,
            // wait for it rather than refuse a token the fresh set would accept. Uncontended this is free.
            if unknown_kid {
                drop(fetching.lock().await);
            }
            return;
        }
        let _one = fetching.lock().await;
        // Another request may have fetched while this one waited.
        if !due() {
            return;
        }
        state.lock().expect("jwks lock").attempted = Some(Instant::now());
        let result = fetch(http, url).await;
        let mut st = state.lock().expect("jwks lock");
        match result {
            Ok(keys) => {
                tracing::debug!(target: "wharf::auth", url = %url, keys = keys.keys.len(), "JWKS fetched");
                st.keys = Arc::new(keys);
                st.fetched = Some(Instant::now());
            }
            Err(e) => tracing::warn!(
                target: "wharf::auth",
                url = %url,
                "JWKS fetch failed, keeping the previous keys ({} known): {e}",
                st.keys.keys.len()
            ),
        }
    }
}

/// GET the JWK Set, refusing bodies over [`MAX_JWKS_BYTES`].
async fn fetch(http: &reqwest::Client, url: &reqwest::Url) -> Result<KeySet, JwksError> {
    let fail = |e: reqwest::Error| JwksError::Fetch(e.without_url().to_string());
    let mut resp = http.get(url.clone()).header("accept", "application/json").send().await.map_err(fail)?;
    if !resp.status().is_success() {
        return Err(JwksError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(JwksError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::parse(&body)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::process::Command;

    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::KeyPair as _;
    use serde_json::{json, Value};

    use super::*;
    use crate::auth::AccessControl;
    use crate::config::Config;

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "wharf-test";
    const SUB: &str = "system:serviceaccount:ci:builder";

    /// A private key that signs test tokens, with its public JWK.
    struct Signer {
        kid: Option<String>,
        alg: Algorithm,
        key: EncodingKey,
        jwk: Value,
    }

    impl Signer {
        fn sign(&self, claims: &Value) -> String {
            let mut h = Header::new(self.alg);
            h.kid = self.kid.clone();
            jsonwebtoken::encode(&h, claims, &self.key).unwrap()
        }
    }

    fn ed(kid: &str) -> Signer {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Signer {
            kid: Some(kid.to_owned()),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}),
        }
    }

    /// An RSA key made by the openssl CLI, and its public key as PEM (for the HMAC confusion attack).
    fn rsa(dir: &Path, kid: &str) -> (Signer, Vec<u8>) {
        let pem = dir.join(format!("{kid}.pem"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let p = pem.to_str().unwrap();
        run(&["genrsa", "-out", p, "2048"]);
        let public = run(&["rsa", "-in", p, "-pubout"]);
        let modulus = String::from_utf8(run(&["rsa", "-in", p, "-noout", "-modulus"])).unwrap();
        let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let signer = Signer {
            kid: Some(kid.to_owned()),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
            jwk: json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB", "kid": kid, "use": "sig"}),
        };
        (signer, public)
    }

    fn claims(extra: Value) -> Value {
        let now = now_secs();
        let mut c = json!({"iss": ISS, "aud": AUD, "sub": SUB, "exp": now + 300, "iat": now,
                           "groups": ["builders", 7, "pushers"]});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn jwks(keys: &[&Signer]) -> String {
        json!({"keys": keys.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    fn entry(jwks_file: Option<PathBuf>, jwks_url: Option<String>) -> OidcConfig {
        OidcConfig {
            issuer: ISS.into(),
            audience: AUD.into(),
            jwks_file,
            jwks_url,
            groups_claim: Some("groups".into()),
            user_prefix: "k8s:".into(),
            ..Default::default()
        }
    }

    fn with_file(dir: &Path, keys: &[&Signer]) -> Oidc {
        let file = dir.join("jwks.json");
        std::fs::write(&file, jwks(keys)).unwrap();
        Oidc::from_config(&[entry(Some(file), None)]).unwrap()
    }

    async fn refused(o: &Oidc, jwt: &str, what: &str) {
        assert_eq!(o.verify(jwt).await, Err(AuthError::Invalid), "{what}");
    }

    #[tokio::test]
    async fn a_valid_token_becomes_the_prefixed_user_with_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (ed("k1"), ed("k2"));
        let o = with_file(dir.path(), &[&k1, &k2]);
        let c = o.verify(&k2.sign(&claims(json!({})))).await.unwrap().unwrap();
        assert_eq!(c, Caller::user(format!("k8s:{SUB}"), vec!["builders".into(), "pushers".into()]));
        assert!(c.grants.is_none(), "the [[access]] rules decide");
        // The audience may be one of several; a single-string groups claim is one group.
        let c = o.verify(&k1.sign(&claims(json!({"aud": ["other", AUD], "groups": "solo"})))).await.unwrap();
        assert_eq!(c.unwrap().groups, ["solo"]);
        // Within the 60 s leeway an expired token still passes.
        assert!(o.verify(&k1.sign(&claims(json!({"exp": now_secs() - 30})))).await.unwrap().is_some());
        // No kid: the only key that fits the algorithm.
        let only = with_file(dir.path(), &[&k1]);
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = None;
        let jwt = jsonwebtoken::encode(&h, &claims(json!({})), &k1.key).unwrap();
        assert!(only.verify(&jwt).await.unwrap().is_some(), "single key, no kid");
        refused(&o, &jwt, "no kid and two candidate keys").await;
        // Another username claim.
        let file = dir.path().join("jwks.json");
        let cfg = OidcConfig { username_claim: Some("email".into()), ..entry(Some(file), None) };
        let o = Oidc::from_config(&[cfg]).unwrap();
        let c = o.verify(&k1.sign(&claims(json!({"email": "ci@example.test"})))).await.unwrap().unwrap();
        assert_eq!(c.user.as_deref(), Some("k8s:ci@example.test"));
        refused(&o, &k1.sign(&claims(json!({}))), "username claim missing").await;
        assert!(!format!("{o:?}").contains("AAAA"), "Debug lists issuers only: {o:?}");
    }

    #[tokio::test]
    async fn a_wrong_signature_or_an_unknown_kid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = ed("k1");
        let o = with_file(dir.path(), &[&k1]);
        let forged = Signer { kid: Some("k1".into()), ..ed("k1") };
        refused(&o, &forged.sign(&claims(json!({}))), "another key under a known kid").await;
        refused(&o, &ed("k9").sign(&claims(json!({}))), "unknown kid").await;
        // Tampered payload with the original signature.
        let jwt = k1.sign(&claims(json!({})));
        let parts: Vec<&str> = jwt.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "admin"})).to_string());
        refused(&o, &format!("{}.{evil}.{}", parts[0], parts[2]), "tampered payload").await;
    }

    #[tokio::test]
    async fn audience_and_issuer_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = ed("k1");
        let o = with_file(dir.path(), &[&k1]);
        refused(&o, &k1.sign(&claims(json!({"aud": "someone-else"}))), "wrong audience").await;
        refused(&o, &k1.sign(&claims(json!({"aud": ["a", "b"]}))), "audience list without ours").await;
        refused(&o, &k1.sign(&claims(json!({"aud": null}))), "no audience").await;
        // Another issuer is not ours to judge: other verifiers get it.
        assert_eq!(o.verify(&k1.sign(&claims(json!({"iss": "https://elsewhere.test"})))).await, Ok(None));
        assert_eq!(o.verify(&k1.sign(&claims(json!({"iss": null})))).await, Ok(None));
        assert_eq!(o.verify("not-a-jwt").await, Ok(None));
        assert_eq!(o.verify("wharf_rt_abc.def.ghi").await, Ok(None));
    }

    #[tokio::test]
    async fn expired_future_and_exp_less_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = ed("k1");
        let o = with_file(dir.path(), &[&k1]);
        let now = now_secs();
        refused(&o, &k1.sign(&claims(json!({"exp": now - 120}))), "expired").await;
        refused(&o, &k1.sign(&claims(json!({"exp": null}))), "no exp").await;
        refused(&o, &k1.sign(&claims(json!({"nbf": now + 300}))), "nbf in the future").await;
        refused(&o, &k1.sign(&claims(json!({"iat": now + 300}))), "iat in the future").await;
        assert!(o.verify(&k1.sign(&claims(json!({"nbf": now + 30, "iat": now + 30})))).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (r1, public_pem) = rsa(dir.path(), "r1");
        let o = with_file(dir.path(), &[&r1]);
        assert!(o.verify(&r1.sign(&claims(json!({})))).await.unwrap().is_some(), "RS256 itself works");
        let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "none", "kid": "r1"})] {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            refused(&o, &format!("{h}.{payload}."), "alg none").await;
            // Without the third part it is not a JWT at all: left to other verifiers (which refuse it).
            assert_eq!(o.verify(&format!("{h}.{payload}")).await, Ok(None), "two parts");
        }
        // The classic confusion: HS256 with the issuer's public key as the HMAC secret.
        let n = URL_SAFE_NO_PAD.decode(r1.jwk["n"].as_str().unwrap()).unwrap();
        for secret in [public_pem.as_slice(), n.as_slice(), r1.jwk.to_string().as_bytes()] {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let hs = Signer { kid: Some("r1".into()), alg, key: EncodingKey::from_secret(secret), jwk: json!({}) };
                refused(&o, &hs.sign(&claims(json!({}))), "HMAC with public key bytes").await;
            }
        }
        // A JWK that names another algorithm than the token's is not used for it.
        let mut pinned = rsa(dir.path(), "r2").0;
        pinned.jwk["alg"] = json!("PS256");
        let o = with_file(dir.path(), &[&pinned]);
        refused(&o, &pinned.sign(&claims(json!({}))), "RS256 token, PS256 key").await;
        pinned.alg = Algorithm::PS256;
        assert!(o.verify(&pinned.sign(&claims(json!({})))).await.unwrap().is_some(), "PS256 with the PS256 key");
    }

    #[test]
    fn jwks_parsing_keeps_only_signature_keys() {
        let k1 = ed("k1");
        let mut enc = ed("enc");
        enc.jwk["use"] = json!("enc");
        let text = json!({"keys": [
            k1.jwk,
            enc.jwk,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k256"},
            {"kty": "weird"},
        ]});
        let set = KeySet::parse(text.to_string().as_bytes()).unwrap();
        assert_eq!(format!("{set:?}"), "[(Some(\"k1\"), Ed25519)]");
        assert!(matches!(
            KeySet::parse(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}"),
            Err(JwksError::NoUsableKey(1))
        ));
        assert!(matches!(KeySet::parse(b"<html>"), Err(JwksError::NotJwks(_))));
        assert!(matches!(KeySet::parse(b"{}"), Err(JwksError::NotJwks(_))));
        let dir = tempfile::tempdir().unwrap();
        let e = load_jwks_file(&dir.path().join("missing.json")).unwrap_err().to_string();
        assert!(e.contains("missing.json"), "{e}");
        let e = Oidc::from_config(&[entry(Some(dir.path().join("missing.json")), None)]).unwrap_err();
        assert!(e.starts_with("auth.oidc[0].jwks_file: ") && e.contains("missing.json"), "{e}");
    }

    #[tokio::test]
    async fn a_changed_jwks_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (ed("k1"), ed("k2"));
        let o = with_file(dir.path(), &[&k1]);
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks(&[&k2])).unwrap();
        // An unknown kid checks the file at once.
        assert!(o.verify(&k2.sign(&claims(json!({})))).await.unwrap().is_some(), "new key picked up");
        // A broken file keeps the previous keys.
        std::fs::write(&file, "{ not json").unwrap();
        tokio::time::sleep(FILE_CHECK_EVERY + Duration::from_millis(50)).await;
        assert!(o.verify(&k2.sign(&claims(json!({})))).await.unwrap().is_some(), "kept after a bad write");
        // Known kids look at the file at most every second; then the new set replaces the old one.
        std::fs::write(&file, jwks(&[&k1])).unwrap();
        tokio::time::sleep(FILE_CHECK_EVERY + Duration::from_millis(50)).await;
        refused(&o, &k2.sign(&claims(json!({}))), "removed key").await;
        assert!(o.verify(&k1.sign(&claims(json!({})))).await.unwrap().is_some());
    }

    /// A JWKS endpoint on 127.0.0.1 whose answer the test changes; counts requests.
    struct JwksServer {
        url: String,
        body: Arc<Mutex<(u16, Vec<u8>)>>,
        hits: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn jwks_server(body: &str) -> JwksServer {
        use axum::response::IntoResponse;
        let state = Arc::new(Mutex::new((200u16, body.as_bytes().to_vec())));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, h) = (state.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = s.lock().unwrap().clone();
                    (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { url, body: state, hits }
    }

    impl JwksServer {
        fn set(&self, status: u16, body: impl Into<Vec<u8>>) {
            *self.body.lock().unwrap() = (status, body.into());
        }
        fn hits(&self) -> usize {
            self.hits.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Pretend the last fetch attempt (and success) happened `ago`.
    fn age(o: &Oidc, ago: Duration) {
        let Source::Url { state, .. } = &o.issuers[0].source else { panic!("url source") };
        let mut st = state.lock().unwrap();
        let then = Instant::now() - ago;
        st.attempted = Some(then);
        st.fetched = st.fetched.map(|_| then);
    }

    #[tokio::test]
    async fn jwks_url_is_cached_refreshed_and_refetched_for_unknown_kids_at_most_every_30s() {
        let (k1, k2, k3) = (ed("k1"), ed("k2"), ed("k3"));
        let srv = jwks_server(&jwks(&[&k1])).await;
        let o = Oidc::from_config(&[entry(None, Some(srv.url.clone()))]).unwrap();
        // A login during the start-up fetch waits for it instead of failing on the still-empty key set.
        let jwt = k1.sign(&claims(json!({})));
        let (_, first) = tokio::join!(o.prefetch(), o.verify(&jwt));
        assert!(first.unwrap().is_some(), "login racing the prefetch");
        for _ in 0..3 {
            assert!(o.verify(&k1.sign(&claims(json!({})))).await.unwrap().is_some());
        }
        assert_eq!(srv.hits(), 1, "fetched once, then cached");
        // Rotation: an unknown kid right after a fetch waits for the 30 s throttle...
        srv.set(200, jwks(&[&k1, &k2]));
        refused(&o, &k2.sign(&claims(json!({}))), "unknown kid within 30 s").await;
        assert_eq!(srv.hits(), 1);
        // ...and then triggers one fetch.
        age(&o, MIN_REFETCH);
        assert!(o.verify(&k2.sign(&claims(json!({})))).await.unwrap().is_some(), "rotated key");
        assert_eq!(srv.hits(), 2);
        refused(&o, &k3.sign(&claims(json!({}))), "made-up kid").await;
        assert_eq!(srv.hits(), 2, "made-up kids do not make Wharf hammer the issuer");
        // A failed refresh (error status, oversized body, garbage) keeps the previous keys.
        for (status, body) in [(500, b"oops".to_vec()), (200, vec![b' '; MAX_JWKS_BYTES + 1]), (200, b"[]".to_vec())] {
            srv.set(status, body);
            age(&o, DEFAULT_REFRESH);
            assert!(o.verify(&k2.sign(&claims(json!({})))).await.unwrap().is_some(), "kept after HTTP {status}");
        }
        assert_eq!(srv.hits(), 5);
        // The periodic refresh drops a removed key.
        srv.set(200, jwks(&[&k2]));
        age(&o, DEFAULT_REFRESH);
        assert!(o.verify(&k2.sign(&claims(json!({})))).await.unwrap().is_some());
        age(&o, MIN_REFETCH);
        refused(&o, &k1.sign(&claims(json!({}))), "retired key").await;
    }

    const DEFAULT_REFRESH: Duration = Duration::from_secs(crate::config::auth::DEFAULT_JWKS_REFRESH_SECS);

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    #[tokio::test]
    async fn authenticate_takes_bearer_and_basic_password_tokens_and_merges_groups() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = ed("k1");
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, jwks(&[&k1])).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, format!("alice:{}\n", bcrypt::hash("right", 4).unwrap())).unwrap();
        let text = format!(
            "[auth]\nhtpasswd = {:?}\n[auth.groups]\nops = [\"k8s:{SUB}\"]\n\
             [[auth.oidc]]\nissuer = {ISS:?}\naudience = {AUD:?}\njwks_file = {:?}\n\
             groups_claim = \"groups\"\nuser_prefix = \"k8s:\"\n",
            users.to_str().unwrap(),
            file.to_str().unwrap()
        );
        let config = Config::parse(&text, Path::new("f")).unwrap();
        assert_eq!(config.validate(), Vec::new());
        let ac = AccessControl::from_config(&config).unwrap().unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let jwt = k1.sign(&claims(json!({})));
        let want = Caller::user(format!("k8s:{SUB}"), vec!["builders".into(), "pushers".into(), "ops".into()]);
        for header in [format!("Bearer {jwt}"), format!("bearer  {jwt}"), basic("anything", &jwt), basic("x", &jwt)] {
            assert_eq!(ac.authenticate(Some(header.as_bytes()), Some(ip)).await.as_ref(), Ok(&want), "{header:.12}");
        }
        // htpasswd users still log in; a password that is not a JWT never reaches the OIDC verifier.
        let alice = ac.authenticate(Some(basic("alice", "right").as_bytes()), Some(ip)).await.unwrap();
        assert_eq!(alice.user.as_deref(), Some("alice"));
        // A JWT from an unknown issuer is not a login; a bad token counts as a failed login.
        let other = k1.sign(&claims(json!({"iss": "https://elsewhere.test"})));
        let bad = k1.sign(&claims(json!({"aud": "nope"})));
        for header in [format!("Bearer {other}"), basic("x", &other), format!("Bearer {bad}"), basic("x", &bad)] {
            assert_eq!(ac.authenticate(Some(header.as_bytes()), Some(ip)).await, Err(AuthError::Invalid));
        }
        for _ in 0..super::super::limiter::MAX_FAILURES - 4 {
            let _ = ac.authenticate(Some(format!("Bearer {bad}").as_bytes()), Some(ip)).await;
        }
        assert!(matches!(
            ac.authenticate(Some(format!("Bearer {jwt}").as_bytes()), Some(ip)).await,
            Err(AuthError::RateLimited { .. })
        ));
        assert!(!format!("{ac:?}").contains(&jwt[..20]));
    }
}
