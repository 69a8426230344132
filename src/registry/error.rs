//! `RegistryError`: what can go wrong when speaking to a registry, in variants the poller branches
//! on — back off on the transient ones, honour `Retry-After`, report the rest to the user.

use std::fmt;
use std::time::Duration;

/// The failures of a registry request. Messages never contain passwords or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The repository, or the tag in it, does not exist (HTTP 404).
    #[error("not found in the registry (no such repository or tag)")]
    NotFound,
    /// The registry or its token service refused access: no credentials where some are needed,
    /// wrong ones, or credentials without the right to pull (HTTP 401 / 403).
    #[error("the registry refused access: {message}")]
    Unauthorized { message: String },
    /// HTTP 429, with the delay the registry asked for in `Retry-After`, when it gave one.
    #[error("the registry is rate limiting requests{}", RetryHint(retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// No HTTP answer at all: DNS failure, connection refused or reset, TLS failure, timeout.
    #[error("cannot reach the registry: {message}")]
    Unreachable { message: String },
    /// An HTTP status the protocol does not expect here (5xx, or an unexpected 4xx).
    #[error("the registry answered with HTTP status {status}")]
    Server { status: u16 },
    /// An answer that breaks the distribution protocol: unreadable JSON, a missing or malformed
    /// digest, a pagination loop, a body beyond any sane size.
    #[error("unexpected answer from the registry: {message}")]
    Protocol { message: String },
    /// The HTTP client could not be built (TLS set-up); only [`super::RegistryClient::new`]
    /// returns it.
    #[error("cannot set up the registry HTTP client: {message}")]
    Setup { message: String },
}

impl RegistryError {
    /// Whether trying again later may succeed without anyone changing anything: the registry
    /// is down, overloaded or rate limiting. A missing repository, refused credentials or a
    /// protocol violation will fail the same way until a person acts.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unreachable { .. } => true,
            // 408 Request Timeout and the 5xx family are the server's momentary trouble.
            Self::Server { status } => *status >= 500 || *status == 408,
            Self::NotFound | Self::Unauthorized { .. } | Self::Protocol { .. } | Self::Setup { .. } => false,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized {
            message: message.into(),
        }
    }
}

/// Formats the optional delay of a `RateLimited` error: ` (retry after 30 s)` or nothing.
struct RetryHint<'a>(&'a Option<Duration>);

impl fmt::Display for RetryHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(delay) => write!(f, " (retry after {} s)", delay.as_secs()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_momentary_failures_are_transient() {
        assert!(RegistryError::RateLimited { retry_after: None }.is_transient());
        assert!(
            RegistryError::Unreachable {
                message: "refused".into()
            }
            .is_transient()
        );
        assert!(RegistryError::Server { status: 503 }.is_transient());
        assert!(RegistryError::Server { status: 408 }.is_transient());
        assert!(!RegistryError::Server { status: 400 }.is_transient());
        assert!(!RegistryError::NotFound.is_transient());
        assert!(!RegistryError::unauthorized("no").is_transient());
        assert!(!RegistryError::protocol("bad json").is_transient());
    }

    #[test]
    fn a_rate_limit_message_names_the_delay_when_known() {
        let limited = RegistryError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            limited.to_string(),
            "the registry is rate limiting requests (retry after 30 s)"
        );
        let unknown = RegistryError::RateLimited { retry_after: None };
        assert_eq!(unknown.to_string(), "the registry is rate limiting requests");
    }
}
