//! The live settings: loaded from the store at start, changed through the API, and watched by the
//! jobs that depend on them (the stale scanner re-plans on a new threshold or interval without a
//! restart). The store is written first; only then do watchers see the new value.

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::domain::settings::{SettingError, Settings};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SettingsUpdateError {
    #[error(transparent)]
    Invalid(#[from] SettingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A handle on the current settings; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    store: Store,
    clock: SharedClock,
    tx: watch::Sender<Settings>,
    /// Serialises updates so two concurrent patches cannot interleave their read-modify-write.
    update_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl LiveSettings {
    pub async fn load(store: Store, clock: SharedClock) -> Result<Self, StoreError> {
        let settings = store.load_settings().await?;
        let (tx, _) = watch::channel(settings);
        Ok(Self {
            store,
            clock,
            tx,
            update_lock: Default::default(),
        })
    }

    /// The settings as they are now.
    pub fn current(&self) -> Settings {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Settings> {
        self.tx.subscribe()
    }

    /// Applies a JSON patch: all keys valid or nothing changes. Returns the new settings and
    /// the keys whose value changed (computed under the update lock, so concurrent patches each
    /// report their own changes).
    pub async fn update(
        &self,
        patch: &Map<String, Value>,
    ) -> Result<(Settings, Vec<String>), SettingsUpdateError> {
        let _guard = self.update_lock.lock().await;
        let (next, changed) = self.current().patched(patch)?;
        if !changed.is_empty() {
            self.store
                .save_settings(&next, &changed, self.clock.now())
                .await?;
            self.tx.send_replace(next.clone());
        }
        Ok((next, changed))
    }
}
