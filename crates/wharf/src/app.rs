//! Builds every service from the settings and runs the HTTP server (and the sync schedules) until a shutdown
//! signal.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, AppState};
use crate::config::upstream::UpstreamConfig;
use crate::config::Settings;
use crate::config::StorageBackend;
use crate::gc::Collector;
use crate::mirror::Mirror;
use crate::policy::routing::Router;
use crate::service::Registry;
use crate::store::fs::FsStore;
use crate::store::keys::Layout;
use crate::store::s3::{S3Settings, S3Store};
use crate::store::scratch::{ProcessDir, ServeLock};
use crate::store::{ContentStore, StoreError, UploadLimits};
use crate::sync::Syncer;
use crate::upstream::Upstream;

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An upstream client or sync entry could not be built (e.g. unreadable CA file).
    #[error("{0}")]
    Setup(String),
}

/// One shared client per `[[upstream]]`, in configuration order.
pub fn build_upstreams(configs: &[UpstreamConfig]) -> Result<Vec<Arc<Upstream>>, String> {
    configs
        .iter()
        .map(|c| Upstream::from_config(c).map(Arc::new).map_err(|e| format!("upstream {}: {e}", c.name)))
        .collect()
}

/// How a front door uses the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Writes content (`serve`, `wharf sync`): its own scratch folder, nothing of others removed.
    Write,
    /// Only reads (`wharf sync status`): creates, locks and deletes nothing.
    ReadOnly,
}

/// Upload limits from `[storage]` (validated with the rest of the file).
pub fn upload_limits(settings: &Settings) -> Result<UploadLimits, AppError> {
    let storage = &settings.config.storage;
    let expiry = storage.upload_expiry().map_err(|e| AppError::Setup(format!("storage.upload_expiry: {e}")))?;
    Ok(UploadLimits { expiry, max_open: storage.max_uploads, ..UploadLimits::default() })
}

/// Where the `[storage]` bucket is.
fn s3_settings(storage: &crate::config::StorageConfig) -> S3Settings {
    S3Settings {
        bucket: storage.bucket.clone().unwrap_or_default(),
        endpoint: storage.endpoint.clone(),
        region: storage.region.clone(),
        prefix: storage.prefix.clone().unwrap_or_default(),
        path_style: storage.path_style,
        credentials: storage.access_key_id.clone().zip(storage.secret_access_key.clone()),
        sign_payload: storage.sign_payload(),
    }
}

/// On object storage, find out whether the server honours conditional writes and say what replicas can
/// rely on: without them, two replicas moving one tag at the same moment both succeed.
async fn report_store_consistency(settings: &Settings) -> std::io::Result<()> {
    let storage = &settings.config.storage;
    if storage.backend != StorageBackend::S3 {
        return Ok(());
    }
    let probe = S3Store::connect(&s3_settings(storage), UploadLimits::default()).map_err(std::io::Error::other)?;
    match probe.honours_conditional_writes().await {
        Ok(true) => tracing::info!(
            "the object store honours conditional writes (If-None-Match). Conditional tag writes (If-Match, \
             If-None-Match, wharf tag set --expect) hold the tag's lease in the store: across replicas exactly one \
             of two racing writers wins; unconditional pushes of one tag: the last write wins"
        ),
        Ok(false) => tracing::warn!(
            "the object store ignores conditional writes (If-None-Match/If-Match), so nothing in it is \
             compare-and-swap. Wharf does not need it: conditional tag writes (If-Match, If-None-Match, wharf tag \
             set --expect) hold the tag's lease in the store (a timed claim, about 3 s per such write), so across \
             replicas exactly one of two racing writers wins; unconditional pushes of one tag through two \
             replicas at the same moment: the last write wins. Garbage collection and scrub run one at a time \
             through the same kind of lease."
        ),
        Err(e) => {
            return Err(std::io::Error::other(format!("the content store does not answer: {e}")));
        }
    }
    Ok(())
}

/// Open the configured content store: the data directory (default) or the S3 bucket of `[storage]`.
pub fn open_store(settings: &Settings, access: Access) -> Result<Arc<dyn ContentStore>, AppError> {
    let storage = &settings.config.storage;
    Ok(match (storage.backend, access) {
        (StorageBackend::Fs, Access::Write) => {
            Arc::new(FsStore::open_with(&settings.data_dir, upload_limits(settings)?)?)
        }
        (StorageBackend::Fs, Access::ReadOnly) => Arc::new(FsStore::open_read_only(&settings.data_dir)),
        (StorageBackend::S3, access) => {
            // The data directory still holds this process's scratch, spool files and locks.
            if access == Access::Write {
                std::fs::create_dir_all(&settings.data_dir)
                    .map_err(|source| StoreError::Io { path: settings.data_dir.display().to_string(), source })?;
            }
            Arc::new(S3Store::connect(&s3_settings(storage), upload_limits(settings)?).map_err(AppError::Setup)?)
        }
    })
}

/// How long a replica on object storage keeps a hosted manifest read (what other replicas write is seen
/// within this).
pub const READ_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Time to live of the garbage collector's and the scrub's leases on a shared (object storage) store.
pub const STORE_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The garbage collector for this configuration: `gc.lock` in the data directory, and on object storage the
/// store's `gc` lease too, so one collector runs among every replica on the bucket.
pub fn gc_collector(settings: &Settings, store: Arc<dyn ContentStore>, stats: Arc<crate::gc::GcStats>) -> Collector {
    let gc = Collector::new(store, Some(Layout::new(&settings.data_dir).gc_lock()), stats);
    match settings.config.storage.backend {
        StorageBackend::Fs => gc,
        StorageBackend::S3 => gc.with_lease(STORE_LEASE_TTL),
    }
}

/// The scrubber for this configuration: `scrub.lock` in the data directory, and on object storage the
/// store's `scrub` lease too (one pass at a time among every replica).
pub fn scrubber(
    settings: &Settings,
    store: Arc<dyn ContentStore>,
    stats: Arc<crate::scrub::ScrubStats>,
) -> crate::scrub::Scrubber {
    let s = crate::scrub::Scrubber::new(store, Some(Layout::new(&settings.data_dir).scrub_lock()), stats);
    match settings.config.storage.backend {
        StorageBackend::Fs => s,
        StorageBackend::S3 => s.with_lease(STORE_LEASE_TTL),
    }
}

/// The parts every front door (server, `wharf sync`) needs.
pub struct Core {
    /// The content store.
    pub store: Arc<dyn ContentStore>,
    /// Upstream clients, in configuration order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The sync engine over the configured `[[sync]]` entries.
    pub syncer: Arc<Syncer>,
}

impl Core {
    /// Open the store and build the upstream clients and the sync engine.
    pub fn build(settings: &Settings, access: Access) -> Result<Core, AppError> {
        let store = open_store(settings, access)?;
        let upstreams = build_upstreams(&settings.config.upstreams).map_err(AppError::Setup)?;
        let syncer = Syncer::new(store.clone(), &settings.config, &upstreams).map_err(AppError::Setup)?;
        Ok(Core { store, upstreams, syncer: Arc::new(syncer) })
    }
}

/// A running-ready application.
pub struct App {
    state: Arc<AppState>,
    settings: Settings,
    core: Core,
    /// This process's mirror spool folder (kept for the life of the server).
    _spool: Option<ProcessDir>,
    /// One server per data directory.
    _lock: ServeLock,
    /// `[[webhook]]` delivery, started by `serve`.
    webhooks: Option<(Arc<crate::events::Webhooks>, tokio::sync::mpsc::Receiver<crate::events::Event>)>,
}

/// The `[[tags]]` rules and `[history]` bound as the service applies them.
pub fn tag_policy(config: &crate::config::Config) -> Result<crate::service::tags::TagPolicy, String> {
    let mut rules = Vec::new();
    for (i, t) in config.tag_rules.iter().enumerate() {
        rules.push(
            crate::policy::tag_rules::TagRule::compile(t).map_err(|p| {
                p.into_iter().map(|(k, r)| format!("tags[{i}].{k}: {r}")).collect::<Vec<_>>().join("; ")
            })?,
        );
    }
    Ok(crate::service::tags::TagPolicy::new(crate::policy::tag_rules::TagRules::new(rules), config.history.keep))
}

/// The `[[retention]]` rules as the service applies them (cache repositories of `[[upstream]]` are exempt).
pub fn retention(config: &crate::config::Config) -> Result<crate::service::retention::Retention, String> {
    let mut rules = Vec::new();
    for (i, r) in config.retention.iter().enumerate() {
        rules.push(crate::policy::retention::RetentionRule::compile(r).map_err(|p| {
            p.into_iter().map(|(k, r)| format!("retention[{i}].{k}: {r}")).collect::<Vec<_>>().join("; ")
        })?);
    }
    let upstreams: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
    Ok(crate::service::retention::Retention::new(crate::policy::retention::RetentionRules::new(rules), &upstreams))
}

/// The registry-token issuer, with the signing key from the store; the first server to start generates it.
/// Two processes starting at once may both write one: each reads back what the store holds, so they agree.
async fn load_token_issuer(
    store: &dyn crate::store::ContentStore,
    config: &crate::config::Config,
) -> std::io::Result<crate::auth::token::TokenIssuer> {
    use crate::auth::token::{generate_key, TokenIssuer, KEY_DOCUMENT};
    let auth = config.auth.clone().unwrap_or_default();
    let key = match store.meta_get(KEY_DOCUMENT).await.map_err(std::io::Error::other)? {
        Some(k) => k,
        None => {
            let fresh = generate_key().map_err(std::io::Error::other)?;
            store.meta_put(KEY_DOCUMENT, fresh.into()).await.map_err(std::io::Error::other)?;
            tracing::info!(target: "wharf::auth", "generated the registry-token signing key ({KEY_DOCUMENT} in the store)");
            store
                .meta_get(KEY_DOCUMENT)
                .await
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("the token signing key vanished right after it was written"))?
        }
    };
    TokenIssuer::new(&key, auth.service(), auth.token_ttl(), auth.refresh_token_ttl()).map_err(std::io::Error::other)
}

impl App {
    /// Take the data directory (refused while another `wharf serve` holds it), open the store and wire the
    /// services.
    pub fn build(settings: Settings) -> Result<App, AppError> {
        let layout = Layout::new(&settings.data_dir);
        let lock = ServeLock::acquire(&layout.serve_lock()).map_err(AppError::Setup)?;
        if !lock.enforced {
            tracing::warn!(
                data_dir = %settings.data_dir.display(),
                "this filesystem has no file locks: make sure no other `wharf serve` uses the data directory"
            );
        }
        let core = Core::build(&settings, Access::Write)?;
        let configs = &settings.config.upstreams;
        let mut spool_dir = None;
        let registry = if configs.is_empty() {
            Registry::new(core.store.clone())
        } else {
            let spool = ProcessDir::create(&layout.spool())?;
            let path = spool.path().to_owned();
            spool_dir = Some(spool);
            let mirror = Mirror::new(core.store.clone(), configs, &core.upstreams, path).map_err(AppError::Setup)?;
            let total = settings.config.mirror.as_ref().map(|m| m.max_bytes()).transpose();
            mirror.set_budget(total.map_err(|e| AppError::Setup(format!("mirror.max_bytes: {e}")))?.flatten());
            let names = configs.iter().map(|u| u.name.clone()).collect();
            let router = Router::new(names, configs.iter().position(|u| u.default));
            for u in configs {
                tracing::info!(upstream = %u.name, url = %u.url, default = u.default, "mirroring");
            }
            Registry::with_mirror(core.store.clone(), mirror, router)
        };
        let registry = registry
            .with_tag_policy(tag_policy(&settings.config).map_err(AppError::Setup)?)
            .with_retention(retention(&settings.config).map_err(AppError::Setup)?)
            .with_blob_redirects(
                settings
                    .config
                    .storage
                    .blob_redirects()
                    .map_err(|e| AppError::Setup(format!("storage.redirect_expiry: {e}")))?,
            );
        // On object storage every read is a round trip: hosted manifest reads are kept a second.
        let registry = match settings.config.storage.backend {
            StorageBackend::S3 => registry.with_read_cache(READ_CACHE_TTL).with_tag_leases(),
            StorageBackend::Fs => registry,
        };
        let webhooks = crate::events::Webhooks::from_config(
            core.store.clone(),
            &settings.config.webhooks,
            format!("wharf://{}", settings.listen),
        )
        .map_err(AppError::Setup)?;
        let mut metrics = crate::metrics::Metrics::default();
        let (registry, webhooks) = match webhooks {
            Some(w) => {
                let (events, rx) = w.channel();
                if let Some(m) = registry.mirror() {
                    m.set_events(events.clone());
                }
                core.syncer.set_events(events.clone());
                metrics.events = Some(w.stats().clone());
                (registry.with_events(events), Some((w, rx)))
            }
            None => (registry, None),
        };
        let access = crate::auth::AccessControl::from_config(&settings.config)
            .map_err(AppError::Setup)?
            .map(|ac| Arc::new(ac.with_robots(crate::auth::robots::Robots::new(core.store.clone()))));
        let nodes = crate::nodes::Nodes {
            server: String::new(),
            upstreams: configs.iter().map(|u| u.name.clone()).collect(),
            docker_io_default: configs.iter().any(|u| u.name == "docker.io" && u.default),
            ca_pem: None,
            credentials: None,
            certs_dir: crate::nodes::CONTAINERD_CERTS_DIR.into(),
            default_host: false,
            origin_fallback: true,
        };
        let gc = Arc::new(gc_collector(&settings, core.store.clone(), metrics.gc.clone()));
        let scrub = Arc::new(scrubber(&settings, core.store.clone(), metrics.scrub.clone()));
        let gc_grace = match &settings.config.gc {
            Some(g) => g.grace().map_err(|e| AppError::Setup(format!("gc.grace: {e}")))?,
            None => crate::gc::DEFAULT_GRACE,
        };
        let console = crate::api::console::ConsoleSettings::new(settings.config.console.actions, gc_grace);
        let state = AppState { registry, metrics, syncer: core.syncer.clone(), access, nodes, gc, scrub, console };
        Ok(App { state: Arc::new(state), settings, core, _spool: spool_dir, _lock: lock, webhooks })
    }

    /// Bind the listener and start the sync schedules; returns the bound address (useful with port 0) and a
    /// future that serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
        // TLS files are checked before binding, so a bad certificate never leaves a port half-open.
        let tls = crate::tls::load_configured(self.settings.config.server.tls.as_ref())?;
        // What crashed or abandoned clients left: expired upload sessions, scratch of processes that are gone.
        report_store_consistency(&self.settings).await?;
        // Also the first request to the store: a wrong bucket, endpoint or key stops start-up here.
        let swept = self
            .core
            .store
            .sweep()
            .await
            .map_err(|e| std::io::Error::other(format!("the content store does not answer: {e}")))?;
        tracing::info!(uploads = swept.uploads, scratch = swept.scratch, "swept leftovers at start-up");
        let listener = tokio::net::TcpListener::bind(self.settings.listen).await?;
        let addr = listener.local_addr()?;
        match &self.state.access {
            Some(ac) => {
                let issuer = load_token_issuer(self.core.store.as_ref(), &self.settings.config).await?;
                ac.set_tokens(issuer);
                ac.start_reload()
            }
            None if !addr.ip().is_loopback() => {
                let line = "!".repeat(78);
                tracing::warn!("{line}");
                tracing::warn!(
                    "WARNING: listening on {addr} with NO access control: anyone who can reach this port can push, \
                     overwrite tags and delete. Configure [auth] and [[access]] (see README: Access control)."
                );
                tracing::warn!("{line}");
            }
            None => {}
        }
        let listener = crate::tls::Listening::new(listener, tls)?;
        let mut schedules = crate::tasks::start_sync_schedules(self.core.syncer.clone());
        if let Some((w, rx)) = self.webhooks {
            w.start(&mut schedules, rx);
        }
        let limits = upload_limits(&self.settings).map_err(std::io::Error::other)?;
        crate::tasks::start_sweeper(&mut schedules, self.core.store.clone(), crate::tasks::sweep_every(limits.expiry));
        if let Some(gc) = &self.settings.config.gc {
            let every = gc.every().map_err(std::io::Error::other)?;
            let grace = gc.grace().map_err(std::io::Error::other)?;
            if let Some(every) = every {
                let registry = self.state.registry.clone();
                crate::tasks::start_gc(&mut schedules, registry, self.state.gc.clone(), every, grace);
            }
        }
        if let Some(scrub) = &self.settings.config.scrub {
            let every = scrub.every().map_err(std::io::Error::other)?;
            let rate = scrub.rate().map_err(std::io::Error::other)?;
            let events = self.state.registry.events().clone();
            crate::tasks::start_scrub(&mut schedules, self.state.scrub.clone(), every, rate, events);
        }
        if self.state.registry.counts_pulls() {
            crate::tasks::start_pull_flush(&mut schedules, self.state.registry.clone());
        }
        if let Some(mirror) = self.state.registry.mirror().filter(|m| m.has_budget()) {
            crate::tasks::start_cache_budget(&mut schedules, mirror.clone(), self.state.gc.clone());
        }
        let registry = self.state.registry.clone();
        let router = api::router(self.state);
        let (spool, lock) = (self._spool, self._lock);
        let fut = async move {
            let r = listener.serve(router, shutdown).await;
            schedules.abort_all();
            // Pull times noted since the last flush would otherwise be lost with the process.
            if registry.counts_pulls() {
                if let Err(e) = registry.flush_pulls().await {
                    tracing::warn!(error = %e, "writing pull times at shutdown failed");
                }
            }
            drop((spool, lock));
            r
        };
        Ok((addr, fut))
    }
}
