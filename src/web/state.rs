//! What every handler can reach: a small `Clone` struct of handles, built once by `app.rs`.
//! Handlers take what they need from it; nothing here is global.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::rate_limit::LoginRateLimiter;
use crate::auth::webhook_token::WebhookToken;
use crate::clock::SharedClock;
use crate::deploy::Deployer;
use crate::docker::DockerEngine;
use crate::docker::engine::ContainerEngine;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::poll::Poller;
use crate::registry::RegistryClient;
use crate::routes::RouteTable;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::stale::StaleHandle;
use crate::store::Store;
use crate::sync::SyncHandle;
use crate::web::ui::view::ProxyLinks;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub bus: EventBus,
    pub docker: DockerEngine,
    /// The same engine behind the trait workflows use (logs, and what handlers read directly).
    pub engine: Arc<dyn ContainerEngine>,
    /// The registry client, shared so its per-host budgets and token cache are one.
    pub registry: RegistryClient,
    /// What the reverse proxy routes; rebuilt after every change of stages, instances, proxies.
    pub routes: RouteTable,
    /// The deploy workflow: deploy, rollback, instance actions (one lock per stage).
    pub deployer: Deployer,
    /// Registry watching: stage poll jobs, polls on demand and from webhooks.
    pub poller: Poller,
    /// Docker sync: reconcile on demand, and whether the first reconcile is done.
    pub sync: SyncHandle,
    /// The stale scanner: scans on demand (through its job), the stale list, cleanups.
    pub stale: StaleHandle,
    /// Notification channels, "send test", and delivery in the background.
    pub notifier: Notifier,
    pub settings: LiveSettings,
    pub secrets: SecretBox,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub login_limiter: Arc<LoginRateLimiter>,
    /// The secret that authenticates registry webhooks (`?token=`); admins can rotate it.
    pub webhook_token: WebhookToken,
    /// This installation's id, the label on every container it manages.
    pub installation_id: Arc<str>,
    /// Mark the session cookie `Secure` (the UI is served over TLS).
    pub secure_cookies: bool,
    /// Where the reverse proxy's listeners answer, for the UI's links to routed hostnames.
    pub proxy_links: ProxyLinks,
    /// Cancelled when the application stops; long-lived responses (the event stream) end on it
    /// so the listener's graceful shutdown does not wait for them forever.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Rebuilds the route table after a change of what is routed (a stage's hostname, a
    /// standalone proxy, the `base_domain` setting). The change is already committed, so a
    /// failure is logged rather than answered: the next rebuild catches up.
    pub async fn refresh_routes(&self) {
        if let Err(e) = self.routes.rebuild().await {
            tracing::error!(error = %e, "could not rebuild the route table");
        }
    }
}
