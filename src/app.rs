//! The composition root: the only module that knows every other. [`App::spawn`] opens the store,
//! loads settings and secrets, connects to Docker, binds the listeners, bootstraps the first
//! admin (last, so a start that fails never creates it), and starts every background task
//! under one cancellation token; the returned
//! [`App`] exposes the bound addresses (so tests can use port 0) and stops everything in order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::rate_limit::LoginRateLimiter;
use crate::auth::webhook_token::WebhookToken;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::data_dir::DataDirLock;
use crate::deploy::{Deployer, DeployerDeps, DeployerOptions};
use crate::docker::DockerEngine;
use crate::docker::engine::ContainerEngine;
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::{Password, Role, Username};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifierOptions};
use crate::poll::{Poller, PollerParts};
use crate::registry::{RegistryClient, RegistryClientConfig};
use crate::routes::RouteTable;
use crate::scheduler::Scheduler;
use crate::secrets::SecretBox;
use crate::settings::LiveSettings;
use crate::store::Store;
use crate::web::state::AppState;
use crate::web::ui::view::ProxyLinks;

/// How long startup waits for Docker sync's first attempt (recovery and the first reconcile)
/// before serving anyway: a hung engine must not keep docker-watcher from starting.
const FIRST_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub use crate::secrets::KEY_CHECK_META;

/// What can be swapped when the app is embedded (tests inject a movable clock and shorten the
/// notifier's retry backoff).
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub clock: SharedClock,
    pub notifier: NotifierOptions,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            notifier: NotifierOptions::default(),
        }
    }
}

/// A running application.
#[derive(Debug)]
pub struct App {
    api_addr: SocketAddr,
    proxy_addr: SocketAddr,
    proxy_https_addr: Option<SocketAddr>,
    state: AppState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Held while the app runs; released after the store is closed.
    data_dir_lock: DataDirLock,
    /// The generated bootstrap admin password, when this start created the admin without one.
    pub generated_admin_password: Option<String>,
}

impl App {
    /// Builds and starts everything; returns once the listeners are bound.
    pub async fn spawn(config: Config, options: AppOptions) -> anyhow::Result<App> {
        // The data dir is created 0700 (or tightened to it) before anything is put in it.
        let mut tightened = crate::store::files::prepare_data_dir(&config.data_dir)?;
        anyhow::ensure!(
            !config.database_is_postgres(),
            "DOCKER_WATCHER_DATABASE_URL names PostgreSQL, which this version cannot serve from; unset it to use the SQLite store in the data dir"
        );
        // Before the store: a second server, or a restore under way, must not share the data.
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        let clock = options.clock.clone();
        // The database is created 0600; files found open to other users are tightened, and
        // said so once the event bus is up.
        let opened = Store::open_data_dir(&config.data_dir).await?;
        let store = opened.store;
        tightened.extend(opened.tightened);
        let installation_id: Arc<str> = store.installation_id().await?.into();
        let (secrets, was) =
            SecretBox::for_installation(config.secret_key.as_deref(), &config.data_dir, &store)
                .await
                .context("setting up the secret key")?;
        tightened.extend(was.map(|was| crate::store::files::ModeTightened {
            path: config.data_dir.join(SecretBox::KEY_FILE),
            was,
            now: 0o600,
        }));
        // A database restored or moved without its key would fail at the first secret it
        // opens, deep in a deploy; the check value stored on the first start makes it fail here.
        let key_check = store
            .meta_get_or_insert(KEY_CHECK_META, &secrets.key_check_value())
            .await?;
        secrets.verify_key_check(&key_check)?;
        let webhook_token = WebhookToken::load(store.clone(), config.webhook_token.as_deref()).await?;
        let metrics = Arc::new(Metrics::new());
        let bus = EventBus::new(store.clone(), clock.clone(), metrics.clone());
        // Tapped before anything publishes, so every event of this run can be notified.
        let notification_tap = bus.tap();
        let notifier = Notifier::new(
            store.clone(),
            secrets.clone(),
            clock.clone(),
            metrics.clone(),
            options.notifier.clone(),
        )?;
        for fixed in &tightened {
            tracing::warn!("{fixed}");
            bus.publish(NewEvent::warn(Source::System, fixed.to_string()))
                .await;
        }
        let settings = LiveSettings::load(store.clone(), clock.clone()).await?;
        let docker = DockerEngine::connect(config.docker_host.as_deref())?;
        let engine: Arc<dyn ContainerEngine> = Arc::new(docker.clone());
        let registry =
            RegistryClient::new(RegistryClientConfig::default()).context("building the registry client")?;
        let routes = RouteTable::new(store.clone(), settings.clone());
        routes.rebuild().await.context("building the route table")?;
        let deployer = Deployer::new(
            DeployerDeps {
                store: store.clone(),
                bus: bus.clone(),
                engine: engine.clone(),
                registry: registry.clone(),
                routes: routes.clone(),
                settings: settings.clone(),
                secrets: secrets.clone(),
                clock: clock.clone(),
                installation_id: installation_id.clone(),
                metrics: metrics.clone(),
            },
            DeployerOptions::default(),
        )?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        notifier
            .start(notification_tap, &tasks, shutdown.clone())
            .await
            .context("starting the notifier")?;
        let scheduler = Scheduler::new(tasks.clone(), clock.clone(), shutdown.clone());
        // Docker sync before anything can deploy (the poller and the API come after): it
        // recovers deploys a crash interrupted and reconciles every instance first. An engine
        // that is down does not hold up the start — the first attempt failing is enough; sync
        // recovers when the engine comes back.
        let (lost, lost_instances) = tokio::sync::mpsc::unbounded_channel();
        let sync = crate::sync::start(
            crate::sync::SyncDeps {
                engine: engine.clone(),
                store: store.clone(),
                bus: bus.clone(),
                routes: routes.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                installation_id: installation_id.clone(),
                lost,
            },
            &tasks,
            shutdown.clone(),
        );
        tasks.spawn(heal_lost_instances(
            deployer.clone(),
            lost_instances,
            tasks.clone(),
            shutdown.clone(),
        ));
        if tokio::time::timeout(FIRST_SYNC_TIMEOUT, sync.wait_first_attempt())
            .await
            .is_err()
        {
            tracing::warn!("the first Docker sync is still running; starting without waiting for it");
        }
        let poller = Poller::new(PollerParts {
            store: store.clone(),
            bus: bus.clone(),
            settings: settings.clone(),
            registry: registry.clone(),
            deployer: deployer.clone(),
            scheduler: scheduler.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            tracker: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        // The stale scanner: its first scan waits for Docker sync's first reconcile, so it
        // judges statuses that are true to the engine.
        let stale = crate::stale::start(
            crate::stale::StaleScanner::new(
                crate::stale::StaleDeps {
                    store: store.clone(),
                    bus: bus.clone(),
                    engine: engine.clone(),
                    settings: settings.clone(),
                    routes: routes.clone(),
                    clock: clock.clone(),
                    metrics: metrics.clone(),
                    installation_id: installation_id.clone(),
                },
                crate::stale::StaleOptions::default(),
            ),
            &scheduler,
            {
                let sync = sync.clone();
                async move { sync.wait_reconciled().await }
            },
            &tasks,
            shutdown.clone(),
        );

        let listener = match TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                shutdown.cancel();
                return Err(
                    anyhow::Error::new(e).context(format!("binding the API listener on {}", config.listen))
                );
            }
        };
        let api_addr = listener.local_addr()?;
        // The proxy is bound before the state is built: the UI links hostnames with the ports
        // its listeners really got (port 0 in tests).
        let (proxy_addr, proxy_https_addr) =
            match spawn_proxy(&config, &routes, &metrics, &clock, &tasks, &shutdown).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    shutdown.cancel();
                    return Err(e);
                }
            };

        let state = AppState {
            store: store.clone(),
            bus: bus.clone(),
            docker,
            engine,
            registry,
            routes,
            deployer,
            poller: poller.clone(),
            sync,
            stale,
            notifier,
            settings: settings.clone(),
            secrets,
            clock: clock.clone(),
            metrics,
            login_limiter: Arc::new(LoginRateLimiter::new()),
            webhook_token,
            installation_id,
            secure_cookies: false,
            proxy_links: proxy_links(&config, proxy_addr, proxy_https_addr),
            shutdown: shutdown.clone(),
        };

        crate::events::retention::spawn_retention(&scheduler, store.clone(), settings, clock.clone());
        tasks.spawn(crate::auth::sessions::prune_sessions_loop(
            store.clone(),
            clock.clone(),
            shutdown.clone(),
        ));

        if let Err(e) = poller.refresh().await {
            shutdown.cancel();
            return Err(e.context("starting the registry poller"));
        }

        // The first admin is created last, once nothing can fail any more (a port in use, say):
        // a generated password is printed by the caller of a start that succeeded, so it is
        // never lost with a start that did not.
        let generated_admin_password = match bootstrap_admin(&store, &bus, &config, &clock).await {
            Ok(generated) => generated,
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        };
        let router = crate::web::router(state.clone());
        tasks.spawn(crate::web::listener::serve(
            listener,
            router,
            crate::web::listener::ApiListenerOptions {
                header_timeout: config.api.header_timeout,
                idle_timeout: config.api.idle_timeout,
                max_connections: config.api.max_connections,
                ..Default::default()
            },
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
            proxy_addr,
            proxy_https_addr,
            state,
            shutdown,
            tasks,
            data_dir_lock,
            generated_admin_password,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The reverse proxy's plain-HTTP listener.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The reverse proxy's HTTPS listener, when certificates are configured.
    pub fn proxy_https_addr(&self) -> Option<SocketAddr> {
        self.proxy_https_addr
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
        drop(self.data_dir_lock);
    }
}

/// Binds the reverse proxy's listeners — plain HTTP, and HTTPS when certificates are configured
/// (their files are loaded here, so a bad one stops the start naming it) — and serves them under
/// the app's shutdown token. Returns the bound addresses.
/// Hands every instance the Docker sync reports lost to the deploy workflow, which heals its
/// stage when it was serving (`deploy::heal`). Each heal runs on its own: one stage's slow
/// health gate does not hold up another's.
async fn heal_lost_instances(
    deployer: Deployer,
    mut lost: tokio::sync::mpsc::UnboundedReceiver<crate::sync::LostInstance>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = lost.recv() => next,
        };
        let Some(instance) = next else { return };
        let deployer = deployer.clone();
        tasks.spawn(async move {
            if let Err(e) = deployer.heal(instance.stage_id, instance.instance_id).await {
                tracing::error!(
                    error = %e,
                    stage_id = instance.stage_id,
                    instance_id = instance.instance_id,
                    "healing the stage failed"
                );
            }
        });
    }
}

async fn spawn_proxy(
    config: &Config,
    routes: &RouteTable,
    metrics: &Arc<Metrics>,
    clock: &SharedClock,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    use crate::proxy::tls::CertificateFiles;
    use crate::proxy::{ListenerKind, Proxy, ProxyOptions};

    let settings = &config.proxy;
    let options = ProxyOptions {
        connect_timeout: settings.connect_timeout,
        response_timeout: settings.response_timeout,
        idle_timeout: settings.idle_timeout,
        client_header_timeout: settings.idle_timeout,
        client_body_timeout: settings.client_body_timeout,
        ..ProxyOptions::default()
    };
    let proxy = Proxy::new(
        routes.clone(),
        metrics.clone(),
        clock.clone(),
        options,
        shutdown.clone(),
    )?;
    let https = match settings.https_listen {
        Some(addr) => {
            let files: Vec<CertificateFiles> = settings
                .tls
                .iter()
                .map(|t| CertificateFiles {
                    hostname: t.hostname.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                })
                .collect();
            let acceptor = crate::proxy::tls::acceptor(&files).context("proxy.tls")?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the proxy's HTTPS listener on {addr}"))?;
            Some((listener.local_addr()?, listener, acceptor))
        }
        None => None,
    };
    let listener = TcpListener::bind(config.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy listener on {}", config.proxy_listen))?;
    let proxy_addr = listener.local_addr()?;
    let redirect_to_https_port = https
        .as_ref()
        .filter(|_| settings.redirect_http_to_https)
        .map(|(addr, ..)| addr.port());
    tasks.spawn(crate::proxy::serve(
        listener,
        proxy.clone(),
        ListenerKind::Http {
            redirect_to_https_port,
        },
    ));
    let https_addr = https.map(|(addr, listener, acceptor)| {
        tasks.spawn(crate::proxy::serve(
            listener,
            proxy,
            ListenerKind::Https(acceptor),
        ));
        addr
    });
    tracing::info!(%proxy_addr, ?https_addr, "the reverse proxy is serving");
    Ok((proxy_addr, https_addr))
}

/// The UI's links to routed hostnames, from the addresses the proxy's listeners were bound to.
fn proxy_links(config: &Config, http: SocketAddr, https: Option<SocketAddr>) -> ProxyLinks {
    let links = ProxyLinks::http(http.port());
    match https {
        Some(https) => links.with_https(
            https.port(),
            config.proxy.tls.iter().map(|t| t.hostname.as_str()),
            config.proxy.redirect_http_to_https,
        ),
        None => links,
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
