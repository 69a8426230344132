//! Holding a stage's requests (SPEC §3 "Workloads", strategy `stop_first`): while a deploy stops
//! the old instance and starts the new one, the stage's routes are marked with a [`Hold`], and
//! the proxy parks new requests for them on it instead of forwarding them to an instance that
//! is going away. Releasing the hold swaps in a table without the mark first and then wakes
//! every parked request at once (a `watch` channel: no polling, no task or thread per request),
//! and each looks its host up again — finding the new instance, or the old one brought back.
//!
//! A hold lasts at most as long as the deploy holding it: [`StageHold`] releases it when it is
//! dropped, so no path out of a deploy (an error, a panic, a cancelled task) leaves a stage
//! held. How long one request waits (`proxy_hold_seconds`) and how many may wait at once are
//! the proxy's to enforce; the hold only carries the numbers and the count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::{Route, RouteTable, RouteTarget, Routes};

/// One hold of one stage's routes. Compared by identity: two holds are never the same.
pub struct Hold {
    /// `true` once released; parked requests wait for it.
    released: watch::Sender<bool>,
    /// How long a request may wait before it is answered 503.
    max_wait: Duration,
    /// Requests parked on this hold right now.
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("released", &*self.released.borrow())
            .field("max_wait", &self.max_wait)
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

impl PartialEq for Hold {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Hold {}

impl Hold {
    fn new(max_wait: Duration) -> Self {
        Self {
            released: watch::Sender::new(false),
            max_wait,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How long a request may wait on this hold.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    pub fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// Parks one more request, unless `limit` are parked already. The ticket counts it until it
    /// is dropped.
    pub fn park(self: &Arc<Self>, limit: usize) -> Option<HoldTicket> {
        let parked = self.waiting.fetch_add(1, Ordering::SeqCst);
        let ticket = HoldTicket { hold: self.clone() };
        (parked < limit).then_some(ticket)
    }

    /// Requests parked on this hold right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.released.send_replace(true);
    }
}

/// One parked request, counted against the hold's limit while it lives.
#[derive(Debug)]
pub struct HoldTicket {
    hold: Arc<Hold>,
}

impl HoldTicket {
    /// Waits until the hold is released; returns at once if it already is.
    pub async fn released(&self) {
        let mut receiver = self.hold.released.subscribe();
        // The sender lives as long as the hold, which this ticket keeps alive: no error.
        let _ = receiver.wait_for(|released| *released).await;
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        self.hold.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stage held by a deploy; dropping it releases the hold (see [`StageHold::release`]).
#[derive(Debug)]
pub struct StageHold {
    table: RouteTable,
    hold: Arc<Hold>,
}

impl StageHold {
    /// Releases the hold: the table loses the stage's mark, then every parked request wakes
    /// and looks its host up in it. Call it after the route points where requests should go.
    pub fn release(self) {
        // Drop does the work, so an early return or a panic releases too.
    }

    /// Requests parked on the hold right now.
    pub fn waiting(&self) -> usize {
        self.hold.waiting()
    }
}

impl Drop for StageHold {
    fn drop(&mut self) {
        self.table.unhold(&self.hold);
    }
}

impl RouteTable {
    /// Holds the requests for the hosts routed to `instance_ids` right now (the instances a
    /// `stop_first` deploy replaces) until the returned guard is released or dropped; each
    /// waits at most `max_wait`. Routes rebuilt meanwhile stay held, and a held host stays
    /// routed (to its held route) after its instance stopped, so a request arriving between
    /// the old instance's stop and the new one's start waits instead of getting a 404.
    pub fn hold_instances(&self, instance_ids: &[i64], max_wait: Duration) -> StageHold {
        let hold = Arc::new(Hold::new(max_wait));
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        let built = self.built.load_full();
        let routes = built
            .iter()
            .filter(|route| match route.target {
                RouteTarget::Instance { instance_id, .. } => instance_ids.contains(&instance_id),
                RouteTarget::Proxy { .. } => false,
            })
            .cloned()
            .collect();
        holds.push(HeldRoutes {
            hold: hold.clone(),
            routes,
        });
        self.current.store(Arc::new(apply_holds(&built, &holds)));
        drop(holds);
        StageHold {
            table: self.clone(),
            hold,
        }
    }

    /// Ends `hold`: the table as last built from the store (with the other holds) swapped in,
    /// then the parked requests woken.
    fn unhold(&self, hold: &Arc<Hold>) {
        let mut holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|held| !Arc::ptr_eq(&held.hold, hold));
        let built = self.built.load_full();
        self.current.store(Arc::new(apply_holds(&built, &holds)));
        drop(holds);
        hold.release();
    }

    /// Swaps in a table built from the store, with the current holds applied: the one place
    /// both tables are written, under the holds' lock, so a hold and a rebuild never undo
    /// each other.
    pub(super) fn install(&self, built: Arc<Routes>) -> Arc<Routes> {
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        self.built.store(built.clone());
        let current = if holds.is_empty() {
            built
        } else {
            Arc::new(apply_holds(&built, &holds))
        };
        self.current.store(current.clone());
        current
    }
}

/// The hosts one hold holds, with their routes as they were when the hold began.
#[derive(Debug)]
pub(super) struct HeldRoutes {
    hold: Arc<Hold>,
    routes: Vec<Arc<Route>>,
}

/// `routes` with every held host marked, and a held host that lost its route (its instance
/// stopped) routed to its route from when the hold began, marked.
fn apply_holds(routes: &Routes, holds: &[HeldRoutes]) -> Routes {
    let mut by_host = routes.by_host.clone();
    for held in holds {
        for route in &held.routes {
            let entry = by_host
                .entry(route.hostname.clone())
                .or_insert_with(|| route.clone());
            *entry = held_route(entry, &held.hold);
        }
    }
    Routes { by_host }
}

fn held_route(route: &Route, hold: &Arc<Hold>) -> Arc<Route> {
    Arc::new(Route {
        hold: Some(hold.clone()),
        ..route.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Upstream;
    use crate::settings::LiveSettings;
    use crate::store::Store;

    fn route(host: &str, stage_id: i64, instance_id: i64, port: u16) -> Route {
        Route {
            hostname: host.into(),
            target: RouteTarget::Instance {
                project_id: 1,
                stage_id,
                instance_id,
            },
            upstream: Upstream {
                scheme: "http".into(),
                authority: format!("127.0.0.1:{port}"),
                base_path: String::new(),
                preserve_host: true,
                underscores_in_headers: false,
            },
            hold: None,
        }
    }

    async fn table() -> (RouteTable, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let settings = LiveSettings::load(store.clone(), Arc::new(crate::clock::SystemClock))
            .await
            .unwrap();
        (RouteTable::new(store, settings), dir)
    }

    fn install(table: &RouteTable, routes: Vec<Route>) {
        table.install(Arc::new(Routes::from_routes(routes)));
    }

    fn held(table: &RouteTable, host: &str) -> Option<(String, bool)> {
        let current = table.current();
        let route = current.lookup(host)?;
        Some((route.upstream.authority.clone(), route.hold.is_some()))
    }

    #[tokio::test]
    async fn a_hold_marks_only_the_replaced_instance_s_host_and_outlives_rebuilds() {
        let (table, _dir) = table().await;
        install(
            &table,
            vec![route("a.test", 1, 10, 1000), route("b.test", 2, 20, 2000)],
        );
        let hold = table.hold_instances(&[10], Duration::from_secs(5));
        assert_eq!(held(&table, "a.test"), Some(("127.0.0.1:1000".into(), true)));
        assert_eq!(held(&table, "b.test"), Some(("127.0.0.1:2000".into(), false)));

        // The old instance stopped: the store routes nothing to the host, the hold keeps it.
        install(&table, vec![route("b.test", 2, 20, 2000)]);
        assert_eq!(held(&table, "a.test"), Some(("127.0.0.1:1000".into(), true)));
        // The switch: the new instance's route, still held until the release.
        install(
            &table,
            vec![route("a.test", 1, 11, 1100), route("b.test", 2, 20, 2000)],
        );
        assert_eq!(held(&table, "a.test"), Some(("127.0.0.1:1100".into(), true)));

        hold.release();
        assert_eq!(held(&table, "a.test"), Some(("127.0.0.1:1100".into(), false)));
        install(&table, vec![route("b.test", 2, 20, 2000)]);
        assert_eq!(
            held(&table, "a.test"),
            None,
            "released, the host follows the store again"
        );
    }

    #[tokio::test]
    async fn parked_requests_wake_on_the_release_after_the_table_lost_the_mark() {
        let (table, _dir) = table().await;
        install(&table, vec![route("a.test", 1, 10, 1000)]);
        let hold = table.hold_instances(&[10], Duration::from_secs(5));
        let marked = table.current().lookup("a.test").unwrap().hold.clone().unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let ticket = marked.park(10).unwrap();
                let table = table.clone();
                tokio::spawn(async move {
                    ticket.released().await;
                    table.current().lookup("a.test").unwrap().hold.is_some()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hold.waiting(), 3);
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "they wait for the release"
        );
        // Dropping the guard releases, as an early return out of a deploy would.
        drop(hold);
        for waiter in waiters {
            let still_held = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("woken by the release")
                .unwrap();
            assert!(!still_held, "a woken request finds the host unheld");
        }
        assert_eq!(marked.waiting(), 0);
        assert!(marked.is_released());
    }

    #[tokio::test]
    async fn no_more_than_the_limit_wait_on_one_hold() {
        let (table, _dir) = table().await;
        install(&table, vec![route("a.test", 1, 10, 1000)]);
        let _hold = table.hold_instances(&[10], Duration::from_secs(5));
        let marked = table.current().lookup("a.test").unwrap().hold.clone().unwrap();
        let first = marked.park(2).unwrap();
        let _second = marked.park(2).unwrap();
        assert!(marked.park(2).is_none(), "a third is refused");
        assert_eq!(marked.waiting(), 2, "and not counted");
        drop(first);
        assert!(marked.park(2).is_some(), "room again once one left");
    }
}
