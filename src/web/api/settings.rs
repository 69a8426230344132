//! Settings: `GET /api/settings` (viewer) answers every setting; `PATCH /api/settings` (admin)
//! changes some of them (SPEC §3, "Settings"). A patch is all or nothing: an unknown key or a bad
//! value is a 400 naming that key, and nothing changes. The live settings are updated only after
//! the store is, and the jobs watching them (the stale scanner) re-plan at once.
//!
//! A change is recorded as an `info` event (source `api`) naming the keys, their new values and
//! the actor. Settings hold no secrets, so the values can be logged.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::event::{NewEvent, Source};
use crate::settings::SettingsUpdateError;
use crate::web::auth::{Admin, Viewer};
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::ApiJson;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(settings_get, settings_patch))
}

/// Every setting. The answer is built from the domain's own key list; this type documents it
/// in the OpenAPI document (a unit test keeps the two in step).
#[derive(Debug, utoipa::ToSchema)]
pub struct SettingsDocument {
    /// Days a managed container may stay not running before it is stale; 1 to 3650.
    #[schema(example = 7, minimum = 1, maximum = 3650)]
    pub stale_threshold_days: u32,
    /// How often the stale scanner runs (`30m`, `6h`); null derives it from the threshold:
    /// `max(1h, threshold / 7)`.
    #[schema(example = "6h")]
    pub stale_scan_interval: Option<String>,
    /// The schedule of stages without their own: a cron expression or descriptor.
    #[schema(example = "@every 5m")]
    pub default_poll_schedule: String,
    /// Days persisted events are kept; 1 to 3650.
    #[schema(example = 30, minimum = 1, maximum = 3650)]
    pub event_retention_days: u32,
    /// Stages without a hostname route `{stage}.{project}.{base_domain}`; null: no default route.
    #[schema(example = "apps.example.com")]
    pub base_domain: Option<String>,
    /// How long a deploy's health gate waits, in seconds; 1 to 3600.
    #[schema(example = 60, minimum = 1, maximum = 3600)]
    pub deploy_health_timeout_seconds: u32,
    /// Host directories stages may bind-mount (a volume `source` starting with `/` must lie
    /// under one); empty: no bind mounts. `/` and the Docker socket are never allowed.
    #[schema(example = json!(["/srv/apps"]), value_type = Vec<AbsolutePath>, inline)]
    pub allowed_bind_paths: Vec<String>,
    /// How long the proxy holds a request to a `stop_first` stage while its instance is
    /// replaced, in seconds; past it the request gets 503 with `Retry-After`. 1 to 300.
    #[schema(example = 30, minimum = 1, maximum = 300)]
    pub proxy_hold_seconds: u32,
}

/// Every setting with its current value.
#[utoipa::path(
    get,
    path = "/api/settings",
    tag = "settings",
    responses(
        (status = 200, body = SettingsDocument),
        (status = 401, body = ErrorBody),
    ),
    security(("token" = []), ("session" = [])),
)]
async fn settings_get(_: Viewer, State(state): State<AppState>) -> Json<Map<String, Value>> {
    Json(state.settings.current().to_json())
}

/// An absolute path, as the document describes `allowed_bind_paths`' items: `/`, then parts
/// without control characters (the server also refuses `.` and `..` parts and the directories
/// holding the Docker socket, which a pattern cannot say simply).
pub struct AbsolutePath;

impl utoipa::PartialSchema for AbsolutePath {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(/[^/\\u0000-\\u001F\\u007F-\\u009F]+)+$"))
            .max_length(Some(4096))
            .into()
    }
}

impl utoipa::ToSchema for AbsolutePath {}

/// The body of `PATCH /api/settings`: the settings document with no key required, since any
/// subset may be sent. Derived from [`SettingsDocument`] so the two cannot drift apart.
pub struct SettingsPatchDocument;

impl utoipa::PartialSchema for SettingsPatchDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let mut schema = <SettingsDocument as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required.clear();
            // An unknown key is refused (400 naming it), so the document says none is allowed.
            object.additional_properties = Some(Box::new(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        }
        schema
    }
}

impl utoipa::ToSchema for SettingsPatchDocument {}

/// Changes some settings: a JSON object of keys to new values (`null` clears a nullable one).
/// Answers every setting as it is now.
#[utoipa::path(
    patch,
    path = "/api/settings",
    tag = "settings",
    request_body(content = inline(SettingsPatchDocument), description = "any subset of the settings"),
    responses(
        (status = 200, body = SettingsDocument),
        (status = 400, body = ErrorBody, description = "an unknown key or a bad value, named in `error.field`; nothing changed"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "not an admin"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn settings_patch(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> WebResult<Json<Map<String, Value>>> {
    let Value::Object(patch) = body else {
        return Err(WebError::bad_request(
            "the body must be a JSON object of settings, like {\"stale_threshold_days\": 14}",
        ));
    };
    let (after, changed_keys) = state.settings.update(&patch).await.map_err(|e| match e {
        SettingsUpdateError::Invalid(invalid) => WebError::validation(invalid.key, invalid.message),
        SettingsUpdateError::Store(store) => WebError::from(store),
    })?;
    let changed: Map<String, Value> = changed_keys
        .into_iter()
        .filter_map(|key| after.get(&key).map(|v| (key, v)))
        .collect();
    if !changed.is_empty() {
        // `base_domain` names stages' and per-tag instances' routes.
        state.refresh_routes().await;
        let actor = admin.user().username.to_string();
        let keys: Vec<&str> = changed.keys().map(String::as_str).collect();
        let message = format!("{actor} changed the settings {}", keys.join(", "));
        state
            .bus
            .publish(
                NewEvent::info(Source::Api, message)
                    .detail("actor", actor)
                    .detail("changed", Value::Object(changed))
                    .recorded(),
            )
            .await;
    }
    Ok(Json(after.to_json()))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    use super::*;
    use crate::domain::settings::Settings;

    #[test]
    fn the_documented_shape_lists_exactly_the_settings() {
        let RefOr::T(Schema::Object(object)) = SettingsDocument::schema() else {
            panic!("the settings document is an object schema");
        };
        let mut documented: Vec<String> = object.properties.keys().cloned().collect();
        let mut answered: Vec<String> = Settings::default().to_json().keys().cloned().collect();
        documented.sort();
        answered.sort();
        assert_eq!(documented, answered);
    }

    #[test]
    fn a_patch_documents_the_same_settings_with_none_required() {
        let (RefOr::T(Schema::Object(whole)), RefOr::T(Schema::Object(patch))) =
            (SettingsDocument::schema(), SettingsPatchDocument::schema())
        else {
            panic!("both are object schemas");
        };
        assert!(!whole.required.is_empty(), "an answer has every setting");
        assert!(patch.required.is_empty(), "a patch sends any subset");
        let keys = |o: &utoipa::openapi::schema::Object| o.properties.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&patch), keys(&whole));
    }
}
