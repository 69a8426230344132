//! The server-rendered web UI (SPEC §6), served by the API listener beside `/api`: askama
//! templates (`templates/`, one per page, mirroring these files), a stylesheet and one small
//! script (`static/`, embedded in the binary). Pages are named by page and verb
//! (`stage_get`, `stage_deploy_post`), as in kanidm's views.
//!
//! The UI is a client of the JSON API *in process*: every change a form asks for is handed to
//! the very handler `/api` runs (`api::projects::projects_post`, …) with the caller's role
//! extractor, so validation, role checks, events and workflow calls exist once. Pages read the
//! store (and the scanner's stale list) directly; reading is not business logic.
//!
//! Conventions every page follows:
//! - an unauthenticated page request is redirected to `/login?next=…` ([`Ui`]);
//! - forms post `application/x-www-form-urlencoded` with the session's `csrf_token`, which
//!   [`crate::web::auth::csrf_form_field_to_header`] moves into the header the one CSRF check
//!   reads; a form without it is a 403;
//! - POST → 303 redirect → GET (with a one-shot flash message) when a change worked; a
//!   validation error re-renders the page with the message next to its field ([`form`]);
//! - destructive actions need `confirm=yes`, which only the second button of a `<details>`
//!   confirmation sends; a post without it gets a confirmation page instead of the action;
//! - controls a role cannot use are not rendered, and the handlers enforce the roles anyway;
//! - a form's address opened directly answers `405` as a page linking to the form's page.
//!
//! # Layout
//! - [`page`]: the chrome every page shares, rendering, redirects, flash messages, errors.
//! - [`form`]: reading posted forms and carrying field errors back to the page.
//! - [`form_only`]: the `405` page for a form's address opened directly.
//! - [`view`]: display values (times, statuses, digests) built once for templates.
//! - One file per page: [`login`], [`dashboard`], [`projects`], [`stages`], [`events`],
//!   [`stale`], [`proxies`], [`notifications`], [`settings`], [`users`], [`tokens`]; [`assets`]
//!   serves `static/`; [`docs`] serves the user documentation and the readable API reference.

pub mod accessories;
pub mod accessory_view;
pub mod assets;
pub mod dashboard;
pub mod docs;
pub mod events;
pub mod form;
pub mod form_only;
pub mod login;
pub mod logs;
pub mod notifications;
pub mod page;
pub mod projects;
pub mod proxies;
pub mod settings;
pub mod stage_form;
pub mod stages;
pub mod stale;
pub mod tokens;
pub mod users;
pub mod view;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

pub use page::Ui;

use super::auth::csrf_form_field_to_header;
use super::state::AppState;

/// Every page and form target of the UI. Not part of the OpenAPI document: these answer HTML.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard::dashboard_get))
        .route("/login", get(login::login_get).post(login::login_post))
        .route("/docs", get(docs::docs_index_get))
        .route("/docs/", get(docs::docs_index_get))
        .route("/docs/reference", get(docs::docs_reference_get))
        .route("/docs/{*path}", get(docs::docs_file_get))
        .route("/logout", post(login::logout_post))
        .route("/projects", post(projects::projects_post))
        .route("/projects/{id}", get(projects::project_get))
        .route("/projects/{id}/edit", post(projects::project_edit_post))
        .route("/projects/{id}/delete", post(projects::project_delete_post))
        .route("/projects/{id}/stages", post(projects::project_stages_post))
        .route(
            "/projects/{id}/accessories",
            post(accessories::project_accessories_post),
        )
        .route("/accessories/{id}/edit", post(accessories::accessory_edit_post))
        .route(
            "/accessories/{id}/delete",
            post(accessories::accessory_delete_post),
        )
        .route(
            "/accessories/{id}/{action}",
            post(accessories::accessory_action_post),
        )
        .route("/stages/{id}", get(stages::stage_get))
        .route("/stages/{id}/edit", post(stages::stage_edit_post))
        .route("/stages/{id}/delete", post(stages::stage_delete_post))
        .route("/stages/{id}/deploy", post(stages::stage_deploy_post))
        .route("/stages/{id}/poll", post(stages::stage_poll_post))
        .route("/stages/{id}/rollback", post(stages::stage_rollback_post))
        .route("/instances/{id}/logs.txt", get(logs::instance_logs_txt_get))
        .route("/accessories/{id}/logs.txt", get(logs::accessory_logs_txt_get))
        .route("/instances/{id}/{action}", post(stages::instance_action_post))
        .route("/events", get(events::events_get))
        .route("/stale", get(stale::stale_get))
        .route("/stale/scan", post(stale::stale_scan_post))
        .route("/stale/cleanup", post(stale::stale_bulk_cleanup_post))
        .route("/stale/{id}/cleanup", post(stale::stale_cleanup_post))
        .route("/proxies", get(proxies::proxies_get).post(proxies::proxies_post))
        .route("/proxies/{id}/edit", post(proxies::proxy_edit_post))
        .route("/proxies/{id}/enabled", post(proxies::proxy_enabled_post))
        .route("/proxies/{id}/delete", post(proxies::proxy_delete_post))
        .route(
            "/notifications",
            get(notifications::notifications_get).post(notifications::notifications_post),
        )
        .route(
            "/notifications/{id}/edit",
            post(notifications::notification_edit_post),
        )
        .route(
            "/notifications/{id}/enabled",
            post(notifications::notification_enabled_post),
        )
        .route(
            "/notifications/{id}/test",
            post(notifications::notification_test_post),
        )
        .route(
            "/notifications/{id}/delete",
            post(notifications::notification_delete_post),
        )
        .route(
            "/settings",
            get(settings::settings_get).post(settings::settings_post),
        )
        .route("/settings/webhook/rotate", post(settings::webhook_rotate_post))
        .route("/users", get(users::users_get).post(users::users_post))
        .route("/users/{id}/edit", post(users::user_edit_post))
        .route("/users/{id}/delete", post(users::user_delete_post))
        .route("/tokens", get(tokens::tokens_get).post(tokens::tokens_post))
        .route("/tokens/{id}/delete", post(tokens::token_delete_post))
        .route("/static/{*path}", get(assets::static_get))
        .layer(middleware::from_fn(csrf_form_field_to_header))
}
