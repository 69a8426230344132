//! Login sessions: how a new one is made (a random cookie value whose hash the store keeps, a
//! CSRF token bound to it, an expiry seven days out) and the hourly job that deletes expired
//! ones. Expiry is enforced on every look-up by the store; the job only keeps the table small.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::domain::user::Session;
use crate::store::Store;

/// How long a session lasts after login. Sessions are not extended on use: a stolen cookie is
/// worth at most this long, and logging in once a week is a small price for that.
pub const SESSION_TTL: TimeDelta = TimeDelta::days(7);

/// How often expired sessions are deleted.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// A session about to be stored, with the cookie value that only the client will hold.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The `dw_session` cookie value; the store keeps only its hash.
    pub cookie_value: String,
    pub session: Session,
}

/// Makes a new session for `user_id`, valid for [`SESSION_TTL`] from `now`.
pub fn new_session(user_id: i64, now: DateTime<Utc>) -> NewSession {
    let (cookie_value, id_hash) = super::new_session_id();
    NewSession {
        cookie_value,
        session: Session {
            id_hash,
            user_id,
            csrf_token: super::new_csrf_token(),
            created_at: now,
            expires_at: now + SESSION_TTL,
        },
    }
}

/// Deletes the sessions that have expired at the clock's current time; returns how many went.
pub async fn prune_sessions_once(store: &Store, clock: &SharedClock) -> anyhow::Result<u64> {
    Ok(store.prune_sessions(clock.now()).await?)
}

/// Runs [`prune_sessions_once`] at start and then hourly until `shutdown`. A failure is logged
/// and retried on the next tick: an expired session left in the table is already refused.
pub async fn prune_sessions_loop(store: Store, clock: SharedClock, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => match prune_sessions_once(&store, &clock).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "pruned expired sessions"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "pruning expired sessions failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_expires_after_seven_days_and_stores_only_the_hash_of_its_cookie() {
        let now = Utc::now();
        let new = new_session(7, now);
        assert_eq!(new.session.user_id, 7);
        assert_eq!(
            new.session.expires_at - new.session.created_at,
            TimeDelta::days(7)
        );
        assert_eq!(super::super::hash_token(&new.cookie_value), new.session.id_hash);
        assert_ne!(new.cookie_value, new.session.id_hash);
        assert_eq!(new.session.csrf_token.len(), 64);
        assert_ne!(new_session(7, now).cookie_value, new.cookie_value);
    }
}
