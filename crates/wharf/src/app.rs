//! Builds every service from the settings and runs the HTTP server (and the sync schedules) until a shutdown
//! signal.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, AppState};
use crate::config::upstream::UpstreamConfig;
use crate::config::Settings;
use crate::mirror::Mirror;
use crate::policy::routing::Router;
use crate::service::Registry;
use crate::store::fs::FsStore;
use crate::store::{ContentStore, StoreError};
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
    pub fn build(settings: &Settings) -> Result<Core, AppError> {
        let store: Arc<dyn ContentStore> = Arc::new(FsStore::open(&settings.data_dir)?);
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
}

impl App {
    /// Open the store and wire the services.
    pub fn build(settings: Settings) -> Result<App, AppError> {
        let core = Core::build(&settings)?;
        let configs = &settings.config.upstreams;
        let registry = if configs.is_empty() {
            Registry::new(core.store.clone())
        } else {
            let spool = settings.data_dir.join("spool");
            let mirror = Mirror::new(core.store.clone(), configs, &core.upstreams, spool).map_err(AppError::Setup)?;
            let names = configs.iter().map(|u| u.name.clone()).collect();
            let router = Router::new(names, configs.iter().position(|u| u.default));
            for u in configs {
                tracing::info!(upstream = %u.name, url = %u.url, default = u.default, "mirroring");
            }
            Registry::with_mirror(core.store.clone(), mirror, router)
        };
        let state = AppState { registry, metrics: Default::default(), syncer: core.syncer.clone() };
        Ok(App { state: Arc::new(state), settings, core })
    }

    /// Bind the listener and start the sync schedules; returns the bound address (useful with port 0) and a
    /// future that serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(self.settings.listen).await?;
        let addr = listener.local_addr()?;
        let mut schedules = crate::tasks::start_sync_schedules(self.core.syncer.clone());
        let router = api::router(self.state);
        let fut = async move {
            let r = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
            schedules.abort_all();
            r
        };
        Ok((addr, fut))
    }
}
