//! What every handler can reach: a small `Clone` struct of handles, built once by `app.rs`.
//! Handlers take what they need from it; nothing here is global.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::rate_limit::LoginRateLimiter;
use crate::clock::SharedClock;
use crate::docker::DockerEngine;
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub bus: EventBus,
    pub docker: DockerEngine,
    pub settings: LiveSettings,
    pub secrets: SecretBox,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub login_limiter: Arc<LoginRateLimiter>,
    /// The secret that authenticates registry webhooks (`?token=`).
    pub webhook_token: Arc<str>,
    /// This installation's id, the label on every container it manages.
    pub installation_id: Arc<str>,
    /// Mark the session cookie `Secure` (the UI is served over TLS).
    pub secure_cookies: bool,
    /// Cancelled when the application stops; long-lived responses (the event stream) end on it
    /// so the listener's graceful shutdown does not wait for them forever.
    pub shutdown: CancellationToken,
}
