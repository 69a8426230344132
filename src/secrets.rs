//! Encryption at rest for the secrets docker-watcher must be able to read back (registry
//! passwords). XChaCha20-Poly1305 with a 256-bit key from `DOCKER_WATCHER_SECRET_KEY` (64 hex
//! characters or any passphrase, stretched with SHA-256) or, when unset, from a key file created
//! once in the data dir with mode 0600. A sealed value is `nonce ‖ ciphertext`.

use std::path::{Path, PathBuf};

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

    /// Reads the key file in `data_dir`, creating it (mode 0600) on first start. A key file
    /// other users can read is tightened to 0600 and its previous mode returned, so the caller
    /// can warn about it.
    pub fn from_key_file(data_dir: &Path) -> Result<(Self, Option<u32>), KeyFileError> {
        let path = data_dir.join(Self::KEY_FILE);
        if path.exists() {
            let tightened = make_private(&path).map_err(|source| KeyFileError::Unreadable {
                path: path.clone(),
                source,
            })?;
            let raw = std::fs::read(&path).map_err(|source| KeyFileError::Unreadable {
                path: path.clone(),
                source,
            })?;
            let key = std::str::from_utf8(&raw)
                .ok()
                .and_then(|text| hex::decode(text.trim()).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| KeyFileError::NotAKey { path: path.clone() })?;
            return Ok((Self::from_key(key), tightened));
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        write_private(&path, hex::encode(key).as_bytes())
            .map_err(|source| KeyFileError::Create { path, source })?;
        Ok((Self::from_key(key), None))
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

/// Takes every permission bit for group and others off `path`; returns the mode it had when
/// there were any.
fn make_private(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let was = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if was & 0o077 == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Some(was))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The key file cannot be used; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "{} does not hold a key (64 hex characters expected). Restore the key file this data dir \
         was created with, or set DOCKER_WATCHER_SECRET_KEY to its key; if the key is lost, move \
         the file aside: a new key is made and registry passwords must be entered again",
        path.display()
    )]
    NotAKey { path: PathBuf },
    #[error(
        "cannot read the key file {}: {source}. Make it readable (mode 0600) by the user \
         docker-watcher runs as",
        path.display()
    )]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot create the key file {}: {source}. Make the data dir writable by the user \
         docker-watcher runs as, or set DOCKER_WATCHER_SECRET_KEY",
        path.display()
    )]
    Create { path: PathBuf, source: std::io::Error },
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
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
        let (first, tightened) = SecretBox::from_key_file(dir.path()).unwrap();
        assert!(tightened.is_none());
        let sealed = first.seal("x");
        let (second, _) = SecretBox::from_key_file(dir.path()).unwrap();
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

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_tightened_and_reported_and_still_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = SecretBox::from_key_file(dir.path()).unwrap();
        let sealed = first.seal("x");
        let path = dir.path().join(SecretBox::KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (second, tightened) = SecretBox::from_key_file(dir.path()).unwrap();
        assert_eq!(tightened, Some(0o644));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(second.open(&sealed).unwrap(), "x");
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_naming_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SecretBox::KEY_FILE);
        for junk in [
            &b"hello"[..],
            b"",
            &[0xff, 0xfe, 0x00],
            "ab".repeat(31).as_bytes(),
        ] {
            std::fs::write(&path, junk).unwrap();
            let error = SecretBox::from_key_file(dir.path()).unwrap_err().to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains("Restore the key file"), "{error}");
        }
    }
}
