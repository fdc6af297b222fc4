//! Builds every service from the settings and runs the HTTP server until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::service::Registry;
use crate::store::fs::FsStore;
use crate::store::StoreError;

/// A running-ready application.
pub struct App {
    state: Arc<AppState>,
    settings: Settings,
}

impl App {
    /// Open the store and wire the services.
    pub fn build(settings: Settings) -> Result<App, StoreError> {
        let store = Arc::new(FsStore::open(&settings.data_dir)?);
        let registry = Registry::new(store);
        Ok(App { state: Arc::new(AppState { registry }), settings })
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
