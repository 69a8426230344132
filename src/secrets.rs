//! Encryption at rest for the secrets docker-watcher must be able to read back (registry
//! passwords, secret environment variables). XChaCha20-Poly1305 with a 256-bit key from
//! `DOCKER_WATCHER_SECRET_KEY` or, when unset, from a key file created once in the data dir with
//! mode 0600. A sealed value is `nonce ‖ ciphertext`.
//!
//! `DOCKER_WATCHER_SECRET_KEY` is used as the key itself when it is 64 hex characters; anything
//! else is a passphrase, stretched with argon2id (the `argon2` crate's defaults: 19 MiB, 2
//! passes) and a random salt kept in the store (`meta.secret_kdf_salt`), so every replica sharing
//! the store derives the same key. Installations from before the salt sealed with one SHA-256 of
//! the passphrase: on the first start with a passphrase and no salt, every sealed value in the
//! store is opened with that old key and sealed again with the new one, and the salt is recorded
//! — one transaction, so it happens exactly once. The old key is still tried when a value does
//! not open with the new one, so a value sealed by an older version and kept elsewhere (a
//! backup) still opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::project::SealedSecret;
use crate::store::Store;
use crate::store::secrets::Resealed;

const NONCE_LEN: usize = 24;
/// Where the passphrase's argon2id salt lives in the store's `meta` table.
pub const KDF_SALT_KEY: &str = "secret_kdf_salt";
const SALT_LEN: usize = 16;

/// The `meta` key of the secret key's check value ([`SecretBox::key_check_value`]).
pub const KEY_CHECK_META: &str = "secret_key_check";

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
    cipher: Arc<XChaCha20Poly1305>,
    /// The pre-argon2id key of a passphrase (one SHA-256), tried when `cipher` fails.
    legacy: Option<Arc<XChaCha20Poly1305>>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

fn cipher(key: &[u8; 32]) -> Arc<XChaCha20Poly1305> {
    Arc::new(XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key)))
}

/// A configured secret that is a key already: 64 hex characters.
fn hex_key(secret: &str) -> Option<[u8; 32]> {
    hex::decode(secret.trim()).ok()?.try_into().ok()
}

/// The key a passphrase stretches to with argon2id and `salt`.
pub fn derive_key(passphrase: &str, salt: &[u8]) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| anyhow::anyhow!("deriving the secret key from DOCKER_WATCHER_SECRET_KEY: {e}"))?;
    Ok(key)
}

/// The pre-argon2id derivation, kept only to open what it sealed.
fn legacy_key(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

impl SecretBox {
    /// The key file's name inside the data dir.
    pub const KEY_FILE: &'static str = "secret.key";

    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: cipher(&key),
            legacy: None,
        }
    }

    /// The box of a configured `DOCKER_WATCHER_SECRET_KEY`: 64 hex characters as the key
    /// itself; a passphrase through argon2id with the store's hex `salt` (and the legacy key as
    /// the fallback for opening), or — for a store from before the salt, `None` — the legacy
    /// key alone. The derivation takes a while on purpose: call it off the async threads.
    pub fn from_configured(secret: &str, salt: Option<&str>) -> anyhow::Result<Self> {
        if let Some(key) = hex_key(secret) {
            return Ok(Self::from_key(key));
        }
        let legacy = cipher(&legacy_key(secret));
        match salt {
            Some(salt) => {
                let salt =
                    hex::decode(salt.trim()).with_context(|| format!("meta.{KDF_SALT_KEY} is not hex"))?;
                Ok(Self {
                    cipher: cipher(&derive_key(secret, &salt)?),
                    legacy: Some(legacy),
                })
            }
            None => Ok(Self {
                cipher: legacy,
                legacy: None,
            }),
        }
    }

    /// The installation's box: `DOCKER_WATCHER_SECRET_KEY` when configured (a hex key as it is,
    /// a passphrase through argon2id with the store's salt), else the key file in `data_dir`.
    /// The first start of a passphrase installation without a salt re-seals the store (see the
    /// module documentation). With the key file, the mode it had when it was tightened comes
    /// along (see [`Self::from_key_file`]).
    pub async fn for_installation(
        configured: Option<&str>,
        data_dir: &Path,
        store: &Store,
    ) -> anyhow::Result<(Self, Option<u32>)> {
        let Some(secret) = configured else {
            return Ok(Self::from_key_file(data_dir)?);
        };
        if hex_key(secret).is_some() {
            return Self::from_configured(secret, None).map(|secrets| (secrets, None));
        }
        let salt = match store.meta_get(KDF_SALT_KEY).await? {
            Some(salt) => salt,
            None => {
                let mut salt = [0u8; SALT_LEN];
                rand::rng().fill_bytes(&mut salt);
                let salt = hex::encode(salt);
                let fresh = Self::derive_off_thread(secret, &salt).await?;
                let outcome = store
                    .reseal_secrets(KDF_SALT_KEY, &salt, &[KEY_CHECK_META], |sealed| {
                        fresh.reseal(sealed)
                    })
                    .await
                    .context("re-sealing the stored secrets with the argon2id key")?;
                match outcome {
                    Resealed::Done { resealed, unreadable } => {
                        if resealed + unreadable > 0 {
                            tracing::info!(
                                resealed,
                                unreadable,
                                "re-sealed the stored secrets with the passphrase's argon2id key"
                            );
                        }
                        if unreadable > 0 {
                            tracing::warn!(
                                unreadable,
                                "some stored secrets do not open with DOCKER_WATCHER_SECRET_KEY; left as they were"
                            );
                        }
                        return Ok((fresh, None));
                    }
                    // Another replica got there first: its salt is the installation's.
                    Resealed::AlreadyDone(salt) => salt,
                }
            }
        };
        Self::derive_off_thread(secret, &salt)
            .await
            .map(|secrets| (secrets, None))
    }

    /// [`Self::from_configured`] on a blocking thread.
    async fn derive_off_thread(secret: &str, salt: &str) -> anyhow::Result<Self> {
        let (secret, salt) = (secret.to_owned(), salt.to_owned());
        tokio::task::spawn_blocking(move || Self::from_configured(&secret, Some(&salt)))
            .await
            .context("the key derivation task failed")?
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
        let nonce = XNonce::from_slice(nonce);
        let plaintext = self
            .cipher
            .decrypt(nonce, ciphertext)
            .or_else(|e| match &self.legacy {
                Some(legacy) => legacy.decrypt(nonce, ciphertext),
                None => Err(e),
            })
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt secret: wrong key (DOCKER_WATCHER_SECRET_KEY changed?) or corrupt data"
                )
            })?;
        String::from_utf8(plaintext).context("decrypted secret is not UTF-8")
    }

    /// A value sealed again with this box's key (whichever key opens it); `None` when it does
    /// not open.
    pub fn reseal(&self, sealed: &SealedSecret) -> Option<SealedSecret> {
        self.open(sealed).ok().map(|plain| self.seal(&plain))
    }
}

/// Masks secret values in text a container printed (its logs, a hook's output), so an answer or
/// an event never carries one even when the application echoes its environment. Values shorter
/// than [`SecretMask::MIN_LEN`] are left alone: masking every `1` in a log would hide the log,
/// not a secret.
#[derive(Default)]
pub struct SecretMask {
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl std::fmt::Debug for SecretMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretMask({} values)", self.values.len())
    }
}

impl SecretMask {
    pub const MIN_LEN: usize = 4;
    /// What a masked value reads as.
    pub const MASK: &'static str = "[secret]";

    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| v.len() >= Self::MIN_LEN).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// Opens every sealed value with `secrets` (values that do not open are skipped: they cannot
    /// have reached a container either).
    pub fn of_sealed<'a>(secrets: &SecretBox, sealed: impl IntoIterator<Item = &'a SealedSecret>) -> Self {
        Self::new(sealed.into_iter().filter_map(|s| secrets.open(s).ok()))
    }

    pub fn apply<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut text = std::borrow::Cow::Borrowed(text);
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = std::borrow::Cow::Owned(text.replace(value.as_str(), Self::MASK));
            }
        }
        text
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
    use crate::store::testing::{at, new_project, shop_prod, temp_store};

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_only() {
        let a = SecretBox::from_key(derive_key("correct horse battery staple", b"salt-of-16-bytes").unwrap());
        let b = SecretBox::from_key(derive_key("another key", b"salt-of-16-bytes").unwrap());
        let sealed = a.seal("registry-password");
        assert_ne!(sealed.0, b"registry-password".to_vec());
        assert_eq!(a.open(&sealed).unwrap(), "registry-password");
        assert!(b.open(&sealed).is_err());
    }

    #[test]
    fn the_key_check_value_verifies_with_the_same_key_only() {
        let a = SecretBox::from_configured(
            "correct horse battery staple",
            Some("00112233445566778899aabbccddeeff"),
        )
        .unwrap();
        let b = SecretBox::from_configured("another key", Some("00112233445566778899aabbccddeeff")).unwrap();
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

    #[test]
    fn secret_values_are_masked_in_output_longest_first() {
        let mask = SecretMask::new(["hunter2-long".to_owned(), "hunter2".to_owned(), "ab".to_owned()]);
        assert_eq!(
            mask.apply("DB=hunter2-long PW=hunter2 X=ab"),
            "DB=[secret] PW=[secret] X=ab"
        );
        assert!(matches!(
            mask.apply("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_passphrase_is_stretched_with_argon2id_and_its_salt() {
        let one = derive_key("passphrase", b"0123456789abcdef").unwrap();
        assert_eq!(one, derive_key("passphrase", b"0123456789abcdef").unwrap());
        assert_ne!(one, derive_key("passphrase", b"fedcba9876543210").unwrap());
        assert_ne!(one, legacy_key("passphrase"));
    }

    #[tokio::test]
    async fn a_hex_key_is_used_as_it_is_and_touches_no_salt() {
        let (store, dir) = temp_store().await;
        let hex = "11".repeat(32);
        let secrets = SecretBox::for_installation(Some(&hex), dir.path(), &store)
            .await
            .unwrap()
            .0;
        let sealed = secrets.seal("x");
        assert_eq!(SecretBox::from_key([0x11; 32]).open(&sealed).unwrap(), "x");
        assert_eq!(store.meta_get(KDF_SALT_KEY).await.unwrap(), None);
    }

    /// An installation from before argon2id: its registry password and secret variables were
    /// sealed with SHA-256 of the passphrase. The first start re-seals them under the new key,
    /// once; they open with the new key alone afterwards, and replicas agree on the salt.
    #[tokio::test]
    async fn secrets_sealed_under_the_old_derivation_are_resealed_on_the_first_start() {
        let (store, dir) = temp_store().await;
        let passphrase = "an old passphrase";
        let old = SecretBox::from_key(legacy_key(passphrase));
        let mut project = new_project("private");
        project.registry_username = Some("ci".into());
        project.registry_password = Some(old.seal("registry-pw"));
        let project = store.insert_project(&project, at(0)).await.unwrap();
        let (_, stage) = shop_prod(&store).await;
        let patch = crate::domain::stage::StagePatch {
            secret_env: [("DB_PASSWORD".to_owned(), Some(old.seal("db-pw")))].into(),
            ..Default::default()
        };
        store.update_stage(stage.id, &patch, at(1)).await.unwrap();

        let secrets = SecretBox::for_installation(Some(passphrase), dir.path(), &store)
            .await
            .unwrap()
            .0;
        let salt = store
            .meta_get(KDF_SALT_KEY)
            .await
            .unwrap()
            .expect("a salt is kept");
        let new_only = SecretBox::from_key(derive_key(passphrase, &hex::decode(&salt).unwrap()).unwrap());
        let password = store
            .project_registry_password(project.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new_only.open(&password).unwrap(), "registry-pw");
        assert!(
            old.open(&password).is_err(),
            "re-sealed, not left under the old key"
        );
        let db = &store.stage_secrets(stage.id).await.unwrap()["DB_PASSWORD"];
        assert_eq!(new_only.open(db).unwrap(), "db-pw");
        assert_eq!(secrets.open(db).unwrap(), "db-pw");
        // A value sealed by the old version and kept elsewhere still opens.
        assert_eq!(secrets.open(&old.seal("from a backup")).unwrap(), "from a backup");

        // The next start (or another replica) derives the same key from the stored salt.
        let again = SecretBox::for_installation(Some(passphrase), dir.path(), &store)
            .await
            .unwrap()
            .0;
        assert_eq!(store.meta_get(KDF_SALT_KEY).await.unwrap(), Some(salt));
        assert_eq!(again.open(&secrets.seal("shared")).unwrap(), "shared");
    }
}
