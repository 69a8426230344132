//! Login throttling that cannot lock the owner out. Failed attempts are counted in a sliding
//! window under three keys, each with its own consequence:
//! - a **client address** past [`MAX_ADDRESS_FAILURES`] is refused (429 with a retry-after),
//!   whatever username it tries — it is guessing;
//! - an **(address, username) pair** past [`MAX_FAILURES`] is refused, so one address cannot
//!   keep guessing one account's password;
//! - a **username** alone is never refused: failures from everywhere only slow its logins down,
//!   by a delay that grows with them (up to [`MAX_USERNAME_DELAY`]). Anyone can make a username
//!   fail, so refusing it would let anyone keep its owner out; a delay makes distributed
//!   guessing slow and still lets the right password in from a clean address.
//!
//! In memory on purpose: a restart forgiving a few attempts is harmless, and a store write per
//! failed login would let an attacker load the database.
//!
//! The limiter also bounds how many password checks run at once. Each argon2id verification
//! takes ~19 MiB and tens of milliseconds of CPU, so a burst of parallel logins would otherwise
//! exhaust memory, and would all pass the failure check before the first of them failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Failed attempts allowed per (address, username) within the window before that pair is
/// refused.
pub const MAX_FAILURES: usize = 10;
/// Failed attempts allowed per client address, whatever usernames it tried, before it is
/// refused.
pub const MAX_ADDRESS_FAILURES: usize = 20;
/// The window failures are counted in.
pub const WINDOW_SECONDS: i64 = 300;
/// Failures of a username (from anywhere) that cost its logins nothing; each one after them
/// doubles the delay, starting at [`FIRST_USERNAME_DELAY`].
pub const FREE_USERNAME_FAILURES: usize = 5;
/// The delay after the first failure beyond the free ones.
pub const FIRST_USERNAME_DELAY: Duration = Duration::from_millis(100);
/// The longest a username's logins are slowed down.
pub const MAX_USERNAME_DELAY: Duration = Duration::from_secs(5);

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

/// The three keys one login attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    address: String,
    pair: String,
    username: String,
}

impl LoginKeys {
    pub fn new(client: IpAddr, username: &str) -> Self {
        let address = client_key(client);
        let username = username_key(username);
        Self {
            pair: format!("{address}|{username}"),
            address,
            username,
        }
    }
}

/// What the limiter says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginVerdict {
    /// Go ahead, after waiting this long (zero for a username without recent failures).
    Allowed { delay: Duration },
    /// Refused: the address, or this address for this username, failed too often; retry after
    /// this many seconds.
    Refused { retry_after: u64 },
}

/// The delay a username's logins get after `failures` recent failures.
pub fn username_delay(failures: usize) -> Duration {
    let Some(beyond) = failures.checked_sub(FREE_USERNAME_FAILURES + 1) else {
        return Duration::ZERO;
    };
    let factor = 1u32 << beyond.min(16);
    FIRST_USERNAME_DELAY
        .saturating_mul(factor)
        .min(MAX_USERNAME_DELAY)
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

    /// Whether an attempt under `keys` may go ahead at `now`, and after how long.
    pub fn check(&self, keys: &LoginKeys, now: DateTime<Utc>) -> LoginVerdict {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window_start = now - TimeDelta::seconds(WINDOW_SECONDS);
        let mut recent = |key: &str| -> Vec<DateTime<Utc>> {
            match failures.get_mut(key) {
                Some(times) => {
                    times.retain(|t| *t > window_start);
                    times.clone()
                }
                None => Vec::new(),
            }
        };
        let mut wait = 0i64;
        for (key, limit) in [(&keys.address, MAX_ADDRESS_FAILURES), (&keys.pair, MAX_FAILURES)] {
            let times = recent(key);
            if times.len() >= limit {
                // Free again once the oldest failure that keeps it at the limit leaves the window.
                let oldest = times[times.len() - limit];
                wait = wait.max((oldest - window_start).num_seconds().max(1));
            }
        }
        if wait > 0 {
            return LoginVerdict::Refused {
                retry_after: wait as u64,
            };
        }
        LoginVerdict::Allowed {
            delay: username_delay(recent(&keys.username).len()),
        }
    }

    /// Counts a failed attempt under all three keys.
    pub fn record_failure(&self, keys: &LoginKeys, now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a flood of distinct keys: forget entries whose window has passed.
        if failures.len() > 10_000 {
            let window_start = now - TimeDelta::seconds(WINDOW_SECONDS);
            failures.retain(|_, times| times.iter().any(|t| *t > window_start));
        }
        for key in [&keys.address, &keys.pair, &keys.username] {
            failures.entry(key.clone()).or_default().push(now);
        }
    }

    /// Forgets the failures of the username, and of this address for it, after a successful
    /// login. The address's own failures stay: clearing them would let one valid account reset
    /// the counter of an address guessing other accounts' passwords.
    pub fn record_success(&self, keys: &LoginKeys) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&keys.pair);
        failures.remove(&keys.username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(verdict: LoginVerdict) -> bool {
        matches!(verdict, LoginVerdict::Refused { .. })
    }

    #[test]
    fn an_address_guessing_one_username_is_refused_until_the_window_passes() {
        let limiter = LoginRateLimiter::new();
        let keys = LoginKeys::new(ip("192.0.2.1"), "admin");
        let t0 = Utc::now();
        for i in 0..MAX_FAILURES {
            assert!(!refused(limiter.check(&keys, t0)), "attempt {i}");
            limiter.record_failure(&keys, t0);
        }
        let LoginVerdict::Refused { retry_after } = limiter.check(&keys, t0) else {
            panic!("not refused");
        };
        assert!(retry_after > 0 && retry_after <= WINDOW_SECONDS as u64);
        let later = t0 + TimeDelta::seconds(WINDOW_SECONDS + 1);
        assert!(!refused(limiter.check(&keys, later)));
    }

    #[test]
    fn an_address_guessing_many_usernames_is_refused_for_every_username() {
        let limiter = LoginRateLimiter::new();
        let now = Utc::now();
        for i in 0..MAX_ADDRESS_FAILURES {
            let keys = LoginKeys::new(ip("192.0.2.1"), &format!("user{i}"));
            assert!(!refused(limiter.check(&keys, now)), "attempt {i}");
            limiter.record_failure(&keys, now);
        }
        assert!(refused(
            limiter.check(&LoginKeys::new(ip("192.0.2.1"), "someone-new"), now)
        ));
        assert!(!refused(
            limiter.check(&LoginKeys::new(ip("192.0.2.2"), "someone-new"), now)
        ));
    }

    #[test]
    fn a_username_failing_from_everywhere_is_slowed_down_but_never_refused_from_a_clean_address() {
        let limiter = LoginRateLimiter::new();
        let now = Utc::now();
        // 100 failures for "admin", from 50 addresses: none of them is refused yet.
        for i in 0..100u32 {
            let keys = LoginKeys::new(ip(&format!("198.51.100.{}", i % 50)), "admin");
            limiter.record_failure(&keys, now);
        }
        let clean = LoginKeys::new(ip("192.0.2.99"), "admin");
        assert_eq!(
            limiter.check(&clean, now),
            LoginVerdict::Allowed {
                delay: MAX_USERNAME_DELAY
            }
        );
        // Another username from the same clean address is not slowed down.
        assert_eq!(
            limiter.check(&LoginKeys::new(ip("192.0.2.99"), "alice"), now),
            LoginVerdict::Allowed {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn the_username_delay_grows_from_nothing_to_its_cap() {
        assert_eq!(username_delay(0), Duration::ZERO);
        assert_eq!(username_delay(FREE_USERNAME_FAILURES), Duration::ZERO);
        assert_eq!(username_delay(FREE_USERNAME_FAILURES + 1), FIRST_USERNAME_DELAY);
        assert_eq!(
            username_delay(FREE_USERNAME_FAILURES + 2),
            FIRST_USERNAME_DELAY * 2
        );
        let delays: Vec<_> = (0..40).map(username_delay).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(username_delay(usize::MAX), MAX_USERNAME_DELAY);
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
    fn a_success_clears_the_username_and_its_pair_but_not_the_address() {
        let limiter = LoginRateLimiter::new();
        let now = Utc::now();
        let keys = LoginKeys::new(ip("192.0.2.1"), "alice");
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(&keys, now);
        }
        for i in 0..(MAX_ADDRESS_FAILURES - MAX_FAILURES) {
            limiter.record_failure(&LoginKeys::new(ip("192.0.2.1"), &format!("u{i}")), now);
        }
        limiter.record_success(&keys);
        // The address is still over its own limit...
        assert!(refused(limiter.check(&keys, now)));
        // ...but the username is forgiven everywhere else.
        assert_eq!(
            limiter.check(&LoginKeys::new(ip("192.0.2.2"), "alice"), now),
            LoginVerdict::Allowed {
                delay: Duration::ZERO
            }
        );
    }
}
