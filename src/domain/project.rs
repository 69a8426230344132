//! Projects: one image repository each, with optional registry credentials. The registry
//! password travels only as a [`SealedSecret`] (encrypted with the installation's key); the plain
//! text exists only while a request is handled or an image is pulled.

use chrono::{DateTime, Utc};

use super::ParseError;
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

/// Parses a project's image: any reference Docker understands, but without a tag or digest.
pub fn parse_project_image(raw: &str) -> Result<ImageRef, ParseError> {
    let image = ImageRef::parse(raw)?;
    if image.tag().is_some() || image.digest().is_some() {
        return Err(ParseError::new(format!(
            "give the repository without a tag or digest (like {}); choose tags with a stage's tag_policy",
            image.name()
        )));
    }
    Ok(image)
}

/// A registry username: 1 to 255 printable characters, without `:` (HTTP basic
/// authentication cannot carry one).
pub fn parse_registry_username(raw: &str) -> Result<String, ParseError> {
    let len = raw.chars().count();
    if !(1..=255).contains(&len) {
        return Err(ParseError::new(
            "must be 1 to 255 characters; use null for no username",
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    if raw.contains(':') {
        return Err(ParseError::new(
            "must not contain ':' (registries authenticate with HTTP basic auth)",
        ));
    }
    Ok(raw.to_owned())
}

/// A registry password or token, kept exactly as given: 1 to 4096 characters, no NUL.
pub fn parse_registry_password(raw: &str) -> Result<String, ParseError> {
    let len = raw.chars().count();
    if !(1..=4096).contains(&len) {
        return Err(ParseError::new(
            "must be 1 to 4096 characters; use null to remove the password",
        ));
    }
    if raw.contains('\0') {
        return Err(ParseError::new("must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}
