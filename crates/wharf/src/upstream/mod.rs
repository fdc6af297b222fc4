//! The outbound OCI client shared by the mirror (and later sync, federation and verification).
//!
//! It speaks to one configured registry: Bearer-token and Basic auth from `WWW-Authenticate` challenges
//! (tokens cached per scope), rustls with the system roots plus configured CAs, `HTTPS_PROXY`/`NO_PROXY`,
//! redirects to blob CDNs (reqwest drops `Authorization` when the host changes; a redirect target's own auth
//! challenge is never answered, so credentials and tokens stay with the configured origin), retries with
//! backoff on 429/5xx honouring `Retry-After`, a concurrency limit and a circuit breaker. Every manifest it
//! returns is checked against its digest here; blob streams are checked by whoever stores them (hashing while
//! writing). Every other body it reads has a size cap, and tag-list pagination a page limit, so a broken or
//! hostile upstream costs bounded memory and time.
//!
//! May import: `oci`, `config` (its own table), reqwest. Must not import `store`, `service` or `api`.

pub mod auth;
pub mod breaker;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use oci::{Descriptor, Digest, Manifest, MediaType, RefSpec, RepoName};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Semaphore;

use self::auth::{parse_challenge, Challenge, TokenCache, TokenResponse};
use self::breaker::{Breaker, Health};
use crate::config::upstream::UpstreamConfig;
/// Bytes of a blob as they arrive from the upstream (the crate's one byte-stream type).
pub use crate::stream::ByteStream;

/// Largest manifest accepted from an upstream: the same limit as for pushes, defined once in `oci`.
const MAX_MANIFEST: usize = oci::MAX_MANIFEST_BYTES;

/// Largest token-endpoint answer read: a JSON document holding one token (real ones are a few KiB, even
/// with large JWTs), so anything bigger is a broken or hostile endpoint.
pub const MAX_TOKEN_BODY: usize = 64 * 1024;

/// Largest page of a tag list read: 4 MiB holds over 30,000 tags of the longest legal length, far more than
/// registries put on one page.
pub const MAX_TAG_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most bytes of tag-list pages read for one listing, across pages: bounds the memory of one listing.
pub const MAX_TAG_LIST_BYTES: usize = 64 * 1024 * 1024;

/// Most tag-list pages followed through `Link` headers: an upstream whose chain never ends (or loops through
/// ever-new URLs) stops with an error instead of being followed forever. At the usual 100 tags per page this
/// is 100,000 tags.
pub const MAX_TAG_PAGES: usize = 1000;

/// Largest referrers-API answer read: it is an image index, so it gets the manifest limit.
pub const MAX_REFERRERS_BYTES: usize = oci::MAX_MANIFEST_BYTES;

/// Most bytes of an upstream's error body quoted in an error message (the rest is dropped, not read).
pub const MAX_ERROR_BODY: usize = 4 * 1024;

/// Longest gap between two requests that `requests_per_second` can ask for; keeps the pacing arithmetic in
/// range for absurdly small rates.
const MAX_PACE_GAP: Duration = Duration::from_secs(3600);

/// Redirects followed for one request (CDN hops); more means a loop.
const MAX_REDIRECTS: usize = 10;

/// Lock a mutex of this module's caches and counters, recovering from poison: the data they guard (tokens,
/// breaker counts, the pacing slot) is valid after any partial update, and a panic elsewhere must never take
/// an upstream down until restart.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read a whole response body, refusing more than `limit` bytes (from `Content-Length` up front, or while
/// reading when the upstream sends none or lies). `what` names the body in the error.
async fn read_capped(resp: Response, limit: usize, what: &str) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::TooLarge { what: what.to_owned(), limit };
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Unavailable(format!("reading {what}: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The start of an error body, for messages: at most [`MAX_ERROR_BODY`] bytes are read.
async fn error_text(resp: Response) -> String {
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY - buf.len();
        if chunk.len() >= room {
            buf.extend_from_slice(&chunk[..room]);
            return format!("{} (truncated)", String::from_utf8_lossy(&buf));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Every manifest media type, so upstreams never convert what they serve.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// What can go wrong talking to an upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream says the manifest or blob does not exist.
    #[error("not found upstream")]
    NotFound,
    /// Credentials were rejected or access denied.
    #[error("upstream refused access (HTTP {status}): {message}")]
    Denied {
        /// HTTP status.
        status: u16,
        /// Detail.
        message: String,
        /// The request carried a token the registry issued (our credentials, or anonymous access, were
        /// accepted) and the registry still refused this repository: how registries such as Docker Hub say
        /// "no such repository" to a client that may not know. False when credentials themselves were
        /// refused (token endpoint, Basic auth), which is an outage the operator must see.
        name_refused: bool,
    },
    /// Network failure, timeout, 5xx or 429 after retries.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The circuit breaker is open after repeated failures.
    #[error("upstream skipped for {retry_in_secs}s more after repeated failures (circuit breaker open)")]
    CircuitOpen {
        /// Seconds until the next probe.
        retry_in_secs: u64,
    },
    /// Content did not hash to the digest it was served under.
    #[error("upstream served content for {expected} that hashes to {actual}")]
    DigestMismatch {
        /// Digest asked for or announced.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// The upstream answered something that is not a valid registry response.
    #[error("invalid upstream response: {0}")]
    Invalid(String),
    /// A response body was larger than Wharf reads for its kind (a broken or hostile upstream).
    #[error("upstream {what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// Which body (`token response from <realm>`, `tag list of <repo>`, ...).
        what: String,
        /// The cap, in bytes.
        limit: usize,
    },
}

impl UpstreamError {
    /// True for failures where serving a stale cached copy is the right answer.
    pub fn is_outage(&self) -> bool {
        !matches!(self, UpstreamError::NotFound)
    }
}

/// A blob response: its announced size and the byte stream.
pub struct BlobResponse {
    /// `Content-Length`, when the upstream sent one.
    pub size: Option<u64>,
    /// The bytes (not yet verified).
    pub body: ByteStream,
}

/// A manifest's identity as announced by a `HEAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Digest,
    /// `Content-Type`.
    pub media_type: Option<MediaType>,
}

/// One upstream registry.
pub struct Upstream {
    /// The registry host clients use for it.
    pub name: String,
    base: String,
    http: reqwest::Client,
    creds: Option<(String, String)>,
    tokens: TokenCache,
    wants_basic: AtomicBool,
    limit: Arc<Semaphore>,
    /// Blob streams have their own slots, so long downloads never starve manifest requests.
    blob_limit: Arc<Semaphore>,
    breaker: Breaker,
    timeout: Duration,
    max_attempts: u32,
    /// Minimum spacing between requests, and when the next one may go.
    pace: Option<(Duration, Mutex<Instant>)>,
    /// Last `ratelimit-remaining` seen (-1: never).
    ratelimit_remaining: AtomicI64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("url", &self.base).finish_non_exhaustive()
    }
}

fn header_str(h: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Same scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_str(h, RETRY_AFTER).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

impl Upstream {
    /// Build the client for one `[[upstream]]` table (reads the CA file and the password source).
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Upstream, String> {
        // Validation refuses this too; checked again here because credentials in the URL would be sent
        // with every request and shown wherever the URL is (logs, status pages).
        if reqwest::Url::parse(&cfg.url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
            return Err(
                "the url must not contain credentials (user:password@); use username and password, password_env \
                 or password_file"
                    .into(),
            );
        }
        // Follow CDN redirects, but never from https to http: reqwest keeps `Authorization` when only the
        // scheme changes on a non-default port, and a downgrade would expose it anyway.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade =
                attempt.previous().last().is_some_and(|p| p.scheme() == "https") && attempt.url().scheme() != "https";
            if downgrade {
                attempt.error("refusing to follow a redirect from https to plain http")
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .read_timeout(Duration::from_secs(cfg.timeout_secs))
            .redirect(redirects)
            .danger_accept_invalid_certs(cfg.insecure_skip_verify);
        if let Some(f) = &cfg.ca_file {
            let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", f.display()))? {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| e.to_string())?;
        let creds = cfg.username.clone().map(|u| (u, cfg.resolve_password().unwrap_or_default()));
        Ok(Upstream {
            name: cfg.name.clone(),
            base: cfg.url.trim_end_matches('/').to_owned(),
            http,
            creds,
            tokens: TokenCache::default(),
            wants_basic: AtomicBool::new(false),
            limit: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            blob_limit: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            breaker: Breaker::new(cfg.breaker_threshold, Duration::from_secs(cfg.breaker_open_secs)),
            timeout: Duration::from_secs(cfg.timeout_secs),
            max_attempts: cfg.max_attempts.max(1),
            pace: (cfg.requests_per_second > 0.0).then(|| {
                let gap = Duration::try_from_secs_f64(1.0 / cfg.requests_per_second).unwrap_or(MAX_PACE_GAP);
                (gap.min(MAX_PACE_GAP), Mutex::new(Instant::now()))
            }),
            ratelimit_remaining: AtomicI64::new(-1),
        })
    }

    /// The last `ratelimit-remaining` the upstream announced (Docker Hub's pull quota), if any.
    pub fn ratelimit_remaining(&self) -> Option<u64> {
        u64::try_from(self.ratelimit_remaining.load(Ordering::Relaxed)).ok()
    }

    /// Wait for the request-rate limit.
    async fn pace(&self) {
        let Some((gap, next)) = &self.pace else { return };
        let wait = {
            let mut next = lock(next);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + *gap;
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Circuit-breaker health for status views.
    pub fn health(&self) -> Health {
        self.breaker.health()
    }

    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<(), UpstreamError> {
        if self.base.starts_with("https://") && !realm.starts_with("https://") {
            return Err(UpstreamError::Denied {
                status: 401,
                message: format!("refusing to send credentials to the non-TLS token realm {realm}"),
                name_refused: false,
            });
        }
        let mut q: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            q.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&q).timeout(self.timeout);
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| UpstreamError::Unavailable(format!("token endpoint {realm}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(UpstreamError::Denied {
                status: status.as_u16(),
                message: format!("token endpoint {realm} refused"),
                name_refused: false,
            });
        }
        let bytes = read_capped(resp, MAX_TOKEN_BODY, &format!("token response from {realm}")).await?;
        let body: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Invalid(format!("token endpoint {realm}: {e}")))?;
        let (token, ttl) =
            body.into_token().ok_or_else(|| UpstreamError::Invalid(format!("token endpoint {realm} sent no token")))?;
        self.tokens.put(scope, token, ttl);
        Ok(())
    }

    /// Send a request with auth, retries and the breaker; the returned response has a non-401 status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        accept: Option<&str>,
        whole: bool,
    ) -> Result<Response, UpstreamError> {
        self.send_as(method, path, repo, "pull", accept, whole, None).await
    }

    /// [`Self::send`] with the scope's actions (`pull` or `pull,push`), and a small body with its content type.
    #[allow(clippy::too_many_arguments)]
    async fn send_as(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        actions: &str,
        accept: Option<&str>,
        whole: bool,
        body: Option<(&str, Bytes)>,
    ) -> Result<Response, UpstreamError> {
        if let Err(left) = self.breaker.allow() {
            return Err(UpstreamError::CircuitOpen { retry_in_secs: left.as_secs() });
        }
        let scope = format!("repository:{repo}:{actions}");
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut auth_answered = false;
        let mut attempt = 0;
        loop {
            self.pace().await;
            let mut req = self.http.request(method.clone(), &url);
            if let Some((ct, b)) = &body {
                req = req.header(CONTENT_TYPE, *ct).body(b.clone());
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if whole {
                req = req.timeout(self.timeout);
            }
            // Credentials and tokens stay with the registry they were configured for.
            let own_origin = same_origin(&self.base, &url);
            let token = if own_origin { self.tokens.get(&scope) } else { None };
            let sent_token = token.is_some();
            if let Some(t) = token {
                req = req.bearer_auth(t);
            } else if let (true, true, Some((u, p))) =
                (own_origin, self.wants_basic.load(Ordering::Relaxed), &self.creds)
            {
                req = req.basic_auth(u, Some(p));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let why = if e.is_timeout() { format!("timeout: {e}") } else { format!("{e}") };
                    self.breaker.failure(&why);
                    return Err(UpstreamError::Unavailable(why));
                }
            };
            let status = resp.status();
            if let Some(rem) = header_str(resp.headers(), "ratelimit-remaining")
                .and_then(|v| v.split(';').next()?.trim().parse::<i64>().ok())
            {
                self.ratelimit_remaining.store(rem, Ordering::Relaxed);
            }
            if status == StatusCode::UNAUTHORIZED && !same_origin(&self.base, resp.url().as_str()) {
                // A redirect target (a blob CDN, or any host the upstream sent us to) asks for credentials.
                // Answering would fetch a token with the upstream's credentials from a realm that host
                // chose, for that host: only the configured origin's challenges are honoured.
                self.breaker.success();
                let target = resp.url();
                return Err(UpstreamError::Denied {
                    status: status.as_u16(),
                    message: format!(
                        "{method} {path} was redirected to {}://{}, which asks for credentials; Wharf sends credentials only to {}",
                        target.scheme(),
                        target.host_str().unwrap_or("?"),
                        self.base
                    ),
                    name_refused: false,
                });
            }
            if status == StatusCode::UNAUTHORIZED && !auth_answered {
                auth_answered = true;
                let challenge = header_str(resp.headers(), WWW_AUTHENTICATE).and_then(parse_challenge);
                match challenge {
                    Some(Challenge::Bearer { realm, service, scope: asked }) => {
                        self.tokens.forget(&scope);
                        // Ask for our own pull scope under our cache key; registries echo what we ask.
                        let want = asked.filter(|s| s.contains(repo.as_str())).unwrap_or_else(|| scope.clone());
                        if let Err(e) = self.fetch_token(&realm, service.as_deref(), &want).await {
                            match &e {
                                UpstreamError::Unavailable(why) => self.breaker.failure(why),
                                _ => self.breaker.success(),
                            }
                            return Err(e);
                        }
                        if want != scope {
                            if let Some(t) = self.tokens.get(&want) {
                                self.tokens.put(&scope, t, Duration::from_secs(50));
                            }
                        }
                        continue;
                    }
                    Some(Challenge::Basic) if self.creds.is_some() => {
                        self.wants_basic.store(true, Ordering::Relaxed);
                        continue;
                    }
                    _ => {}
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                self.breaker.success();
                return Err(UpstreamError::Denied {
                    status: status.as_u16(),
                    message: format!("{method} {path}"),
                    name_refused: sent_token,
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                attempt += 1;
                if attempt < self.max_attempts {
                    let wait = retry_after(resp.headers())
                        .unwrap_or(Duration::from_millis(200).saturating_mul(2u32.saturating_pow(attempt)))
                        .min(Duration::from_secs(10));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let why = format!("HTTP {status} for {method} {path}");
                self.breaker.failure(&why);
                return Err(UpstreamError::Unavailable(why));
            }
            self.breaker.success();
            return Ok(resp);
        }
    }

    /// `HEAD` a manifest: the digest a tag points at now, or `None` when the upstream does not have it.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &RefSpec,
    ) -> Result<Option<ManifestHead>, UpstreamError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::HEAD, &path, repo, Some(ACCEPT_MANIFESTS), true).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let h = resp.headers();
                let media_type = header_str(h, CONTENT_TYPE).map(MediaType::parse);
                match header_str(h, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok()) {
                    Some(digest) => Ok(Some(ManifestHead { digest, media_type })),
                    None => {
                        drop(_permit);
                        // Some registries omit the header on HEAD: fall back to a GET, which we can verify.
                        let m = self.get_manifest(repo, reference).await?;
                        Ok(Some(ManifestHead { digest: m.digest, media_type: Some(m.media_type) }))
                    }
                }
            }
            s => Err(UpstreamError::Invalid(format!("HTTP {s} for HEAD {path}"))),
        }
    }

    /// `GET` a manifest, verified against the requested digest and the announced `Docker-Content-Digest`.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &RefSpec) -> Result<Manifest, UpstreamError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.send(Method::GET, &path, repo, Some(ACCEPT_MANIFESTS), true).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound),
            s if !s.is_success() => return Err(UpstreamError::Invalid(format!("HTTP {s} for GET {path}"))),
            _ => {}
        }
        let announced = header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        let content_type = header_str(resp.headers(), CONTENT_TYPE).map(MediaType::parse);
        let bytes = read_capped(resp, MAX_MANIFEST, &format!("manifest {path}")).await?;
        let expected = match reference {
            RefSpec::Digest(d) => Some(d.clone()),
            RefSpec::Tag(_) => announced.clone(),
        };
        let algo = expected.as_ref().map_or(oci::Algorithm::Sha256, Digest::algorithm);
        let manifest = Manifest::parse(bytes, content_type.as_ref(), algo)
            .map_err(|e| UpstreamError::Invalid(format!("{path}: {e}")))?;
        for want in [expected, announced].into_iter().flatten() {
            if want.algorithm() == manifest.digest.algorithm() && want != manifest.digest {
                return Err(UpstreamError::DigestMismatch { expected: want, actual: manifest.digest });
            }
        }
        Ok(manifest)
    }

    /// `HEAD` a blob: its size, or `None` when the upstream does not have it.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, UpstreamError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(Method::HEAD, &path, repo, None, true).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                Ok(Some(header_str(resp.headers(), CONTENT_LENGTH).and_then(|l| l.trim().parse().ok()).unwrap_or(0)))
            }
            s => Err(UpstreamError::Invalid(format!("HTTP {s} for HEAD {path}"))),
        }
    }

    /// `GET` a blob as a stream. The bytes are NOT verified here: the caller hashes while storing.
    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobResponse, UpstreamError> {
        let permit = self.blob_limit.clone().acquire_owned().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(Method::GET, &path, repo, None, false).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound),
            s if !s.is_success() => return Err(UpstreamError::Invalid(format!("HTTP {s} for GET {path}"))),
            _ => {}
        }
        let size = resp.content_length();
        let body = resp.bytes_stream().map_err(std::io::Error::other).map(move |item| {
            let _held = &permit; // the concurrency slot is released when the stream is dropped
            item
        });
        Ok(BlobResponse { size, body: Box::pin(body) })
    }

    /// Descriptors of the manifests whose subject is `digest`: the referrers API, or the referrers tag schema
    /// (`<alg>-<hex>` tag holding an index) for registries without it.
    pub async fn referrers(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Descriptor>, UpstreamError> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        let resp = {
            let _permit = self.limit.acquire().await.expect("semaphore never closed");
            self.send(Method::GET, &path, repo, Some("application/vnd.oci.image.index.v1+json"), true).await?
        };
        if resp.status().is_success() {
            let bytes = read_capped(resp, MAX_REFERRERS_BYTES, &format!("referrers list {path}")).await?;
            let index: oci::ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Invalid(format!("{path}: {e}")))?;
            return Ok(index.manifests);
        }
        // 404 (no such API), and the 400/405/501 some registries answer for unknown routes: use the tag schema.
        if !matches!(resp.status().as_u16(), 400 | 404 | 405 | 501) {
            return Err(UpstreamError::Invalid(format!("HTTP {} for GET {path}", resp.status())));
        }
        let fallback: oci::Tag = format!("{}-{}", digest.algorithm(), digest.hex()).parse().expect("valid tag");
        match self.get_manifest(repo, &RefSpec::Tag(fallback)).await {
            Ok(m) => match m.body {
                oci::ManifestBody::Index(i) => Ok(i.manifests),
                oci::ManifestBody::Image(_) => Ok(Vec::new()),
            },
            Err(UpstreamError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Push a blob (for sync destinations): `POST` a session, then `PUT` the streamed bytes with the digest.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), UpstreamError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp = self.send_as(Method::POST, &path, repo, "pull,push", None, true, None).await?;
        if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::CREATED {
            return Err(UpstreamError::Invalid(format!("HTTP {} for POST {path}", resp.status())));
        }
        let location = header_str(resp.headers(), "location")
            .ok_or_else(|| UpstreamError::Invalid(format!("POST {path} gave no Location")))?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{}", self.base, location)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        // The session already negotiated auth; a streamed body cannot be replayed, so this PUT is sent once.
        let mut req = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        if !same_origin(&self.base, &url) {
            // Credentials stay with the registry they were configured for.
        } else if let Some(t) = self.tokens.get(&format!("repository:{repo}:pull,push")) {
            req = req.bearer_auth(t);
        } else if let (true, Some((u, p))) = (self.wants_basic.load(Ordering::Relaxed), &self.creds) {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| UpstreamError::Unavailable(format!("PUT blob {digest}: {e}")))?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::ACCEPTED => Ok(()),
            s => Err(UpstreamError::Invalid(format!("HTTP {s} for PUT blob {digest}: {}", error_text(resp).await))),
        }
    }

    /// Push manifest bytes exactly as given.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &RefSpec,
        media_type: &MediaType,
        bytes: Bytes,
    ) -> Result<(), UpstreamError> {
        let _permit = self.limit.acquire().await.expect("semaphore never closed");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp =
            self.send_as(Method::PUT, &path, repo, "pull,push", None, true, Some((media_type.as_str(), bytes))).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
            s => Err(UpstreamError::Invalid(format!("HTTP {s} for PUT {path}: {}", error_text(resp).await))),
        }
    }

    /// All tags of a repository, following `Link` pagination: at most [`MAX_TAG_PAGES`] pages of at most
    /// [`MAX_TAG_PAGE_BYTES`] each (and [`MAX_TAG_LIST_BYTES`] in all); a `Link` back to a page already read
    /// is an error too. Only same-origin `Link`s are followed.
    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut path = format!("/v2/{repo}/tags/list");
        let mut seen = HashSet::new();
        let mut total = 0usize;
        for _ in 0..MAX_TAG_PAGES {
            seen.insert(path.clone());
            let resp = {
                let _permit = self.limit.acquire().await.expect("semaphore never closed");
                self.send(Method::GET, &path, repo, None, true).await?
            };
            match resp.status() {
                StatusCode::NOT_FOUND => return Err(UpstreamError::NotFound),
                s if !s.is_success() => return Err(UpstreamError::Invalid(format!("HTTP {s} for GET {path}"))),
                _ => {}
            }
            let next = header_str(resp.headers(), "link")
                .and_then(|l| l.split(';').next())
                .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>').to_owned());
            let limit = MAX_TAG_PAGE_BYTES.min(MAX_TAG_LIST_BYTES - total);
            let bytes = read_capped(resp, limit, &format!("tag list page {path}")).await.map_err(|e| match e {
                UpstreamError::TooLarge { .. } if limit < MAX_TAG_PAGE_BYTES => UpstreamError::TooLarge {
                    what: format!("tag list of {repo} (all pages together)"),
                    limit: MAX_TAG_LIST_BYTES,
                },
                e => e,
            })?;
            total += bytes.len();
            let page: TagList =
                serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Invalid(format!("{path}: {e}")))?;
            out.extend(page.tags.unwrap_or_default());
            path = match next {
                Some(n) if n.starts_with("/v2/") => n,
                Some(n) if same_origin(&self.base, &n) => match reqwest::Url::parse(&n) {
                    Ok(u) => format!("{}?{}", u.path(), u.query().unwrap_or("")),
                    Err(_) => return Ok(out),
                },
                _ => return Ok(out),
            };
            if seen.contains(&path) {
                return Err(UpstreamError::Invalid(format!(
                    "tag list of {repo}: the Link header leads back to {path}, a page already read"
                )));
            }
        }
        Err(UpstreamError::Invalid(format!(
            "tag list of {repo} has more than {MAX_TAG_PAGES} pages (the Link chain does not end); stopped"
        )))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn origins() {
        assert!(same_origin("https://reg.example.com", "https://reg.example.com:443/v2/x?n=1"));
        assert!(!same_origin("https://reg.example.com", "https://reg.example.com.evil.net/v2/x"));
        assert!(!same_origin("https://reg.example.com", "http://reg.example.com/v2/x"));
        assert!(!same_origin("http://127.0.0.1:5000", "http://127.0.0.1:5001/x"));
    }

    #[test]
    fn outage_classification() {
        assert!(!UpstreamError::NotFound.is_outage());
        assert!(UpstreamError::Unavailable("x".into()).is_outage());
        assert!(UpstreamError::CircuitOpen { retry_in_secs: 1 }.is_outage());
    }
}
