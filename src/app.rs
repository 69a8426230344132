//! The composition root: the only module that knows every other. [`App::spawn`] opens the store,
//! loads settings and secrets, connects to Docker, bootstraps the first admin, binds the
//! listeners, and starts every background task under one cancellation token; the returned
//! [`App`] exposes the bound addresses (so tests can use port 0) and stops everything in order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::rate_limit::LoginRateLimiter;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::docker::DockerEngine;
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::{Password, Role, Username};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::store::Store;
use crate::web::state::AppState;

/// What can be swapped when the app is embedded (tests inject a movable clock).
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub clock: SharedClock,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

/// A running application.
#[derive(Debug)]
pub struct App {
    api_addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The generated bootstrap admin password, when this start created the admin without one.
    pub generated_admin_password: Option<String>,
}

impl App {
    /// Builds and starts everything; returns once the listeners are bound.
    pub async fn spawn(config: Config, options: AppOptions) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let clock = options.clock;
        let store = Store::open(&config.data_dir)
            .await
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
        let installation_id: Arc<str> = store.installation_id().await?.into();
        let secrets = match &config.secret_key {
            Some(key) => SecretBox::from_configured(key),
            None => SecretBox::from_key_file(&config.data_dir)?,
        };
        let webhook_token: Arc<str> = match &config.webhook_token {
            Some(token) => token.as_str().into(),
            None => store
                .meta_get_or_insert("webhook_token", &crate::auth::random_secret())
                .await?
                .into(),
        };
        let metrics = Arc::new(Metrics::new());
        let bus = EventBus::new(store.clone(), clock.clone(), metrics.clone());
        let settings = LiveSettings::load(store.clone(), clock.clone()).await?;
        let docker = DockerEngine::connect(config.docker_host.as_deref())?;
        let generated_admin_password = bootstrap_admin(&store, &bus, &config, &clock).await?;
        let shutdown = CancellationToken::new();

        let state = AppState {
            store: store.clone(),
            bus: bus.clone(),
            docker,
            settings: settings.clone(),
            secrets,
            clock: clock.clone(),
            metrics,
            login_limiter: Arc::new(LoginRateLimiter::new()),
            webhook_token,
            installation_id,
            secure_cookies: false,
            shutdown: shutdown.clone(),
        };

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the API listener on {}", config.listen))?;
        let api_addr = listener.local_addr()?;
        let tasks = TaskTracker::new();

        let router = crate::web::router(state.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, service)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "API listener failed");
            }
        });
        let scheduler = Scheduler::new(tasks.clone(), clock.clone(), shutdown.clone());
        crate::events::retention::spawn_retention(&scheduler, store.clone(), settings, clock.clone());
        tasks.spawn(crate::auth::sessions::prune_sessions_loop(
            store.clone(),
            clock.clone(),
            shutdown.clone(),
        ));

        bus.publish(NewEvent::info(
            Source::System,
            format!("docker-watcher {} started", env!("CARGO_PKG_VERSION")),
        ))
        .await;
        tracing::info!(%api_addr, "docker-watcher is serving");
        Ok(App {
            api_addr,
            state,
            shutdown,
            tasks,
            generated_admin_password,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The handles the application runs on (tests read the store and publish events with them).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Resolves when shutdown has been requested (a signal, or [`App::stop`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every task, waits for them, and closes the store.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.state.store.close().await;
    }
}

/// Creates the user `admin` on the first start, with `DOCKER_WATCHER_ADMIN_PASSWORD` or a
/// generated password that is returned (and printed once by the caller).
async fn bootstrap_admin(
    store: &Store,
    bus: &EventBus,
    config: &Config,
    clock: &SharedClock,
) -> anyhow::Result<Option<String>> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match &config.admin_password {
        Some(pw) => (pw.clone(), None),
        None => {
            let pw = crate::auth::generate_password();
            (pw.clone(), Some(pw))
        }
    };
    let password =
        Password::parse(&password).map_err(|e| anyhow::anyhow!("DOCKER_WATCHER_ADMIN_PASSWORD: {e}"))?;
    let hash = crate::auth::hash_password(&password)?;
    let username = Username::parse("admin").expect("a valid username");
    store
        .insert_user(&username, &hash, Role::Admin, clock.now())
        .await?;
    bus.publish(NewEvent::info(Source::Auth, "created the bootstrap admin user 'admin'").recorded())
        .await;
    Ok(generated)
}
