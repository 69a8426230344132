//! The event bus: every part of docker-watcher publishes [`NewEvent`]s here. The bus stamps the
//! time, writes `warn`/`error` (and explicitly recorded) events to the event log, logs each event
//! through `tracing`, and broadcasts it to live subscribers (the SSE stream). Persisted events
//! carry their store id, which is what `Last-Event-ID` replay resumes from.
//!
//! Two channels, because subscribers want two things: the *persisted* channel carries only
//! replayable events, in id order; the *all* channel adds the transient `info`/`debug` events
//! (`?all=1` on the stream). Ordering invariant: a persisted event is committed to the store
//! before it is broadcast, and persisted events are broadcast in id order. A subscriber that
//! subscribes first and reads the store second therefore misses nothing and can drop duplicates
//! by id; see [`EventBus::subscribe`].
//!
//! Publishing never fails the caller: an event that cannot be stored is logged and still
//! broadcast (without an id, so it is not replayable), because losing the deploy that produced
//! it would be worse.
//!
//! A third kind of subscriber cannot afford to miss anything: [`EventBus::tap`] hands out an
//! unbounded channel that receives every event, persisted or not, in publishing order. The
//! notifier reads one; publishing stays a cheap send, so it never waits for a subscriber.
//!
//! [`retention`] prunes the event log on the shared scheduler.

pub mod retention;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::clock::SharedClock;
use crate::domain::event::{Event, NewEvent, Severity};
use crate::metrics::{EventLabels, Metrics};
use crate::store::Store;

/// How many events a live subscriber may fall behind before it is told it lagged (it then
/// resyncs from the store).
const CHANNEL_CAPACITY: usize = 1024;

/// The bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    store: Store,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// Every event, persisted or not (`?all=1` subscribers).
    all: broadcast::Sender<Arc<Event>>,
    /// Persisted events, in id order (replayable subscribers), plus the rare warn/error that
    /// could not be stored, without an id.
    persisted: broadcast::Sender<Arc<Event>>,
    /// Serialises "insert then broadcast" so persisted events reach subscribers in id order,
    /// which the SSE replay relies on to never skip or repeat an event.
    publish_lock: Arc<tokio::sync::Mutex<()>>,
    /// Lossless subscribers ([`EventBus::tap`]); closed ones are dropped on the next send.
    taps: Arc<std::sync::Mutex<Vec<mpsc::UnboundedSender<Arc<Event>>>>>,
}

impl EventBus {
    pub fn new(store: Store, clock: SharedClock, metrics: Arc<Metrics>) -> Self {
        let (all, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (persisted, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            store,
            clock,
            metrics,
            all,
            persisted,
            publish_lock: Default::default(),
            taps: Default::default(),
        }
    }

    /// A lossless subscription: every event published from now on, persisted or transient, in
    /// publishing order. Unbounded, so the reader must keep up on average (the notifier only
    /// matches rules and batches writes).
    pub fn tap(&self) -> mpsc::UnboundedReceiver<Arc<Event>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.taps.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        receiver
    }

    fn send_to_taps(&self, event: &Arc<Event>) {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        if !taps.is_empty() {
            taps.retain(|tap| tap.send(event.clone()).is_ok());
        }
    }

    /// Publishes an event and returns it as stored (with its id when persisted).
    pub async fn publish(&self, event: NewEvent) -> Arc<Event> {
        self.metrics
            .events_published
            .get_or_create(&EventLabels {
                severity: event.severity.as_str(),
                source: event.source.as_str(),
            })
            .inc();
        trace_event(&event);
        if !event.is_persistent() {
            let transient = Arc::new(unstored(event, self.clock.now()));
            self.send_to_taps(&transient);
            let _ = self.all.send(transient.clone());
            return transient;
        }
        let _guard = self.publish_lock.lock().await;
        // Stamped under the lock, so persisted events' times never go backwards in id order.
        let ts = self.clock.now();
        let published = match self.store.insert_event(&event, ts).await {
            Ok(stored) => Arc::new(stored),
            Err(e) => {
                tracing::error!(error = %e, "could not persist an event; broadcasting it without an id");
                Arc::new(unstored(event, ts))
            }
        };
        self.send_to_taps(&published);
        // A send only fails when nobody listens, which is fine.
        let _ = self.persisted.send(published.clone());
        let _ = self.all.send(published.clone());
        published
    }

    /// Publishes several events at once, as [`EventBus::publish`] would one by one, except that
    /// the persisted ones are written in one transaction (and stamped with one time): a stale
    /// scan may warn about thousands of instances in one go, and one commit per event would
    /// cost more than the scan itself. Persisted events are still broadcast in id order.
    pub async fn publish_many(&self, events: Vec<NewEvent>) {
        let mut persistent = Vec::new();
        for event in events {
            self.metrics
                .events_published
                .get_or_create(&EventLabels {
                    severity: event.severity.as_str(),
                    source: event.source.as_str(),
                })
                .inc();
            trace_event(&event);
            if event.is_persistent() {
                persistent.push(event);
            } else {
                let transient = Arc::new(unstored(event, self.clock.now()));
                self.send_to_taps(&transient);
                let _ = self.all.send(transient);
            }
        }
        if persistent.is_empty() {
            return;
        }
        let _guard = self.publish_lock.lock().await;
        let ts = self.clock.now();
        let published: Vec<Event> = match self.store.insert_events_returning(&persistent, ts).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, count = persistent.len(), "could not persist events; broadcasting them without ids");
                persistent.into_iter().map(|event| unstored(event, ts)).collect()
            }
        };
        for event in published {
            let event = Arc::new(event);
            self.send_to_taps(&event);
            let _ = self.persisted.send(event.clone());
            let _ = self.all.send(event);
        }
    }

    /// Subscribes to persisted events only, or to all events with `all`. Events published after
    /// this call are received; to also read what is already in the store without a gap,
    /// subscribe *first*, then read the store, then drop received events whose id is not above
    /// the last one read.
    pub fn subscribe(&self, all: bool) -> broadcast::Receiver<Arc<Event>> {
        if all {
            self.all.subscribe()
        } else {
            self.persisted.subscribe()
        }
    }

    /// Runs `f` while no persisted event can be published, for a reader that needs the store and
    /// the channels to stand still (the SSE stream does not: it subscribes first instead, so a
    /// long replay never holds up publishers).
    pub async fn with_publishing_paused<T>(&self, f: impl AsyncFnOnce() -> T) -> T {
        let _guard = self.publish_lock.lock().await;
        f().await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// An event that has no id: transient, or one the store refused.
fn unstored(event: NewEvent, ts: chrono::DateTime<chrono::Utc>) -> Event {
    Event {
        id: None,
        ts,
        severity: event.severity,
        source: event.source,
        message: event.message,
        project_id: event.project_id,
        stage_id: event.stage_id,
        instance_id: event.instance_id,
        details: event.details,
    }
}

fn trace_event(event: &NewEvent) {
    let source = event.source.as_str();
    let message = event.message.as_str();
    match event.severity {
        Severity::Debug => tracing::debug!(source, project_id = event.project_id, "{message}"),
        Severity::Info => tracing::info!(source, project_id = event.project_id, "{message}"),
        Severity::Warn => tracing::warn!(source, project_id = event.project_id, "{message}"),
        Severity::Error => tracing::error!(source, project_id = event.project_id, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::domain::event::Source;

    async fn bus() -> (EventBus, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let store = Store::open(dir.path()).await.expect("the store opens");
        (
            EventBus::new(store, Arc::new(SystemClock), Arc::new(Metrics::new())),
            dir,
        )
    }

    #[tokio::test]
    async fn persisted_events_get_increasing_ids_and_reach_both_channels() {
        let (bus, _dir) = bus().await;
        let mut persisted = bus.subscribe(false);
        let mut all = bus.subscribe(true);
        let first = bus.publish(NewEvent::warn(Source::Poller, "one")).await;
        let second = bus.publish(NewEvent::info(Source::Api, "two").recorded()).await;
        let (Some(a), Some(b)) = (first.id, second.id) else {
            panic!("persisted events have ids")
        };
        assert!(a < b);
        for receiver in [&mut persisted, &mut all] {
            assert_eq!(receiver.recv().await.expect("an event").id, Some(a));
            assert_eq!(receiver.recv().await.expect("an event").id, Some(b));
        }
        assert_eq!(bus.store().latest_event_id().await.expect("a query"), Some(b));
    }

    #[tokio::test]
    async fn transient_events_reach_only_the_all_channel_and_are_not_stored() {
        let (bus, _dir) = bus().await;
        let mut persisted = bus.subscribe(false);
        let mut all = bus.subscribe(true);
        let transient = bus.publish(NewEvent::info(Source::System, "hello")).await;
        assert_eq!(transient.id, None);
        assert_eq!(all.recv().await.expect("an event").message, "hello");
        assert!(matches!(
            persisted.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        assert_eq!(bus.store().latest_event_id().await.expect("a query"), None);
    }

    #[tokio::test]
    async fn many_events_published_at_once_are_stored_in_one_go_and_broadcast_in_id_order() {
        let (bus, _dir) = bus().await;
        let mut persisted = bus.subscribe(false);
        let mut all = bus.subscribe(true);
        bus.publish_many(vec![
            NewEvent::warn(Source::Stale, "one"),
            NewEvent::info(Source::Stale, "transient"),
            NewEvent::warn(Source::Stale, "two"),
        ])
        .await;
        let one = persisted.recv().await.expect("an event");
        let two = persisted.recv().await.expect("an event");
        assert_eq!((one.message.as_str(), two.message.as_str()), ("one", "two"));
        assert!(one.id.expect("an id") < two.id.expect("an id"));
        assert_eq!(all.recv().await.expect("an event").message, "transient");
        assert_eq!(bus.store().latest_event_id().await.expect("a query"), two.id);
        bus.publish_many(Vec::new()).await;
    }

    #[tokio::test]
    async fn a_tap_receives_every_event_in_publishing_order_however_many() {
        let (bus, _dir) = bus().await;
        let mut tap = bus.tap();
        bus.publish(NewEvent::info(Source::System, "transient")).await;
        let events: Vec<NewEvent> = (0..3000)
            .map(|n| NewEvent::warn(Source::Stale, format!("w{n}")))
            .collect();
        bus.publish_many(events).await;
        assert_eq!(tap.recv().await.expect("an event").message, "transient");
        for n in 0..3000 {
            assert_eq!(tap.recv().await.expect("an event").message, format!("w{n}"));
        }
        drop(tap);
        bus.publish(NewEvent::warn(Source::Stale, "after the tap closed"))
            .await;
        assert!(bus.taps.lock().unwrap().is_empty(), "a closed tap is dropped");
    }

    #[tokio::test]
    async fn concurrent_publishers_broadcast_persisted_events_in_id_order() {
        let (bus, _dir) = bus().await;
        let mut persisted = bus.subscribe(false);
        let publishers: Vec<_> = (0..20)
            .map(|n| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    bus.publish(NewEvent::error(Source::Deployer, format!("e{n}")))
                        .await
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.expect("the publisher ends");
        }
        let mut previous = 0;
        for _ in 0..20 {
            let id = persisted.recv().await.expect("an event").id.expect("an id");
            assert!(id > previous, "{id} after {previous}");
            previous = id;
        }
    }
}
