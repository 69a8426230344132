//! What a member can make a stage do now: `POST /api/stages/{id}/deploy` and
//! `POST /api/stages/{id}/rollback` (SPEC §3 Deploying, §5). The work is the deployer's
//! ([`crate::deploy::Deployer`]); this file turns requests into its calls and its outcomes into
//! answers.
//!
//! Both are **synchronous**: the request waits until the deploy has ended (pulled, health-gated
//! and switched, or failed) and answers the deployment as recorded, `201` with its `status`
//! (`succeeded` or `failed`, with `error`). A failed deploy is still a created deployment, so it
//! is a 201 too: the body says how it went, as `GET /api/deployments` would. The deploy runs in
//! its own task, so a client that hangs up does not cancel it halfway. When the stage already
//! runs the digest the answer is `200` with the deployment that brought it live; when a newer
//! request for the same stage overtook this one while it waited for the stage's lock, `409`.
//!
//! A deploy names a tag (`{"tag": "v2"}`) or none (no body, `{}` or `{"tag": null}`): the
//! stage's policy is then evaluated against the registry now, as a poll would, but the deploy
//! happens even on monitor-only stages and even for a digest that failed before. Per-tag stages
//! deploy one given tag at a time (it must match their policy). A deploy may also name a digest
//! with its tag (`{"tag": "v2", "digest": "sha256:…"}`): that exact image is deployed, recorded
//! under the tag, whatever the tag points at now (retrying a digest that failed before, or
//! bringing back an older build).

use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::deployments::DeploymentResponse;
use super::projects::not_found_as;
use crate::deploy::{DeployOutcome, DeployRequest};
use crate::domain::image_ref::{Digest, is_valid_tag};
use crate::domain::instance::{DeploymentStatus, Trigger};
use crate::domain::tag_policy::PolicyMode;
use crate::web::auth::Member;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::extract::parse_json;
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stage_deploy_post))
        .routes(routes!(stage_rollback_post))
}

/// The body of `POST /api/stages/{id}/deploy`; the whole body is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageDeployRequest {
    /// The tag to deploy; absent or null: the tag the stage's policy selects now.
    #[serde(default)]
    #[schema(example = "v2")]
    pub tag: Option<String>,
    /// An exact digest to deploy (with `tag`, the tag it is recorded under); absent or null:
    /// the digest the tag points at now.
    #[serde(default)]
    #[schema(example = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945")]
    pub digest: Option<String>,
}

/// Runs a workflow step in its own task and waits for it, so that a client hanging up (which
/// drops the handler's future) cannot cancel it halfway.
pub(super) async fn run_to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> WebResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| WebError::internal(anyhow::anyhow!("the deploy task failed: {e}")))
}

/// Parses the optional body: empty means "no tag"; otherwise JSON, like every other body.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> WebResult<StageDeployRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(StageDeployRequest::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
        });
    if !is_json {
        return Err(WebError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..WebError::bad_request("expected a JSON body with Content-Type: application/json")
        });
    }
    parse_json(body)
}

/// Deploys a tag on a stage, or what its policy selects now.
///
/// Synchronous: answers when the deploy has ended. `201` with the deployment, whose `status`
/// is `succeeded` or `failed` (then `error` says why, the stage's previous instance still
/// serves, and an `error` event is in the event log). `200` with the deployment that brought
/// the running instance live when the stage already runs the tag's digest. `409` when a newer
/// deploy request for the stage overtook this one while it waited.
#[utoipa::path(
    post,
    path = "/api/stages/{id}/deploy",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id")),
    request_body(content = StageDeployRequest, description = "optional: no body deploys what the policy selects"),
    responses(
        (status = 201, body = DeploymentResponse, description = "the deploy ran; `status` says how it ended"),
        (status = 200, body = DeploymentResponse, description = "the stage already runs this digest"),
        (status = 400, body = ErrorBody, description = "a bad tag or digest, or no tag for a per-tag stage or with a digest; `error.field` names it"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such stage, or (`field: tag`) no such tag in the registry"),
        (status = 409, body = ErrorBody, description = "a newer deploy request overtook this one"),
        (status = 415, body = ErrorBody, description = "the body is not JSON"),
        (status = 503, body = ErrorBody, description = "the registry or the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stage_deploy_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult<(StatusCode, Json<DeploymentResponse>)> {
    let request = parse_body(&headers, &body)?;
    if let Some(tag) = &request.tag
        && !is_valid_tag(tag)
    {
        return Err(WebError::validation(
            "tag",
            format!(
                "'{tag}' is not a valid tag: 1 to 128 letters, digits, '_', '.' and '-', \
                 not starting with '.' or '-'"
            ),
        ));
    }
    let given_digest = match &request.digest {
        Some(raw) => Some(
            Digest::parse(raw)
                .map_err(|e| WebError::validation("digest", format!("'{raw}' is not a digest: {e}")))?,
        ),
        None => None,
    };
    if given_digest.is_some() && request.tag.is_none() {
        return Err(WebError::validation(
            "tag",
            "a deploy of a digest also names the tag to record it under",
        ));
    }
    let stage = state
        .store
        .get_stage(id)
        .await
        .map_err(not_found_as(format!("no stage with id {id}")))?;
    let project = state.store.get_project(stage.project_id).await?;
    let per_tag = stage.tag_policy.mode() == PolicyMode::PerTag;
    let deployer = &state.deployer;
    let (tag, digest) = match request.tag {
        Some(tag) => {
            if per_tag && !stage.tag_policy.matches(&tag) {
                return Err(WebError::validation(
                    "tag",
                    format!(
                        "'{tag}' does not match the stage's tag policy {}",
                        stage.tag_policy
                    ),
                ));
            }
            let digest = match given_digest {
                Some(digest) => digest,
                None => deployer.resolve_digest(&project, &tag).await?,
            };
            (tag, digest)
        }
        None if per_tag => {
            return Err(WebError::validation(
                "tag",
                format!(
                    "stage {} deploys one instance per tag: name the tag to deploy (or poll the stage \
                     to deploy every matching tag)",
                    stage.name
                ),
            ));
        }
        None => deployer.resolve_policy_target(&stage, &project).await?,
    };

    let deployer = state.deployer.clone();
    let request = DeployRequest {
        tag,
        digest: Some(digest.clone()),
        trigger: Trigger::Manual,
        actor: Some(user.user().username.to_string()),
    };
    let outcome = run_to_completion(async move { deployer.deploy(id, request).await }).await??;
    match outcome {
        DeployOutcome::Succeeded(d) | DeployOutcome::Failed(d) => {
            Ok((StatusCode::CREATED, Json(DeploymentResponse::from(&d))))
        }
        DeployOutcome::Unchanged => {
            // The deployment that brought this digest live; deployments are never pruned while
            // their stage exists, so it is there.
            let deployments = state.store.list_deployments(Some(id), 500).await?;
            let live = deployments.iter().find(|d| {
                d.status == DeploymentStatus::Succeeded && d.image_digest.as_deref() == Some(digest.as_str())
            });
            match live {
                Some(d) => Ok((StatusCode::OK, Json(DeploymentResponse::from(d)))),
                None => Err(WebError::conflict(
                    None,
                    format!("stage {} already runs {digest}", stage.name),
                )),
            }
        }
        DeployOutcome::Superseded => Err(superseded()),
    }
}

fn superseded() -> WebError {
    WebError::conflict(
        None,
        "a newer deploy request for this stage arrived while this one waited, and replaced it",
    )
}

/// Rolls a stage back to its previous successful instance.
///
/// The newest earlier instance that ran is started again (or recreated from its digest when
/// its container is gone), health-gated, and the stage switched to it; the current instance is
/// then stopped. Synchronous, like a deploy: `201` with the rollback deployment (`status`
/// `succeeded` or `failed`), `409` when there is nothing to roll back to (or the stage deploys
/// per tag).
#[utoipa::path(
    post,
    path = "/api/stages/{id}/rollback",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id")),
    responses(
        (status = 201, body = DeploymentResponse, description = "the rollback ran; `status` says how it ended"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such stage"),
        (status = 409, body = ErrorBody, description = "nothing to roll back to, or a newer request overtook this one"),
        (status = 503, body = ErrorBody, description = "the Docker engine is unavailable"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stage_rollback_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<(StatusCode, Json<DeploymentResponse>)> {
    let deployer = state.deployer.clone();
    let actor = Some(user.user().username.to_string());
    let outcome = run_to_completion(async move { deployer.rollback(id, actor).await }).await??;
    match outcome {
        DeployOutcome::Succeeded(d) | DeployOutcome::Failed(d) => {
            Ok((StatusCode::CREATED, Json(DeploymentResponse::from(&d))))
        }
        DeployOutcome::Superseded | DeployOutcome::Unchanged => Err(superseded()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_asks_for_the_policy_and_a_json_one_is_parsed() {
        let none = HeaderMap::new();
        assert_eq!(parse_body(&none, &Bytes::from_static(b"")).unwrap().tag, None);
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let body = parse_body(&json, &Bytes::from_static(br#"{"tag":"v2"}"#)).unwrap();
        assert_eq!(body.tag.as_deref(), Some("v2"));
        assert_eq!(parse_body(&json, &Bytes::from_static(b"{}")).unwrap().tag, None);
        let err = parse_body(&json, &Bytes::from_static(br#"{"tag":5}"#)).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("tag"));
        let err = parse_body(&none, &Bytes::from_static(br#"{"tag":"v2"}"#)).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
