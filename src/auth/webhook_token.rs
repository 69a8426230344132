//! The registry webhook's token: the one secret a registry sends (`?token=`) instead of user
//! credentials. It comes from `DOCKER_WATCHER_WEBHOOK_TOKEN` (then it is the operator's to
//! change, and rotating it here is refused) or is generated once and kept in the store, and
//! then an admin can rotate it: the new token is stored first and takes effect at once, the old
//! one stops working at once.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::store::{Store, StoreError};

/// The `meta` key of a generated token.
const META_KEY: &str = "webhook_token";

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The token is configured by `DOCKER_WATCHER_WEBHOOK_TOKEN`.
    #[error("the webhook token is set by DOCKER_WATCHER_WEBHOOK_TOKEN; change it there and restart")]
    Configured,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The current webhook token. Cheap to clone; every clone sees a rotation.
#[derive(Debug, Clone)]
pub struct WebhookToken {
    current: Arc<ArcSwap<String>>,
    configured: bool,
    store: Store,
}

impl WebhookToken {
    /// The configured token, or the stored one (generated and stored on the first start).
    pub async fn load(store: Store, configured: Option<&str>) -> Result<Self, StoreError> {
        let (token, configured) = match configured {
            Some(token) => (token.to_owned(), true),
            None => (
                store
                    .meta_get_or_insert(META_KEY, &super::random_secret())
                    .await?,
                false,
            ),
        };
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(token)),
            configured,
            store,
        })
    }

    pub fn get(&self) -> Arc<String> {
        self.current.load_full()
    }

    /// Whether it comes from `DOCKER_WATCHER_WEBHOOK_TOKEN` (and so cannot be rotated here).
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Replaces the token with a new random one, stored before it is used; returns it.
    pub async fn rotate(&self) -> Result<Arc<String>, RotateError> {
        if self.configured {
            return Err(RotateError::Configured);
        }
        let token = super::random_secret();
        self.store.meta_set(META_KEY, &token).await?;
        let token = Arc::new(token);
        self.current.store(token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_generated_token_survives_a_restart_until_it_is_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let first = WebhookToken::load(store.clone(), None).await.unwrap();
        let again = WebhookToken::load(store.clone(), None).await.unwrap();
        assert_eq!(first.get(), again.get());
        let clone = first.clone();
        let rotated = first.rotate().await.unwrap();
        assert_ne!(rotated, again.get());
        assert_eq!(clone.get(), rotated, "every clone sees the rotation");
        let after_restart = WebhookToken::load(store, None).await.unwrap();
        assert_eq!(after_restart.get(), rotated);
    }

    #[tokio::test]
    async fn a_configured_token_is_not_rotated_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let token = WebhookToken::load(store, Some("from-the-env")).await.unwrap();
        assert!(token.is_configured());
        assert!(matches!(token.rotate().await, Err(RotateError::Configured)));
        assert_eq!(token.get().as_str(), "from-the-env");
    }
}
