//! The route table: which upstream serves each hostname. It is rebuilt from the store whenever a
//! deploy switches a stage, an instance stops, or a standalone proxy changes, and swapped in
//! atomically (`ArcSwap`), so the proxy's request path reads it without a lock and in-flight
//! requests finish on the table they started with.
//!
//! It also counts open connections per instance, so a deploy can stop the old container only
//! after its requests and WebSockets have drained (or `drain_timeout` passed), and it can hold a
//! stage's requests while a `stop_first` deploy replaces its instance ([`hold`]).

mod hold;

pub use self::hold::{Hold, HoldTicket, StageHold};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::domain::hostname::Hostname;
use crate::domain::instance::{InstanceFilter, InstanceStatus};
use crate::domain::stage::Stage;
use crate::settings::LiveSettings;
use crate::store::{Store, StoreResult};

/// What a hostname routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A deployed instance: the current one of a single stage, or one of a per-tag stage.
    Instance {
        project_id: i64,
        stage_id: i64,
        instance_id: i64,
    },
    /// A standalone proxy.
    Proxy { proxy_id: i64 },
}

/// Where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: String,
    /// `host:port`.
    pub authority: String,
    /// A path prefix to prepend (standalone proxies with a path in `target_url`), without a
    /// trailing slash; empty for none.
    pub base_path: String,
    /// Send the client's `Host` instead of the upstream's.
    pub preserve_host: bool,
    /// Forward request fields whose names hold `_`; by default the proxy drops them, as nginx
    /// does, since many applications read `X_Foo` and `X-Foo` as the same field.
    pub underscores_in_headers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub hostname: String,
    pub target: RouteTarget,
    pub upstream: Upstream,
    /// Set while a deploy holds the stage: requests wait on it instead of going upstream.
    pub hold: Option<Arc<Hold>>,
}

/// One immutable generation of the table.
#[derive(Debug, Default)]
pub struct Routes {
    by_host: HashMap<String, Arc<Route>>,
}

impl Routes {
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Self {
        Self {
            by_host: routes
                .into_iter()
                .map(|r| (r.hostname.clone(), Arc::new(r)))
                .collect(),
        }
    }

    /// Looks up a `Host` header value: port ignored, case-insensitive.
    pub fn lookup(&self, host: &str) -> Option<&Arc<Route>> {
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let name = name.trim_end_matches('.');
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&name.to_ascii_lowercase())
        } else {
            self.by_host.get(name)
        }
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_host.values()
    }
}

/// The live table and the per-instance connection counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// What the proxy reads: the table as built, with the holds applied.
    current: Arc<ArcSwap<Routes>>,
    /// The table as last built from the store, without holds: what a released hold goes back to.
    built: Arc<ArcSwap<Routes>>,
    /// The stages held right now. Taken (briefly, never across an `.await`) only by whoever
    /// writes the table — a rebuild, a hold, a release — never by the request path.
    holds: Arc<std::sync::Mutex<Vec<hold::HeldRoutes>>>,
    /// Open connections per instance, copy-on-write like the table: the request path reads it
    /// without a lock (a lock shared by the proxy's workers stalls them all whenever its holder
    /// is preempted); only an instance's first connection writes, under `connections_insert`.
    connections: Arc<ArcSwap<HashMap<i64, Arc<AtomicUsize>>>>,
    connections_insert: Arc<std::sync::Mutex<()>>,
    store: Store,
    settings: LiveSettings,
    /// Serialises rebuilds so an older build never overwrites a newer one.
    rebuild_lock: Arc<tokio::sync::Mutex<()>>,
}

impl RouteTable {
    pub fn new(store: Store, settings: LiveSettings) -> Self {
        Self {
            current: Default::default(),
            built: Default::default(),
            holds: Default::default(),
            connections: Default::default(),
            connections_insert: Default::default(),
            store,
            settings,
            rebuild_lock: Default::default(),
        }
    }

    /// The table as it is now; never blocks.
    pub fn load(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// The table as it is now, for a short look-up on the request path: unlike [`Self::load`] it
    /// does not touch the table's shared reference count, so concurrent requests on several
    /// cores do not contend on it. Do not hold it across an `.await`.
    pub fn current(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.current.load()
    }

    /// Rebuilds the table from the store and swaps it in.
    pub async fn rebuild(&self) -> StoreResult<Arc<Routes>> {
        let _guard = self.rebuild_lock.lock().await;
        let routes = Arc::new(build_routes(&self.store, &self.settings).await?);
        Ok(self.install(routes))
    }

    /// A guard counting one open connection to `instance_id` until it is dropped.
    pub fn track_connection(&self, instance_id: i64) -> ConnectionGuard {
        let counter = self.counter(instance_id);
        counter.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard { counter }
    }

    /// The connection counter of `instance_id`, created on its first connection.
    fn counter(&self, instance_id: i64) -> Arc<AtomicUsize> {
        if let Some(counter) = self.connections.load().get(&instance_id) {
            return counter.clone();
        }
        let _guard = self.connections_insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.connections.load_full();
        if let Some(counter) = current.get(&instance_id) {
            return counter.clone();
        }
        let counter = Arc::new(AtomicUsize::new(0));
        let mut next = (*current).clone();
        next.insert(instance_id, counter.clone());
        self.connections.store(Arc::new(next));
        counter
    }

    /// Open connections to an instance right now.
    pub fn open_connections(&self, instance_id: i64) -> usize {
        self.connections
            .load()
            .get(&instance_id)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// Waits until no connection to `instance_id` is open, or `timeout`. Returns whether it
    /// drained.
    pub async fn wait_drained(&self, instance_id: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.open_connections(instance_id) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Counts a connection while alive.
#[derive(Debug)]
pub struct ConnectionGuard {
    counter: Arc<AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The hostname a single stage routes: its own, else `{stage}.{project}.{base_domain}`.
pub fn stage_hostname(stage: &Stage, project_name: &str, base_domain: Option<&Hostname>) -> Option<String> {
    if let Some(hostname) = &stage.hostname {
        return Some(hostname.as_str().to_owned());
    }
    base_domain.map(|base| format!("{}.{}.{}", stage.name.as_str(), project_name, base.as_str()))
}

/// What a per-tag stage's instances are named, for people: `{tag}.{stage}.{project}.{base_domain}`
/// (each instance has its tag's slug in place of `{tag}`); none without a base domain, when
/// per-tag instances get no hostname. The stage's own name (`stage_hostname`) answers nothing.
pub fn per_tag_hostname_pattern(
    stage: &Stage,
    project_name: &str,
    base_domain: Option<&Hostname>,
) -> Option<String> {
    base_domain.map(|base| format!("{{tag}}.{}.{project_name}.{}", stage.name.as_str(), base.as_str()))
}

/// Builds a table from the store: current running instances of single stages, running per-tag
/// instances with a hostname, and enabled standalone proxies.
pub async fn build_routes(store: &Store, settings: &LiveSettings) -> StoreResult<Routes> {
    let base_domain = settings.current().base_domain;
    let projects: HashMap<i64, String> = store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| (p.id, p.name.as_str().to_owned()))
        .collect();
    let stages: HashMap<i64, Stage> = store
        .list_all_stages()
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let running = store
        .list_instances(&InstanceFilter {
            status: Some(InstanceStatus::Running),
            ..Default::default()
        })
        .await?;
    let mut routes = Vec::new();
    // Instances come newest first. While a redeployed per-tag instance drains, the one it
    // replaces still runs with the same hostname: the newest keeps the route.
    let mut routed_hosts = std::collections::HashSet::new();
    for instance in running {
        let (Some(stage), Some(port)) = (stages.get(&instance.stage_id), instance.host_port) else {
            continue;
        };
        let hostname = if stage.current_instance_id == Some(instance.id) {
            let project = projects.get(&stage.project_id).map_or("", String::as_str);
            stage_hostname(stage, project, base_domain.as_ref())
        } else if stage.tag_policy.mode() == crate::domain::tag_policy::PolicyMode::PerTag {
            instance.hostname.clone()
        } else {
            None
        };
        let Some(hostname) = hostname else { continue };
        if !routed_hosts.insert(hostname.clone()) {
            continue;
        }
        routes.push(Route {
            hostname,
            target: RouteTarget::Instance {
                project_id: instance.project_id,
                stage_id: instance.stage_id,
                instance_id: instance.id,
            },
            upstream: Upstream {
                scheme: "http".into(),
                authority: format!("127.0.0.1:{port}"),
                base_path: String::new(),
                preserve_host: true,
                underscores_in_headers: false,
            },
            hold: None,
        });
    }
    for proxy in store.list_proxies().await? {
        if !proxy.enabled {
            continue;
        }
        let url = proxy.target_url.as_url();
        let Some(host) = url.host_str() else { continue };
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        routes.push(Route {
            hostname: proxy.hostname.as_str().to_owned(),
            target: RouteTarget::Proxy { proxy_id: proxy.id },
            upstream: Upstream {
                scheme: url.scheme().to_owned(),
                authority,
                base_path: url.path().trim_end_matches('/').to_owned(),
                preserve_host: proxy.preserve_host,
                underscores_in_headers: false,
            },
            hold: None,
        });
    }
    Ok(Routes::from_routes(routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: &str) -> Route {
        Route {
            hostname: host.into(),
            target: RouteTarget::Proxy { proxy_id: 1 },
            upstream: Upstream {
                scheme: "http".into(),
                authority: "127.0.0.1:1".into(),
                base_path: String::new(),
                preserve_host: false,
                underscores_in_headers: false,
            },
            hold: None,
        }
    }

    #[test]
    fn lookups_ignore_the_port_and_the_case() {
        let routes = Routes::from_routes([route("app.example.test")]);
        assert!(routes.lookup("app.example.test").is_some());
        assert!(routes.lookup("App.Example.TEST:8000").is_some());
        assert!(routes.lookup("app.example.test.").is_some());
        assert!(routes.lookup("other.example.test").is_none());
    }

    #[tokio::test]
    async fn a_drain_waits_for_open_connections_to_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let settings = LiveSettings::load(store.clone(), Arc::new(crate::clock::SystemClock))
            .await
            .unwrap();
        let table = RouteTable::new(store, settings);
        let guard = table.track_connection(7);
        assert!(!table.wait_drained(7, Duration::from_millis(100)).await);
        drop(guard);
        assert!(table.wait_drained(7, Duration::from_millis(100)).await);
    }
}
