//! The Prometheus metrics of one running application, in an explicit registry (no globals, so
//! tests running several apps in one process see only their own numbers). Each workflow gets the
//! handles it updates; `/metrics` encodes the registry as text.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Every metric docker-watcher exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub events_published: Family<EventLabels, Counter>,
    /// Events a slow SSE subscriber missed from the broadcast channel (it resyncs from the store).
    pub event_bus_lagged: Counter,
    pub sse_clients: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
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
        Self {
            registry,
            events_published,
            event_bus_lagged,
            sse_clients,
            http_requests,
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
