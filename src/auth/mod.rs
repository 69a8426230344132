//! Credentials: argon2id password hashes, API tokens (`dw_…`) and session ids. Tokens and
//! session ids are 256-bit random values, so a plain SHA-256 is enough to store them safely;
//! passwords are low-entropy and get argon2id.
//!
//! This module computes and checks credentials (plus the login rate limiter's in-memory state
//! and the job that prunes expired sessions); the store keeps the hashes, `web` decides who may
//! do what.
//!
//! # Layout
//! - this file: password hashing, token and session-id generation, token names.
//! - [`rate_limit`]: failed-login counting per client and per username.
//! - [`sessions`]: new sessions and the pruning of expired ones.
//! - [`webhook_token`]: the registry webhook's token, loaded or generated, and its rotation.

pub mod rate_limit;
pub mod sessions;
pub mod webhook_token;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::ParseError;
use crate::domain::user::Password;

/// The prefix that makes docker-watcher tokens recognisable (and greppable by secret scanners).
pub const TOKEN_PREFIX: &str = "dw_";

/// Hashes a password with argon2id and a random salt, in PHC string form.
pub fn hash_password(password: &Password) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Checks a password against a stored PHC hash. A malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a login for an unknown name takes
/// as long as one with a wrong password (no user enumeration by timing).
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&Password::parse("not a real password").expect("valid length"))
            .expect("argon2 with default parameters hashes")
    })
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new API token: `dw_` + 64 hex characters. Returns the token (shown once) and its hash.
pub fn new_api_token() -> (String, String) {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    let hash = hash_token(&token);
    (token, hash)
}

/// A new session id for the cookie, and its hash for the store.
pub fn new_session_id() -> (String, String) {
    let id = random_hex(32);
    let hash = hash_token(&id);
    (id, hash)
}

/// A CSRF token bound to a session.
pub fn new_csrf_token() -> String {
    random_hex(32)
}

/// A generated password for the bootstrap admin.
pub fn generate_password() -> String {
    random_hex(12)
}

/// A random secret for the webhook token and the installation id.
pub fn random_secret() -> String {
    random_hex(24)
}

/// The longest API token name, in characters.
pub const TOKEN_NAME_MAX_CHARS: usize = 100;

/// An API token's name as the user gave it, trimmed: 1 to 100 characters, no control
/// characters (it is shown in lists and tables, where a newline would break the layout).
pub fn parse_token_name(raw: &str) -> Result<String, ParseError> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > TOKEN_NAME_MAX_CHARS {
        return Err(ParseError::new(format!(
            "must be 1 to {TOKEN_NAME_MAX_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// SHA-256 of a token or session id, hex-encoded: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password(&Password::parse("hunter2hunter2").unwrap()).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "hunter2hunter2"));
        assert!(!verify_password(&hash, "hunter3hunter3"));
        assert!(!verify_password("garbage", "hunter2hunter2"));
    }

    #[test]
    fn api_tokens_have_the_prefix_and_hash_to_what_the_store_keeps() {
        let (token, hash) = new_api_token();
        assert!(token.starts_with("dw_") && token.len() == 67);
        assert_eq!(hash_token(&token), hash);
        assert_ne!(new_api_token().0, token);
    }

    #[test]
    fn token_names_are_trimmed_and_bounded() {
        assert_eq!(parse_token_name("  ci deploys ").unwrap(), "ci deploys");
        assert_eq!(parse_token_name(&"é".repeat(100)).unwrap().chars().count(), 100);
        assert!(parse_token_name("").is_err());
        assert!(parse_token_name("   ").is_err());
        assert!(parse_token_name(&"a".repeat(101)).is_err());
        assert!(parse_token_name("two\nlines").is_err());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
