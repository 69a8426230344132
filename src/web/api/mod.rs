//! The JSON API under `/api` (and the operations endpoints beside it). One file per resource;
//! each exports `routes()` as an `OpenApiRouter`, so a route cannot exist without its entry in
//! the OpenAPI document. Handlers are named `resource_verb` (`stage_deploy_post`), convert their
//! DTOs to domain types on their first lines, and return `WebResult`.

pub mod accessories;
pub mod apply;
pub mod auth;
pub mod deployments;
pub mod events;
pub mod hooks;
pub mod instances;
pub mod logs;
pub mod notifications;
pub mod ops;
pub mod projects;
pub mod proxies;
pub mod settings;
pub mod stack_changes;
pub mod stage_actions;
pub mod stage_container;
pub mod stage_poll;
pub mod stages;
pub mod stale;
pub mod tokens;
pub mod users;
pub mod workload_resources;

use utoipa_axum::router::OpenApiRouter;

use super::state::AppState;

/// Every API route with its documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(ops::routes())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(tokens::routes())
        .merge(projects::routes())
        .merge(stages::routes())
        .merge(accessories::routes())
        .merge(stage_actions::routes())
        .merge(stage_poll::routes())
        .merge(instances::routes())
        .merge(stale::routes())
        .merge(deployments::routes())
        .merge(proxies::routes())
        .merge(settings::routes())
        .merge(events::routes())
        .merge(hooks::routes())
        .merge(apply::routes())
        .merge(notifications::routes())
}
