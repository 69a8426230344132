//! Bearer tokens from a registry's token service (the distribution "token authentication"
//! spec): reading the token response and caching tokens until shortly before they expire, so
//! that a poll cycle asks the token service once per repository and credential, not once per
//! request.
//!
//! The cache is keyed by (registry host, scope, credentials): a token grants one scope on one
//! registry to one identity, anonymous tokens are kept apart from authenticated ones, and the
//! credentials part is the username plus a SHA-256 of the password — so that a changed or wrong
//! password never rides on a token the right one obtained, and no password is kept as a key. Each key has its own async lock, so concurrent requests for the same
//! repository wait for one token fetch instead of each starting their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::registry::RegistryError;

/// The lifetime the spec prescribes when a token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// How long before its expiry a token stops being used: a request sent with a token that is
/// about to expire may arrive after it did.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Past this many entries, expired tokens are swept out on insertion (repositories removed from
/// watching leave theirs behind otherwise).
const SWEEP_THRESHOLD: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub host: String,
    pub scope: String,
    /// `None` for anonymous tokens; see [`credentials_identity`].
    pub identity: Option<String>,
}

/// `username:<sha256 of username NUL password>`: tells credentials apart without keeping the
/// password itself.
pub(crate) fn credentials_identity(username: &str, password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(username.as_bytes());
    hasher.update([0]);
    hasher.update(password.as_bytes());
    format!("{username}:{}", hex::encode(hasher.finalize()))
}

#[derive(Clone)]
pub(crate) struct CachedToken {
    pub token: String,
    /// When to stop using it: its expiry less [`EXPIRY_MARGIN`].
    pub use_until: Instant,
}

impl CachedToken {
    pub fn new(token: String, lifetime: Duration, fetched_at: Instant) -> Self {
        // A token living less than twice the margin is used for half its life instead.
        let margin = EXPIRY_MARGIN.min(lifetime / 2);
        Self {
            token,
            use_until: fetched_at + lifetime - margin,
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.use_until
    }
}

/// One cache slot: the async lock serialises fetches for its key.
pub(crate) type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

#[derive(Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<TokenKey, TokenSlot>>,
}

impl TokenCache {
    /// The slot for `key`, created empty when new.
    pub fn slot(&self, key: &TokenKey) -> TokenSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= SWEEP_THRESHOLD {
            let now = Instant::now();
            // A slot that is locked is being filled right now: keep it.
            slots.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |token| token.as_ref().is_some_and(|t| t.is_fresh(now)))
            });
        }
        slots.entry(key.clone()).or_default().clone()
    }
}

/// A token service's answer. Docker's `token` and OAuth2's `access_token` are synonyms; the
/// spec says clients must accept both.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads a token response body into the token and its lifetime.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<(String, Duration), RegistryError> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| RegistryError::protocol(format!("the token service answered unreadable JSON: {e}")))?;
    let token = response
        .token
        .filter(|t| !t.is_empty())
        .or(response.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| RegistryError::protocol("the token service answered without a token"))?;
    if token.chars().any(|c| c.is_control() || c == ' ') {
        // It goes into a header verbatim; a space or line break would corrupt the request.
        return Err(RegistryError::protocol(
            "the token service answered a token with spaces or control characters",
        ));
    }
    let lifetime = match response.expires_in {
        Some(0) | None => DEFAULT_LIFETIME,
        Some(seconds) => Duration::from_secs(seconds),
    };
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_access_token_are_both_accepted_with_a_default_lifetime() {
        assert_eq!(
            parse_token_response(br#"{"token":"abc","expires_in":300}"#),
            Ok(("abc".to_owned(), Duration::from_secs(300)))
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"xyz"}"#),
            Ok(("xyz".to_owned(), DEFAULT_LIFETIME))
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"xyz","issued_at":"2024-01-01T00:00:00Z"}"#),
            Ok(("xyz".to_owned(), DEFAULT_LIFETIME))
        );
    }

    #[test]
    fn token_responses_without_a_usable_token_are_protocol_errors() {
        for body in [
            &b"{}"[..],
            b"not json",
            br#"{"token":"a b"}"#,
            br#"{"token":"a\r\nX: y"}"#,
        ] {
            assert!(
                matches!(parse_token_response(body), Err(RegistryError::Protocol { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn credentials_are_told_apart_by_password_without_keeping_it() {
        let right = credentials_identity("dwtest", "secret");
        assert_eq!(right, credentials_identity("dwtest", "secret"));
        assert_ne!(right, credentials_identity("dwtest", "wrong"));
        assert_ne!(credentials_identity("a", "bc"), credentials_identity("ab", "c"));
        assert!(right.starts_with("dwtest:") && !right.contains("secret"));
    }

    #[test]
    fn tokens_are_used_until_shortly_before_they_expire() {
        let start = Instant::now();
        let token = CachedToken::new("t".into(), Duration::from_secs(60), start);
        assert!(token.is_fresh(start + Duration::from_secs(49)));
        assert!(!token.is_fresh(start + Duration::from_secs(50)));
        let short = CachedToken::new("t".into(), Duration::from_secs(4), start);
        assert!(short.is_fresh(start + Duration::from_secs(1)));
        assert!(!short.is_fresh(start + Duration::from_secs(2)));
    }
}
