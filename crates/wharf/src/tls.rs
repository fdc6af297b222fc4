//! HTTPS for the listener (`[server.tls]`): rustls with the ring provider (the one the outbound client already
//! uses, so the binary carries one TLS stack), HTTP/2 or HTTP/1.1 chosen by ALPN, and mutual TLS whose verified
//! client certificate becomes a [`ClientIdentity`] on every request of that connection.
//!
//! Rotation: cert-manager and friends replace the files (often by swapping a symlinked directory). A background
//! task polls the files' inode, size and mtime; when they change, the whole TLS configuration (certificate, key
//! and client CA) is rebuilt and swapped in for *new* handshakes. Open connections keep the session they
//! negotiated, so nothing is dropped. A pair that does not load (half-written, key not matching) is logged and
//! the previous configuration stays in use.
//!
//! Handshakes run in their own tasks with a time limit, so a slow or silent client never holds up `accept`.
//!
//! May import: `config`, axum, rustls. Used by `app` (to serve) and `api` (to read the identity).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigIssue, TlsConfig};

/// A handshake that has not finished after this long is dropped (a client that connects and says nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, `accept` waits (bounded memory under a connection flood).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Who a client proved to be with its certificate (mutual TLS). Present as a request extension only when a
/// client certificate was presented and verified against `client_ca_file`; the access rules map it to a user.
/// It is not a secret, so it appears in the access log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientIdentity {
    /// The subject's common name (`CN=`), if any.
    pub common_name: Option<String>,
    /// Subject alternative names, as `DNS:name`, `IP:addr`, `URI:uri` or `email:addr`.
    pub sans: Vec<String>,
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(cn) = &self.common_name {
            parts.push(format!("CN={cn}"));
        }
        parts.extend(self.sans.iter().cloned());
        if parts.is_empty() {
            f.write_str("(certificate without names)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The facts of a certificate worth logging (serial, validity) and the names a client identity is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertFacts {
    /// Serial number in upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject alternative names (see [`ClientIdentity::sans`]).
    pub sans: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertFacts {
    /// Parse an X.509 certificate (DER); `None` when it is not one this reader understands.
    pub fn parse(der: &[u8]) -> Option<CertFacts> {
        der::certificate(der)
    }
}

/// A loaded TLS configuration, ready for handshakes.
pub struct Loaded {
    /// The rustls configuration (certificate, key, client verifier, ALPN).
    pub config: Arc<ServerConfig>,
    /// Facts of the server certificate, when it could be parsed.
    pub cert: Option<CertFacts>,
    /// Problems that do not stop serving (an expired or not-yet-valid certificate).
    pub warnings: Vec<ConfigIssue>,
    /// The files' identity taken before they were read, so a change while loading is seen by the next poll.
    seen: Fingerprint,
}

fn issue(key: &str, file: &Path, reason: impl fmt::Display) -> ConfigIssue {
    ConfigIssue { key: format!("server.tls.{key}"), reason: format!("{}: {reason}", file.display()) }
}

fn read(key: &str, file: &Path) -> Result<Vec<u8>, ConfigIssue> {
    std::fs::read(file).map_err(|e| issue(key, file, format!("cannot read it: {e}")))
}

fn read_certs(key: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigIssue> {
    let pem = read(key, file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| issue(key, file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(issue(key, file, "no CERTIFICATE block in the PEM file"));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, ConfigIssue> {
    let pem = read("key_file", file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => issue(
            "key_file",
            file,
            "no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block) in the PEM file",
        ),
        e => issue("key_file", file, format!("not valid PEM: {e}")),
    })
}

fn read_client_verifier(
    file: &Path,
    required: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ConfigIssue> {
    let certs = read_certs("client_ca_file", file)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(issue("client_ca_file", file, "no usable CA certificate in the file"));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| issue("client_ca_file", file, e))
}

/// Read and check every file of `[server.tls]` and build the rustls configuration. Every problem is reported
/// (each naming its key and file), not only the first.
pub fn load(cfg: &TlsConfig) -> Result<Loaded, Vec<ConfigIssue>> {
    let seen = fingerprint(cfg);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("cert_file", &cfg.cert_file);
    let key = read_key(&cfg.key_file);
    let verifier = cfg
        .client_ca_file
        .as_deref()
        .map(|f| read_client_verifier(f, cfg.client_cert_required(), &provider))
        .transpose();
    let (certs, key, verifier) = match (certs, key, verifier) {
        (Ok(c), Ok(k), Ok(v)) => (c, k, v),
        (c, k, v) => return Err([c.err(), k.err(), v.err()].into_iter().flatten().collect()),
    };
    let facts = CertFacts::parse(&certs[0]);
    let mut warnings = Vec::new();
    match &facts {
        None => {
            warnings.push(issue("cert_file", &cfg.cert_file, "the certificate could not be parsed to check its dates"))
        }
        Some(f) => {
            let now = unix_now();
            if f.not_after < now {
                warnings.push(issue(
                    "cert_file",
                    &cfg.cert_file,
                    format!("the certificate expired on {}; clients will refuse it", date(f.not_after)),
                ));
            } else if f.not_before > now {
                warnings.push(issue(
                    "cert_file",
                    &cfg.cert_file,
                    format!("the certificate is not valid before {}; clients will refuse it", date(f.not_before)),
                ));
            }
        }
    }
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![issue("cert_file", &cfg.cert_file, e)])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("the private key does not match the certificate in cert_file ({})", cfg.cert_file.display())
            }
            e => format!("unusable key or certificate: {e}"),
        };
        vec![issue("key_file", &cfg.key_file, reason)]
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded { config: Arc::new(config), cert: facts, warnings, seen })
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for log lines and messages (also `wharf token list`'s dates).
pub fn date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = der::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Identity of the files: a change of any part means the file was rewritten or swapped.
type Fingerprint = Vec<Option<(u64, u64, Option<SystemTime>, u64)>>;

fn fingerprint(cfg: &TlsConfig) -> Fingerprint {
    let files = [Some(&cfg.cert_file), Some(&cfg.key_file), cfg.client_ca_file.as_ref()];
    files
        .into_iter()
        .flatten()
        .map(|f| {
            // `metadata` follows symlinks, so swapping a symlinked directory shows up as a new inode.
            let m = std::fs::metadata(f).ok()?;
            #[cfg(unix)]
            let (dev, ino) = {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            };
            #[cfg(not(unix))]
            let (dev, ino) = (0, 0);
            Some((dev, ino, m.modified().ok(), m.len()))
        })
        .collect()
}

/// The configuration new handshakes use; replaced by the reload task.
#[derive(Clone)]
struct Current(Arc<RwLock<Arc<ServerConfig>>>);

impl Current {
    fn get(&self) -> Arc<ServerConfig> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

fn log_loaded(loaded: &Loaded, what: &str) {
    for w in &loaded.warnings {
        tracing::warn!(target: "wharf::tls", "{w}");
    }
    match &loaded.cert {
        Some(c) => tracing::info!(
            target: "wharf::tls",
            serial = %c.serial,
            subject = c.common_name.as_deref().unwrap_or(""),
            not_after = %date(c.not_after),
            "{what}"
        ),
        None => tracing::info!(target: "wharf::tls", "{what}"),
    }
}

/// Poll the files; on a change, load them and swap the configuration, or keep the old one if they are bad.
async fn reload_loop(cfg: TlsConfig, current: Current, mut seen: Fingerprint) {
    let mut tick = tokio::time::interval(cfg.reload_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = fingerprint(&cfg);
        if now == seen {
            continue;
        }
        seen = now;
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || load(&c)).await {
            Ok(Ok(loaded)) => {
                seen = loaded.seen.clone();
                current.set(loaded.config.clone());
                log_loaded(&loaded, "TLS certificate reloaded; new connections use it");
            }
            Ok(Err(issues)) => {
                for i in issues {
                    tracing::error!(target: "wharf::tls", "TLS files changed but cannot be used, keeping the previous certificate: {i}");
                }
            }
            Err(e) => tracing::error!(target: "wharf::tls", "TLS reload failed: {e}"),
        }
    }
}

/// The remote end of a TLS connection: its address and, with mutual TLS, its verified identity. This is the
/// listener's address type, so axum hands it to every request as `ConnectInfo<TlsPeer>`.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's socket address (the listener's own address for [`axum::serve::Listener::local_addr`]).
    pub addr: SocketAddr,
    /// The verified client certificate's names, if one was presented.
    pub identity: Option<ClientIdentity>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A listener that yields connections whose TLS handshake has completed.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TlsListener {
    /// Start accepting on `tcp` with `loaded`, and watch `cfg`'s files for changes. Must run inside the runtime.
    pub fn new(tcp: TcpListener, cfg: &TlsConfig, loaded: Loaded) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let seen = loaded.seen.clone();
        log_loaded(&loaded, "TLS enabled (HTTP/2 and HTTP/1.1 by ALPN)");
        let current = Current(Arc::new(RwLock::new(loaded.config)));
        let (tx, rx) = mpsc::channel(64);
        let tasks = vec![
            tokio::spawn(accept_loop(tcp, current.clone(), tx)),
            tokio::spawn(reload_loop(cfg.clone(), current, seen)),
        ];
        Ok(TlsListener { rx, local, tasks })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long a closed connection keeps reading what the client still sends (see [`Lingering`]).
const LINGER_FOR: Duration = Duration::from_secs(2);

/// Connections lingering right now: graceful shutdown waits for them before the process exits.
static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A served TLS connection that closes gently. When the server is done with it (a response finished, the
/// keep-alive ended, graceful shutdown), the socket must not be closed while the client is still sending
/// (an HTTP/2 client keeps sending WINDOW_UPDATE frames while it reads the last body): data arriving at a
/// closed socket makes the kernel answer with a reset, and the client then loses the response bytes it had
/// received but not yet read. So the connection sends close_notify and FIN, then reads and discards until
/// the client closes too (at most [`LINGER_FOR`]), in a task of its own.
pub struct Lingering {
    inner: Option<TlsStream<TcpStream>>,
}

impl Lingering {
    fn stream(&mut self) -> std::pin::Pin<&mut TlsStream<TcpStream>> {
        std::pin::Pin::new(self.inner.as_mut().expect("present until dropped"))
    }
}

impl tokio::io::AsyncRead for Lingering {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Lingering {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut s), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else { return };
        LINGERING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout(LINGER_FOR, async {
                let _ = s.shutdown().await;
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            LINGERING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
}

/// Wait until no connection lingers (or [`LINGER_FOR`] passed): the last responses reach their clients.
async fn lingering_done() {
    let deadline = tokio::time::Instant::now() + LINGER_FOR + Duration::from_millis(200);
    while LINGERING.load(std::sync::atomic::Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Lingering;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some((tls, peer)) => (Lingering { inner: Some(tls) }, peer),
            // The accept task only ends when the listener is dropped; never hand out a connection again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer { addr: self.local, identity: None })
    }
}

/// Errors from `accept` that concern one connection only (the peer reset it before we took it).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn accept_loop(tcp: TcpListener, current: Current, tx: mpsc::Sender<(TlsStream<TcpStream>, TlsPeer)>) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, addr) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(target: "wharf::tls", "accept failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(current.get());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| {
                        let facts = CertFacts::parse(c).unwrap_or_default();
                        ClientIdentity { common_name: facts.common_name, sans: facts.sans }
                    });
                    let _ = tx.send((tls, TlsPeer { addr, identity })).await;
                }
                Ok(Err(e)) => {
                    let cert_problem = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).is_some_and(|e| {
                        matches!(e, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
                    });
                    if cert_problem {
                        tracing::info!(target: "wharf::tls", %addr, "TLS handshake refused: {e}");
                    } else {
                        tracing::debug!(target: "wharf::tls", %addr, "TLS handshake failed: {e}");
                    }
                }
                Err(_) => tracing::debug!(target: "wharf::tls", %addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Copy the connection's verified client identity into each request as a [`ClientIdentity`] extension.
async fn attach_identity(mut req: Request, next: Next) -> Response {
    if let Some(id) = req.extensions().get::<ConnectInfo<TlsPeer>>().and_then(|c| c.0.identity.clone()) {
        req.extensions_mut().insert(id);
    }
    next.run(req).await
}

/// Load `[server.tls]` when it is configured; the error names every bad key and file (for start-up, where
/// it ends the process with exit code 2).
pub fn load_configured(cfg: Option<&TlsConfig>) -> std::io::Result<Option<(TlsConfig, Loaded)>> {
    let Some(cfg) = cfg else { return Ok(None) };
    match load(cfg) {
        Ok(loaded) => Ok(Some((cfg.clone(), loaded))),
        Err(issues) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        )),
    }
}

/// The bound listener: plain HTTP (the default) or TLS.
pub enum Listening {
    /// Plain HTTP.
    Plain(TcpListener),
    /// HTTPS with the loaded configuration.
    Tls(TlsListener),
}

impl Listening {
    /// Wrap `tcp` in TLS when `tls` is given (see [`load_configured`]). Must run inside the runtime.
    pub fn new(tcp: TcpListener, tls: Option<(TlsConfig, Loaded)>) -> std::io::Result<Listening> {
        Ok(match tls {
            Some((cfg, loaded)) => Listening::Tls(TlsListener::new(tcp, &cfg, loaded)?),
            None => Listening::Plain(tcp),
        })
    }

    /// Serve `router` until `shutdown`, then finish in-flight requests. Both kinds take the same graceful
    /// path: axum's server on hyper-util's HTTP/1.1 + HTTP/2 connection builder.
    pub async fn serve(
        self,
        router: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            Listening::Plain(tcp) => {
                let app = router.into_make_service_with_connect_info::<crate::auth::PeerAddr>();
                axum::serve(crate::zero_copy::Listener(tcp), app).with_graceful_shutdown(shutdown).await
            }
            Listening::Tls(tls) => {
                let app = router
                    .layer(axum::middleware::from_fn(attach_identity))
                    .into_make_service_with_connect_info::<TlsPeer>();
                let served = axum::serve(tls, app).with_graceful_shutdown(shutdown).await;
                lingering_done().await;
                served
            }
        }
    }
}

/// A small DER reader for the few certificate fields Wharf needs (serial, validity, subject CN, SANs). The
/// input has already been accepted by rustls or comes from the operator's own file; every read is bounds
/// checked and a malformed certificate yields `None`, never a panic.
mod der {
    use super::CertFacts;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

    /// One tag-length-value: `(tag, contents, rest)`.
    fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags do not occur in the fields read here
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize), &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, c, r) = next(input)?;
        (t == tag).then_some((c, r))
    }

    /// Every element of a constructed value.
    fn items(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            let (t, c, r) = next(input)?;
            input = r;
            Some((t, c))
        })
    }

    pub(super) fn certificate(der: &[u8]) -> Option<CertFacts> {
        let (cert, _) = expect(der, SEQUENCE)?;
        let (tbs, _) = expect(cert, SEQUENCE)?;
        let mut rest = tbs;
        if let Some((0xa0, _, r)) = next(rest) {
            rest = r; // explicit version
        }
        let (serial, r) = expect(rest, INTEGER)?;
        let (_signature, r) = expect(r, SEQUENCE)?;
        let (_issuer, r) = expect(r, SEQUENCE)?;
        let (validity, r) = expect(r, SEQUENCE)?;
        let (subject, r) = expect(r, SEQUENCE)?;
        let (_spki, mut rest) = expect(r, SEQUENCE)?;
        let (t1, nb, r) = next(validity)?;
        let (t2, na, _) = next(r)?;
        let mut facts = CertFacts {
            serial: serial_hex(serial),
            common_name: common_name(subject),
            sans: Vec::new(),
            not_before: time(t1, nb)?,
            not_after: time(t2, na)?,
        };
        while let Some((t, c, r)) = next(rest) {
            rest = r;
            if t == 0xa3 {
                facts.sans = sans(c)?;
            }
        }
        Some(facts)
    }

    fn serial_hex(bytes: &[u8]) -> String {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len().saturating_sub(1));
        bytes[start..].iter().map(|b| format!("{b:02X}")).collect()
    }

    fn common_name(subject: &[u8]) -> Option<String> {
        for (t, rdn) in items(subject) {
            if t != SET {
                continue;
            }
            for (_, atv) in items(rdn) {
                let Some((oid, r)) = expect(atv, OID) else { continue };
                if oid == OID_CN {
                    // UTF8String, PrintableString, T61String, IA5String (BMPString does not occur in practice).
                    let (tag, value, _) = next(r)?;
                    if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                        return Some(String::from_utf8_lossy(value).into_owned());
                    }
                }
            }
        }
        None
    }

    fn sans(extensions: &[u8]) -> Option<Vec<String>> {
        let (list, _) = expect(extensions, SEQUENCE)?;
        for (_, ext) in items(list) {
            let Some((oid, mut r)) = expect(ext, OID) else { continue };
            if oid != OID_SAN {
                continue;
            }
            if let Some((0x01, _, after)) = next(r) {
                r = after; // critical flag
            }
            let (value, _) = expect(r, OCTET_STRING)?;
            let (names, _) = expect(value, SEQUENCE)?;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            return Some(
                items(names)
                    .filter_map(|(t, c)| match t {
                        0x81 => Some(format!("email:{}", text(c))),
                        0x82 => Some(format!("DNS:{}", text(c))),
                        0x86 => Some(format!("URI:{}", text(c))),
                        0x87 => match c.len() {
                            4 => Some(format!("IP:{}", std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]))),
                            16 => {
                                let b: [u8; 16] = c.try_into().ok()?;
                                Some(format!("IP:{}", std::net::Ipv6Addr::from(b)))
                            }
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect(),
            );
        }
        Some(Vec::new())
    }

    /// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
    fn time(tag: u8, value: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (tag, s.len()) {
            (0x17, 12) => {
                let yy: i64 = s[..2].parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
            _ => return None,
        };
        let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
        let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
            return None;
        }
        Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The inverse of [`days_from_civil`].
    pub(super) fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `openssl req -x509 -newkey ec ... -subj "/O=Wharf Test/CN=ci-runner" -set_serial 0x0A1B2C3D
    /// -addext "subjectAltName=DNS:runner.example,IP:10.1.2.3,URI:spiffe://wharf/ci,email:ci@example.org"`.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB3TCCAYOgAwIBAgIEChssPTAKBggqhkjOPQQDAjApMRMwEQYDVQQKDApXaGFy
ZiBUZXN0MRIwEAYDVQQDDAljaS1ydW5uZXIwHhcNMjYxMjAxMDA0OTA0WhcNMzYx
MTI4MDA0OTA0WjApMRMwEQYDVQQKDApXaGFyZiBUZXN0MRIwEAYDVQQDDAljaS1y
dW5uZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASzQ5mh4NZteIXVCyWz/lel
bFS3/D15Otu+xrWzpc7w28dfHQjCBYKUZ65WAY7or56WyPcrh6BVTZH1YT8/5J2B
o4GYMIGVMB0GA1UdDgQWBBSIxJKD7VTWwj6GsTtLtnhXWy8hrzAfBgNVHSMEGDAW
gBSIxJKD7VTWwj6GsTtLtnhXWy8hrzAPBgNVHRMBAf8EBTADAQH/MEIGA1UdEQQ7
MDmCDnJ1bm5lci5leGFtcGxlhwQKAQIDhhFzcGlmZmU6Ly93aGFyZi9jaYEOY2lA
ZXhhbXBsZS5vcmcwCgYIKoZIzj0EAwIDSAAwRQIgLEekI9r31Nu/vA4F+oiyURwT
X/uvJPCb9ZIXUuW8QGsCIQDvZkQOlZxtJ5XWQC6htIh3vd9DTzwKuoVFs1M7jUIp
dQ==
-----END CERTIFICATE-----
";

    /// The key of [`CERT`] and an unrelated one (throw-away test keys).
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg9sYS5bIW9ns9FivH
FuvbNCRCeicpZ4jHazte+EsFpQOhRANCAASzQ5mh4NZteIXVCyWz/lelbFS3/D15
Otu+xrWzpc7w28dfHQjCBYKUZ65WAY7or56WyPcrh6BVTZH1YT8/5J2B
-----END PRIVATE KEY-----
";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIuxDd5QwqLcjw94s
qT0mW2JcRTbaTiXUjQPsas26FfShRANCAAQwiBBTTYmD6od+ayVJGo357T316zHH
LCjvZqkOks5ryZIKPLaVCsF5eHM+7h0nzPWk+OV0iDm9eiYMsEikz8sK
-----END PRIVATE KEY-----
";

    fn der() -> Vec<u8> {
        CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn reads_serial_dates_and_names() {
        let f = CertFacts::parse(&der()).expect("parses");
        assert_eq!(f.serial, "0A1B2C3D");
        assert_eq!(f.common_name.as_deref(), Some("ci-runner"), "the CN, not the O of the same subject");
        assert_eq!(f.sans, ["DNS:runner.example", "IP:10.1.2.3", "URI:spiffe://wharf/ci", "email:ci@example.org"]);
        // `openssl x509 -dates`: notBefore=Dec 1 00:49:04 2026 GMT, notAfter=Nov 28 00:49:04 2036 GMT.
        assert_eq!((f.not_before, f.not_after), (1_796_086_144, 2_111_446_144));
        assert_eq!(date(f.not_after), "2036-11-28 00:49:04 UTC");
        let id = ClientIdentity { common_name: f.common_name, sans: f.sans[..1].to_vec() };
        assert_eq!(id.to_string(), "CN=ci-runner,DNS:runner.example");
    }

    #[test]
    fn malformed_certificates_give_none_not_a_panic() {
        let d = der();
        for cut in 0..d.len() {
            assert_eq!(CertFacts::parse(&d[..cut]), None, "truncated at {cut}");
        }
        let mut bad_len = d.clone();
        bad_len[1] = 0x84; // claims a 4-byte length far past the end
        assert_eq!(CertFacts::parse(&bad_len), None);
        assert_eq!(CertFacts::parse(&[]), None);
        assert_eq!(CertFacts::parse(&[0x1f, 0x00]), None);
    }

    #[test]
    fn load_names_key_file_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("empty.pem"), "").unwrap();
        std::fs::write(p("cert.pem"), CERT).unwrap();
        std::fs::write(p("key.pem"), KEY).unwrap();
        std::fs::write(p("other.pem"), OTHER_KEY).unwrap();
        let cfg = |cert: &str, key: &str, ca: Option<&str>| TlsConfig {
            cert_file: p(cert),
            key_file: p(key),
            client_ca_file: ca.map(p),
            client_auth: None,
            reload_interval_secs: None,
        };
        let msgs = |c: TlsConfig| -> Vec<String> { load(&c).err().unwrap().iter().map(|i| i.to_string()).collect() };
        let m = msgs(cfg("missing.pem", "empty.pem", Some("cert.pem")));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with("server.tls.cert_file: ") && m[0].contains("missing.pem") && m[0].contains("cannot read")
        );
        assert!(
            m[1].starts_with("server.tls.key_file: ") && m[1].contains("empty.pem") && m[1].contains("no private key")
        );
        let m = msgs(cfg("empty.pem", "empty.pem", Some("empty.pem")));
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("no CERTIFICATE block"), "{m:?}");
        assert!(m[2].starts_with("server.tls.client_ca_file: "), "{m:?}");
        let m = msgs(cfg("cert.pem", "other.pem", None));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("server.tls.key_file: ") && m[0].contains("does not match"), "{m:?}");

        let ok = load(&cfg("cert.pem", "key.pem", Some("cert.pem"))).map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(ok.config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(ok.cert.unwrap().serial, "0A1B2C3D");
    }
}
