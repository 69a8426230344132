//! The per-stage lock with "latest target wins" (SPEC §3, Deploying): one deploy at a time per
//! stage; a target that arrives while another deploy runs waits its turn, and when several wait,
//! only the newest runs — the others give up as superseded, because deploying a tag that is
//! already outdated would only delay the one that matters.
//!
//! "Newest" is counted per *lane*: a single stage has one lane (every target replaces the
//! stage's one instance), a per-tag stage has one lane per tag (deploying `pr-2` does not make
//! a queued `pr-1` obsolete). Instance actions (stop, start, remove) take the lock without a
//! ticket: they wait for a running deploy but never supersede one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Which targets compete: `None` for a single stage, `Some(tag)` for one tag of a per-tag stage.
pub(crate) type Lane = Option<String>;

/// Every stage's lock. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageLocks {
    /// Entries are never removed: a stage costs a few dozen bytes and stages are few (SPEC §8).
    slots: Arc<Mutex<HashMap<i64, Arc<StageSlot>>>>,
}

#[derive(Debug, Default)]
struct StageSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The newest ticket handed out per lane.
    newest: Mutex<HashMap<Lane, u64>>,
    next_ticket: AtomicU64,
}

/// Holds a stage's lock until dropped.
#[derive(Debug)]
pub(crate) struct StageGuard {
    _guard: OwnedMutexGuard<()>,
}

impl StageLocks {
    fn slot(&self, stage_id: i64) -> Arc<StageSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(stage_id).or_default().clone()
    }

    /// Queues a target on `lane` and waits for the stage's lock. `None` when a newer target
    /// for the same lane arrived while this one waited: the caller reports it as superseded.
    pub(crate) async fn enter(&self, stage_id: i64, lane: Lane) -> Option<StageGuard> {
        let slot = self.slot(stage_id);
        let ticket = slot.next_ticket.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
            newest.insert(lane.clone(), ticket);
        }
        // tokio's mutex is fair (FIFO), so targets are served in arrival order and the newest
        // one is never starved by older ones.
        let guard = slot.lock.clone().lock_owned().await;
        let newest = slot.newest.lock().unwrap_or_else(|e| e.into_inner());
        (newest.get(&lane) == Some(&ticket)).then_some(StageGuard { _guard: guard })
    }

    /// Waits for the stage's lock without competing as a target.
    pub(crate) async fn lock(&self, stage_id: i64) -> StageGuard {
        let slot = self.slot(stage_id);
        StageGuard {
            _guard: slot.lock.clone().lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn of_several_waiting_targets_only_the_newest_runs() {
        let locks = StageLocks::default();
        let running = locks.enter(1, None).await.expect("the first target runs");
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let locks = locks.clone();
                // The test runtime is single-threaded: spawned tasks take their tickets in
                // spawn order once the test yields.
                tokio::spawn(async move { locks.enter(1, None).await.is_some() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(running);
        let mut ran = Vec::new();
        for task in waiting {
            ran.push(task.await.expect("the task ends"));
        }
        assert_eq!(ran.iter().filter(|r| **r).count(), 1, "{ran:?}");
        assert!(ran.last().copied().unwrap_or(false), "the newest wins: {ran:?}");
    }

    #[tokio::test]
    async fn targets_of_different_tags_do_not_supersede_each_other() {
        let locks = StageLocks::default();
        let running = locks.enter(1, Some("pr-1".into())).await.expect("runs");
        let a = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.enter(1, Some("pr-2".into())).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.enter(1, Some("pr-3".into())).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        assert!(a.await.expect("ends"));
        assert!(b.await.expect("ends"));
    }

    #[tokio::test]
    async fn other_stages_and_plain_locks_do_not_compete_for_targets() {
        let locks = StageLocks::default();
        let first = locks.enter(1, None).await.expect("runs");
        // Another stage is not blocked.
        let other = tokio::time::timeout(Duration::from_millis(100), locks.enter(2, None)).await;
        assert!(matches!(other, Ok(Some(_))));
        drop(first);
        let plain = locks.lock(1).await;
        drop(plain);
        assert!(locks.enter(1, None).await.is_some());
    }
}
