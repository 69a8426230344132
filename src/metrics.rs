//! The Prometheus metrics of one running application, in an explicit registry (no globals, so
//! tests running several apps in one process see only their own numbers). Each workflow gets the
//! handles it updates; `/metrics` encodes the registry as text.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub severity: &'static str,
    pub source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route pattern (`/api/projects/{id}`), never the raw path, so the label set
    /// stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeployLabels {
    /// `succeeded`, `failed`, `superseded` or `unchanged`.
    pub outcome: &'static str,
    /// `poll`, `webhook`, `manual` or `rollback`.
    pub trigger: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// `delivered`, `retrying` or `failed`.
    pub outcome: &'static str,
    /// `webhook`, `slack`, `discord`, `ntfy`, `gotify` or `email`.
    pub channel_kind: &'static str,
}

/// Every metric docker-watcher exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub events_published: Family<EventLabels, Counter>,
    /// Events a slow SSE subscriber missed from the broadcast channel (it resyncs from the store).
    pub event_bus_lagged: Counter,
    pub sse_clients: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Reconciles of instance statuses against the engine's container list (Docker sync).
    pub docker_reconciles: Counter,
    /// Reconnections of Docker sync to the engine's event stream after it ended.
    pub docker_reconnects: Counter,
    /// Deploy attempts by outcome and trigger.
    pub deploys: Family<DeployLabels, Counter>,
    /// How long deploys that ran took, from the pull to the switch (or the failure).
    pub deploy_duration_seconds: Histogram,
    /// Stage polls attempted (one per stage per cycle; skipped backoffs not counted).
    pub polls: Counter,
    /// Stage polls that failed because the registry could not be listed or resolved.
    pub poll_errors: Counter,
    /// HTTP requests the registry client sent (token requests included).
    pub registry_requests: Counter,
    /// The reverse proxy's per-route numbers.
    pub proxy: ProxyMetrics,
    /// Instances stale after the last stale scan (less those cleaned up since).
    pub stale_instances: Gauge,
    /// Stale scans completed.
    pub stale_scans: Counter,
    /// Notification delivery attempts by outcome and channel kind (tests included).
    pub notification_deliveries: Family<NotificationLabels, Counter>,
    /// From an event's time to its notification's delivery, per event delivered.
    pub notification_latency_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("docker_watcher");
        let events_published = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_published",
            "Events published on the bus",
            events_published.clone(),
        );
        let event_bus_lagged = Counter::default();
        registry.register(
            "event_bus_lagged_events",
            "Events skipped by slow subscribers of the live event stream",
            event_bus_lagged.clone(),
        );
        let sse_clients = Gauge::default();
        registry.register(
            "sse_clients",
            "Open event-stream connections",
            sse_clients.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API and UI requests by route and status",
            http_requests.clone(),
        );
        let deploys = Family::<DeployLabels, Counter>::default();
        registry.register(
            "deploys",
            "Deploy attempts by outcome and trigger",
            deploys.clone(),
        );
        // 0.25 s to about 17 min: a cached image with a quick health gate up to a slow pull.
        let deploy_duration_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 13));
        registry.register(
            "deploy_duration_seconds",
            "Duration of deploys that ran, from the pull to the switch or the failure",
            deploy_duration_seconds.clone(),
        );
        let proxy = ProxyMetrics::register(&mut registry);
        let polls = Counter::default();
        registry.register("polls", "Stage polls attempted", polls.clone());
        let poll_errors = Counter::default();
        registry.register(
            "poll_errors",
            "Stage polls that failed at the registry",
            poll_errors.clone(),
        );
        let registry_requests = Counter::default();
        registry.register(
            "registry_requests",
            "HTTP requests sent to registries, token requests included",
            registry_requests.clone(),
        );
        let docker_reconciles = Counter::default();
        registry.register(
            "docker_reconciles",
            "Reconciles of instance statuses against the Docker engine's container list",
            docker_reconciles.clone(),
        );
        let docker_reconnects = Counter::default();
        registry.register(
            "docker_reconnects",
            "Reconnections to the Docker engine's event stream after it ended",
            docker_reconnects.clone(),
        );
        let stale_instances = Gauge::default();
        registry.register(
            "stale_instances",
            "Instances stale after the last stale scan, less those cleaned up since",
            stale_instances.clone(),
        );
        let stale_scans = Counter::default();
        registry.register("stale_scans", "Stale scans completed", stale_scans.clone());
        let notification_deliveries = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Notification delivery attempts by outcome and channel kind",
            notification_deliveries.clone(),
        );
        // 10 ms to about 82 s: a coalescing window plus a quick receiver, up to a retried one.
        let notification_latency_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "notification_latency_seconds",
            "From an event to the delivery of its notification",
            notification_latency_seconds.clone(),
        );
        Self {
            registry,
            notification_deliveries,
            notification_latency_seconds,
            stale_instances,
            stale_scans,
            docker_reconciles,
            docker_reconnects,
            events_published,
            event_bus_lagged,
            sse_clients,
            http_requests,
            deploys,
            deploy_duration_seconds,
            polls,
            poll_errors,
            registry_requests,
            proxy,
        }
    }

    /// Gives a workflow the registry to add its own metrics at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyRouteLabels {
    /// The routed hostname, as configured (bounded: unknown hosts never get a label of their own).
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyStatusLabels {
    pub route: String,
    /// `1xx` … `5xx`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyErrorLabels {
    pub route: String,
    /// `refused` (502), `timeout` (504), `upstream` (502, the upstream broke the exchange).
    pub kind: &'static str,
}

/// The reverse proxy's metrics: requests by route and status class, latency until the response
/// headers, requests and tunnels open per route, and when each route was last requested (a gauge
/// for dashboards, and an in-memory map that preview expiry reads).
///
/// The request path must not lock a shared map or allocate label sets per request, so each
/// route's handles are resolved once into a [`RouteMetrics`] and kept in a copy-on-write map:
/// readers take a snapshot without locking; only the first request to a new route writes.
#[derive(Debug)]
pub struct ProxyMetrics {
    requests: Family<ProxyStatusLabels, Counter>,
    errors: Family<ProxyErrorLabels, Counter>,
    latency: Family<ProxyRouteLabels, LatencyHistogram, fn() -> LatencyHistogram>,
    open: Family<ProxyRouteLabels, Gauge>,
    last_request: Family<ProxyRouteLabels, Gauge>,
    /// Requests for hosts no route serves (answered 404, or refused).
    pub unmatched_requests: Counter,
    /// Client connections open on the proxy listeners.
    pub client_connections: Gauge,
    routes: arc_swap::ArcSwap<HashMap<String, Arc<RouteMetrics>>>,
    /// Serialises inserts into `routes` so two first requests cannot drop each other's entry.
    insert_lock: std::sync::Mutex<()>,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn proxy_latency_histogram() -> LatencyHistogram {
    // 0.25 ms to about 65 s: loopback upstreams up to the response timeout.
    LatencyHistogram::new(exponential_buckets(0.00025, 2.0, 19))
}

/// A histogram of durations that records without a lock. prometheus-client's `Histogram` takes
/// a mutex per observation; shared by the proxy's worker threads per route, a worker preempted
/// while holding it would stall every other worker's requests until it runs again — a
/// scheduler tick, which showed as the p99 tail of `scripts/bench-proxy.sh`. Here each bucket,
/// the count and the sum (in nanoseconds) are atomics; a scrape reads them one by one, so it may
/// see an observation in the count a moment before its bucket, which Prometheus tolerates.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Arc<LatencyBuckets>,
}

#[derive(Debug)]
struct LatencyBuckets {
    /// Upper bounds in seconds, ascending; the last bucket (`+Inf`) is implicit.
    bounds: Vec<f64>,
    /// One more than `bounds`: observations above the last bound land in `+Inf`.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(LatencyBuckets {
                bounds,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, duration: std::time::Duration) {
        let inner = &self.inner;
        let seconds = duration.as_secs_f64();
        let bucket = inner.bounds.partition_point(|bound| *bound < seconds);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        // The text encoder accumulates the per-bucket counts and prints infinity as `+Inf`,
        // as it does for prometheus-client's own histogram.
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl ProxyMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<ProxyStatusLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by route and status class",
            requests.clone(),
        );
        let errors = Family::<ProxyErrorLabels, Counter>::default();
        registry.register(
            "proxy_upstream_errors",
            "Requests the proxy answered itself because the upstream refused, timed out or broke off",
            errors.clone(),
        );
        let latency =
            Family::<ProxyRouteLabels, LatencyHistogram, fn() -> LatencyHistogram>::new_with_constructor(
                proxy_latency_histogram,
            );
        registry.register(
            "proxy_request_duration_seconds",
            "Time from a request's arrival to its response headers, by route",
            latency.clone(),
        );
        let open = Family::<ProxyRouteLabels, Gauge>::default();
        registry.register(
            "proxy_open_connections",
            "Requests in flight and upgraded tunnels open, by route",
            open.clone(),
        );
        let last_request = Family::<ProxyRouteLabels, Gauge>::default();
        registry.register(
            "proxy_last_request_timestamp_seconds",
            "Unix time of the last request, by route",
            last_request.clone(),
        );
        let unmatched_requests = Counter::default();
        registry.register(
            "proxy_unmatched_requests",
            "Requests for hosts no route serves",
            unmatched_requests.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "proxy_client_connections",
            "Client connections open on the proxy listeners",
            client_connections.clone(),
        );
        Self {
            requests,
            errors,
            latency,
            open,
            last_request,
            unmatched_requests,
            client_connections,
            routes: Default::default(),
            insert_lock: Default::default(),
        }
    }

    /// The handles of one route, created on its first request.
    pub fn route(&self, hostname: &str) -> Arc<RouteMetrics> {
        if let Some(found) = self.routes.load().get(hostname) {
            return found.clone();
        }
        let _guard = self.insert_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.routes.load_full();
        if let Some(found) = current.get(hostname) {
            return found.clone();
        }
        let route = Arc::new(RouteMetrics::new(self, hostname));
        let mut next = (*current).clone();
        next.insert(hostname.to_owned(), route.clone());
        self.routes.store(Arc::new(next));
        route
    }

    /// Counts a request the proxy answered itself because of the upstream (rare: labels are
    /// built per call).
    pub fn upstream_error(&self, hostname: &str, kind: &'static str) {
        self.errors
            .get_or_create(&ProxyErrorLabels {
                route: hostname.to_owned(),
                kind,
            })
            .inc();
    }

    /// Unix seconds of the last request to `hostname` through the proxy, if any since start.
    pub fn last_request_at(&self, hostname: &str) -> Option<i64> {
        let routes = self.routes.load();
        let at = routes.get(hostname)?.last_request_at.load(Ordering::Relaxed);
        (at > 0).then_some(at)
    }

    /// Unix seconds of the last request to every route requested since start.
    pub fn last_requests(&self) -> HashMap<String, i64> {
        self.routes
            .load()
            .iter()
            .map(|(host, m)| (host.clone(), m.last_request_at.load(Ordering::Relaxed)))
            .filter(|(_, at)| *at > 0)
            .collect()
    }
}

/// One route's metric handles (each a shared counter: updating them takes no map lookup).
#[derive(Debug)]
pub struct RouteMetrics {
    by_status_class: [Counter; 5],
    latency: LatencyHistogram,
    open: Gauge,
    last_request_gauge: Gauge,
    last_request_at: AtomicI64,
}

impl RouteMetrics {
    fn new(proxy: &ProxyMetrics, hostname: &str) -> Self {
        let route = ProxyRouteLabels {
            route: hostname.to_owned(),
        };
        let by_status_class = STATUS_CLASSES.map(|status| {
            proxy.requests.get_or_create_owned(&ProxyStatusLabels {
                route: hostname.to_owned(),
                status,
            })
        });
        Self {
            by_status_class,
            latency: proxy.latency.get_or_create_owned(&route),
            open: proxy.open.get_or_create_owned(&route),
            last_request_gauge: proxy.last_request.get_or_create_owned(&route),
            last_request_at: AtomicI64::new(0),
        }
    }

    /// Records a request's response: its status class, the time to its headers, and when it
    /// arrived (`unix_seconds`).
    pub fn record(&self, status: u16, latency: std::time::Duration, unix_seconds: i64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_status_class[class].inc();
        self.latency.observe(latency);
        // Written at most once a second per route, so the gauge's atomic is not contended.
        if self.last_request_at.swap(unix_seconds, Ordering::Relaxed) != unix_seconds {
            self.last_request_gauge.set(unix_seconds);
        }
    }

    /// Counts one open request or tunnel until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenGuard {
        self.open.inc();
        OpenGuard { route: self.clone() }
    }
}

/// Decrements a route's open-connections gauge when dropped.
#[derive(Debug)]
pub struct OpenGuard {
    route: Arc<RouteMetrics>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.route.open.dec();
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn the_lock_free_latency_histogram_encodes_like_a_prometheus_histogram() {
        let mut registry = Registry::default();
        let histogram = LatencyHistogram::new([0.001, 0.01].into_iter());
        registry.register("lat", "test", histogram.clone());
        histogram.observe(std::time::Duration::from_micros(500));
        histogram.observe(std::time::Duration::from_millis(1));
        histogram.observe(std::time::Duration::from_millis(5));
        histogram.observe(std::time::Duration::from_secs(2));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE lat histogram",
            "lat_sum 2.0065",
            "lat_count 4",
            "lat_bucket{le=\"0.001\"} 2",
            "lat_bucket{le=\"0.01\"} 3",
            "lat_bucket{le=\"+Inf\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn route_metrics_are_created_once_and_count_by_status_class() {
        let metrics = Metrics::new();
        let a = metrics.proxy.route("app.example.test");
        let b = metrics.proxy.route("app.example.test");
        assert!(Arc::ptr_eq(&a, &b));
        a.record(204, std::time::Duration::from_millis(3), 1_700_000_000);
        b.record(502, std::time::Duration::from_millis(3), 1_700_000_001);
        {
            let _open = a.open();
            assert!(
                metrics
                    .encode()
                    .contains("proxy_open_connections{route=\"app.example.test\"} 1")
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains("proxy_requests_total{route=\"app.example.test\",status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_requests_total{route=\"app.example.test\",status=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_open_connections{route=\"app.example.test\"} 0"),
            "{text}"
        );
        assert_eq!(
            metrics.proxy.last_request_at("app.example.test"),
            Some(1_700_000_001)
        );
        assert_eq!(metrics.proxy.last_request_at("other.example.test"), None);
        assert_eq!(metrics.proxy.last_requests().len(), 1);
    }
}
