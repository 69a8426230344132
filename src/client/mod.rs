//! The commands that talk to a running server over HTTP instead of opening the store:
//! `healthcheck` (the container image's `HEALTHCHECK`, which has no curl), and `apply` /
//! `export` (configuration as code through `POST /api/apply` and `GET /api/export`). They know
//! the API only as a client does: paths, JSON, status codes.
//!
//! # Layout
//! - [`health`]: `docker-watcher healthcheck`.
//! - [`stack`]: `docker-watcher apply` and `export`.

pub mod health;
pub mod stack;
