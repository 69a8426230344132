//! The vocabulary of docker-watcher: newtypes that parse (never merely validate) user input, and
//! the plain records every other module passes around. Nothing here does IO; nothing here knows
//! about the store, Docker, registries or HTTP.
//!
//! # Layout
//! - [`image_ref`], [`tag_policy`], [`schedule`], [`hostname`], [`duration`], [`name`]: parsed
//!   values taken from users.
//! - [`project`], [`stage`], [`instance`], [`deployment`], [`proxy`], [`user`], [`settings`],
//!   [`event`], [`notification`]: the records of the store, as domain types.
//! - [`accessory`]: a project's companions (a database, a cache) and their status.
//! - [`workload`]: what a stage's container is given beyond its image (volumes, networks,
//!   labels, user, restart policy, stop signal), parsed and checked.

pub mod accessory;
pub mod duration;
pub mod event;
pub mod hostname;
pub mod image_ref;
pub mod instance;
pub mod name;
pub mod notification;
pub mod project;
pub mod proxy;
pub mod schedule;
pub mod settings;
pub mod stage;
pub mod tag_policy;
pub mod time_format;
pub mod user;
pub mod workload;

/// Why a value given by a user could not be parsed. The caller knows which field it came from
/// and adds that when it reports the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
