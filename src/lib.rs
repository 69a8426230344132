//! docker-watcher: a self-hosted continuous-deployment daemon. It watches container registries
//! for new tags, deploys them as Docker containers per project and stage, routes HTTP traffic to
//! them, keeps an event log streamed live to a web UI, and cleans up stale containers.
//!
//! # Layout (reading order)
//! - [`domain`]: parsed values and plain records; no IO.
//! - [`clock`]: where time comes from (injectable for tests).
//! - [`config`]: the validated configuration and the command line.
//! - Edges, which know only `domain`: [`store`] (SQLite), [`docker`] (the engine), [`registry`]
//!   (the OCI distribution API: tags, manifest digests, registry auth).
//! - Services: [`secrets`] (encryption at rest), [`auth`] (credentials), [`metrics`],
//!   [`events`] (the bus and retention), [`settings`] (live settings), [`scheduler`] (the loop
//!   every periodic job runs on).
//! - Workflows: [`routes`] (the route table the proxy serves), [`deploy`] (pull → create →
//!   health gate → switch → stop old; rollback, per-tag syncs, instance actions), [`poll`]
//!   (registry watching: which stage needs which deploy, the polling jobs, webhooks), [`sync`]
//!   (keeps instance statuses true to Docker: events, reconcile, recovery of interrupted deploys),
//!   [`stale`] (the stale rule, the scan job with one Docker list call, cleanup), [`notify`]
//!   (notification channels: rules, coalescing, a persisted outbox, delivery with retries).
//! - [`stack`]: configuration as code — the stack file, its diff against an installation,
//!   and the export (pure; the web layer applies it through the API's own handlers).
//! - On top: [`web`] (the API listener), [`proxy`] (the reverse proxy on its own listeners).
//! - [`app`]: the composition root; [`data_dir`]: the lock a running server holds on its data
//!   dir; [`admin`]: the offline user and token commands; [`backup`]: online backups and
//!   restores of the store; [`client`]: the commands that talk to a running server
//!   (`healthcheck`, `apply`, `export`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod backup;
pub mod client;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod deploy;
pub mod docker;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod notify;
pub mod poll;
pub mod proxy;
pub mod registry;
pub mod routes;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod stack;
pub mod stale;
pub mod store;
pub mod sync;
pub mod web;
