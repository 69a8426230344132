//! docker-watcher: a self-hosted continuous-deployment daemon. It watches container registries
//! for new tags, deploys them as Docker containers per project and stage, routes HTTP traffic to
//! them, keeps an event log streamed live to a web UI, and cleans up stale containers.
//!
//! # Layout (reading order)
//! - [`domain`]: parsed values and plain records; no IO.
//! - [`clock`]: where time comes from (injectable for tests).
//! - [`config`]: the validated configuration and the command line.
//! - Edges, which know only `domain`: [`store`] (SQLite), [`docker`] (the engine).
//! - Services: [`secrets`] (encryption at rest), [`auth`] (credentials), [`metrics`],
//!   [`events`] (the bus and retention), [`settings`] (live settings), [`scheduler`] (the loop
//!   every periodic job runs on).
//! - On top: [`web`] (the API listener).
//! - [`app`]: the composition root; [`admin`]: the offline user and token commands.

pub mod admin;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod docker;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod web;
