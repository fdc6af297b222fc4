//! Builds every service from the settings and runs the HTTP server until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::mirror::Mirror;
use crate::policy::routing::Router;
use crate::service::Registry;
use crate::store::fs::FsStore;
use crate::store::{ContentStore, StoreError};

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An upstream client could not be built (e.g. unreadable CA file).
    #[error("{0}")]
    Mirror(String),
}

/// A running-ready application.
pub struct App {
    state: Arc<AppState>,
    settings: Settings,
}

impl App {
    /// Open the store and wire the services.
    pub fn build(settings: Settings) -> Result<App, AppError> {
        let store: Arc<dyn ContentStore> = Arc::new(FsStore::open(&settings.data_dir)?);
        let upstreams = &settings.config.upstreams;
        let registry = if upstreams.is_empty() {
            Registry::new(store)
        } else {
            let mirror =
                Mirror::new(store.clone(), upstreams, settings.data_dir.join("spool")).map_err(AppError::Mirror)?;
            let names = upstreams.iter().map(|u| u.name.clone()).collect();
            let router = Router::new(names, upstreams.iter().position(|u| u.default));
            for u in upstreams {
                tracing::info!(upstream = %u.name, url = %u.url, default = u.default, "mirroring");
            }
            Registry::with_mirror(store, mirror, router)
        };
        Ok(App { state: Arc::new(AppState { registry, metrics: Default::default() }), settings })
    }

    /// Bind the listener; returns the bound address (useful with port 0) and a future that serves until
    /// `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(self.settings.listen).await?;
        let addr = listener.local_addr()?;
        let router = api::router(self.state);
        let fut = async move { axum::serve(listener, router).with_graceful_shutdown(shutdown).await };
        Ok((addr, fut))
    }
}
