//! Login rate limiting: failed attempts are counted per client address and per username in a
//! sliding window; past the limit, logins are refused with a retry-after until the window moves
//! on. In memory on purpose: a restart forgiving a few attempts is harmless, and a store write
//! per failed login would let an attacker load the database.
//!
//! The limiter also bounds how many password checks run at once. Each argon2id verification
//! takes ~19 MiB and tens of milliseconds of CPU, so a burst of parallel logins would otherwise
//! exhaust memory, and would all pass the failure check before the first of them failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

/// Failed attempts allowed per key within the window.
pub const MAX_FAILURES: usize = 10;
/// The window failures are counted in.
pub const WINDOW_SECONDS: i64 = 300;

/// The key failures from a client address are counted under. An IPv6 client is counted per /64,
/// the block one host or home connection is usually given, so rotating addresses within it
/// gains an attacker nothing; IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("ip:{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}

/// The key failures for a username are counted under. Usernames are case-insensitive, and the
/// key is cut to the longest valid username so junk names cannot grow the table's keys.
pub fn username_key(username: &str) -> String {
    let name: String = username.chars().take(64).collect();
    format!("user:{}", name.to_lowercase())
}

/// Password verifications allowed to run at the same time.
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 4;

#[derive(Debug)]
pub struct LoginRateLimiter {
    failures: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
    verifications: tokio::sync::Semaphore,
}

impl Default for LoginRateLimiter {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            verifications: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }
}

impl LoginRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for a turn to verify a password; the turn ends when the permit is dropped. The
    /// semaphore is never closed, so this only ever waits; `None` would mean it was closed, and
    /// then a login proceeding without a turn is better than one refused with a 500.
    pub async fn verification_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.verifications.acquire().await.ok()
    }

    /// `Err(seconds)` when any of `keys` is over the limit at `now`.
    pub fn check(&self, keys: &[String], now: DateTime<Utc>) -> Result<(), u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window_start = now - TimeDelta::seconds(WINDOW_SECONDS);
        let mut wait = 0i64;
        for key in keys {
            if let Some(times) = failures.get_mut(key) {
                times.retain(|t| *t > window_start);
                if times.len() >= MAX_FAILURES {
                    let oldest = times[times.len() - MAX_FAILURES];
                    wait = wait.max((oldest - window_start).num_seconds().max(1));
                }
            }
        }
        if wait > 0 { Err(wait as u64) } else { Ok(()) }
    }

    /// Counts a failed attempt against every key.
    pub fn record_failure(&self, keys: &[String], now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a flood of distinct keys: forget entries whose window has passed.
        if failures.len() > 10_000 {
            let window_start = now - TimeDelta::seconds(WINDOW_SECONDS);
            failures.retain(|_, times| times.iter().any(|t| *t > window_start));
        }
        for key in keys {
            failures.entry(key.clone()).or_default().push(now);
        }
    }

    /// Forgets the failures of a user after a successful login.
    pub fn record_success(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_refused_after_too_many_failures_until_the_window_passes() {
        let limiter = LoginRateLimiter::new();
        let keys = vec!["ip:127.0.0.1".to_owned()];
        let t0 = Utc::now();
        for i in 0..MAX_FAILURES {
            assert!(limiter.check(&keys, t0).is_ok(), "attempt {i}");
            limiter.record_failure(&keys, t0);
        }
        let wait = limiter.check(&keys, t0).unwrap_err();
        assert!(wait > 0 && wait <= WINDOW_SECONDS as u64);
        assert!(
            limiter
                .check(&keys, t0 + TimeDelta::seconds(WINDOW_SECONDS + 1))
                .is_ok()
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_block_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "ip:192.0.2.7");
    }

    #[test]
    fn usernames_are_counted_case_insensitively() {
        assert_eq!(username_key("Alice"), username_key("alice"));
        assert_eq!(username_key(&"x".repeat(1000)).len(), "user:".len() + 64);
    }

    #[test]
    fn a_success_clears_the_failures_of_its_keys() {
        let limiter = LoginRateLimiter::new();
        let keys = vec!["user:alice".to_owned()];
        let now = Utc::now();
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(&keys, now);
        }
        limiter.record_success(&keys);
        assert!(limiter.check(&keys, now).is_ok());
    }
}
