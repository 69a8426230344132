//! Projects: one image repository each, with optional registry credentials. The registry
//! password travels only as a [`SealedSecret`] (encrypted with the installation's key); the plain
//! text exists only while a request is handled or an image is pulled.

use chrono::{DateTime, Utc};

use super::image_ref::ImageRef;
use super::name::Name;

/// Bytes encrypted by the installation's secret box. Opaque to everyone but `secrets`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(pub Vec<u8>);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: i64,
    pub name: Name,
    /// The repository, without tag or digest: stages choose tags.
    pub image: ImageRef,
    pub registry_username: Option<String>,
    pub has_registry_password: bool,
    pub insecure_registry: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProject {
    pub name: Name,
    pub image: ImageRef,
    pub registry_username: Option<String>,
    pub registry_password: Option<SealedSecret>,
    pub insecure_registry: bool,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectPatch {
    pub name: Option<Name>,
    pub image: Option<ImageRef>,
    pub registry_username: Option<Option<String>>,
    pub registry_password: Option<Option<SealedSecret>>,
    pub insecure_registry: Option<bool>,
}
