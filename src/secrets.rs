//! Encryption at rest for the secrets docker-watcher must be able to read back (registry
//! passwords). XChaCha20-Poly1305 with a 256-bit key from `DOCKER_WATCHER_SECRET_KEY` (64 hex
//! characters or any passphrase, stretched with SHA-256) or, when unset, from a key file created
//! once in the data dir with mode 0600. A sealed value is `nonce ‖ ciphertext`.

use std::path::Path;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::project::SealedSecret;

const NONCE_LEN: usize = 24;

/// What the key check value seals: a known text, so a key can be tested before any secret is.
const KEY_CHECK_PLAINTEXT: &str = "docker-watcher secret key check";

/// The key in use is not the key the data was sealed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the secret key does not match this database: its secrets were sealed with another key. \
     Set DOCKER_WATCHER_SECRET_KEY to that installation's key, or put its secret.key file in the data dir"
)]
pub struct KeyMismatch;

/// Seals and opens secrets with the installation's key. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: std::sync::Arc<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The key file's name inside the data dir.
    pub const KEY_FILE: &'static str = "secret.key";

    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: std::sync::Arc::new(XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&key))),
        }
    }

    /// A key given by the operator: 64 hex characters are used as they are; anything else is a
    /// passphrase hashed to 32 bytes.
    pub fn from_configured(secret: &str) -> Self {
        let mut key = [0u8; 32];
        match hex::decode(secret.trim()) {
            Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
            _ => key.copy_from_slice(&Sha256::digest(secret.as_bytes())),
        }
        Self::from_key(key)
    }

    /// Reads the key file in `data_dir`, creating it (mode 0600) on first start.
    pub fn from_key_file(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(Self::KEY_FILE);
        if path.exists() {
            let raw =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let bytes = hex::decode(raw.trim()).with_context(|| format!("{} is not hex", path.display()))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} must hold 32 bytes as hex", path.display()))?;
            return Ok(Self::from_key(key));
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        write_private(&path, hex::encode(key).as_bytes())?;
        Ok(Self::from_key(key))
    }

    pub fn seal(&self, plaintext: &str) -> SealedSecret {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        SealedSecret(sealed)
    }

    /// A value to keep next to sealed data (hex of a sealed known text): whoever opens the data
    /// later can tell a wrong key at once ([`SecretBox::verify_key_check`]).
    pub fn key_check_value(&self) -> String {
        hex::encode(self.seal(KEY_CHECK_PLAINTEXT).0)
    }

    /// Whether this box's key made `stored` (a [`SecretBox::key_check_value`]).
    pub fn verify_key_check(&self, stored: &str) -> Result<(), KeyMismatch> {
        let sealed = hex::decode(stored.trim()).map_err(|_| KeyMismatch)?;
        match self.open(&SealedSecret(sealed)) {
            Ok(text) if text == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(KeyMismatch),
        }
    }

    /// Opens a sealed secret; fails when it was sealed with another key or tampered with.
    pub fn open(&self, sealed: &SealedSecret) -> anyhow::Result<String> {
        anyhow::ensure!(sealed.0.len() > NONCE_LEN, "sealed secret is too short");
        let (nonce, ciphertext) = sealed.0.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt secret: wrong key (DOCKER_WATCHER_SECRET_KEY changed?) or corrupt data"
                )
            })?;
        String::from_utf8(plaintext).context("decrypted secret is not UTF-8")
    }
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_only() {
        let a = SecretBox::from_configured("correct horse battery staple");
        let b = SecretBox::from_configured("another key");
        let sealed = a.seal("registry-password");
        assert_ne!(sealed.0, b"registry-password".to_vec());
        assert_eq!(a.open(&sealed).unwrap(), "registry-password");
        assert!(b.open(&sealed).is_err());
    }

    #[test]
    fn the_key_check_value_verifies_with_the_same_key_only() {
        let a = SecretBox::from_configured("correct horse battery staple");
        let b = SecretBox::from_configured("another key");
        let check = a.key_check_value();
        assert_eq!(a.verify_key_check(&check), Ok(()));
        assert_eq!(b.verify_key_check(&check), Err(KeyMismatch));
        assert_eq!(a.verify_key_check("not hex"), Err(KeyMismatch));
    }

    #[test]
    fn the_key_file_is_created_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::from_key_file(dir.path()).unwrap();
        let sealed = first.seal("x");
        let second = SecretBox::from_key_file(dir.path()).unwrap();
        assert_eq!(second.open(&sealed).unwrap(), "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SecretBox::KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
