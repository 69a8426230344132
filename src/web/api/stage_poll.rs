//! `POST /api/stages/{id}/poll` (member, SPEC §3 and §5): polls the stage's repository now and
//! answers what the poll found — the tags, the tag and digest the policy selected, the decision
//! — and, when the poll started a deploy, that deployment once it has ended. The poll is the
//! scheduled one's ([`crate::poll::Poller::poll_now`]): failed digests are skipped,
//! `min_release_age` is respected and monitor-only stages only record the available tag; it
//! tries even while the repository is backing off after failures.
//!
//! A registry that cannot be polled is a `503` naming the error (with `Retry-After` when the
//! registry asked for a wait); an unknown stage a `404`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::deployments::DeploymentResponse;
use crate::poll::plan::{Decision, TagDigest};
use crate::poll::{PollError, PollReport};
use crate::web::auth::Member;
use crate::web::error::{ErrorBody, WebError, WebResult};
use crate::web::path::IdPath;
use crate::web::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stage_poll_post))
}

/// What a poll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PollDecision {
    /// No listed tag satisfies the policy (or the repository has no tags yet).
    NoMatchingTag,
    /// The stage runs what the policy selects.
    UpToDate,
    /// The selected tag and digest were deployed (see `deployment`).
    Deploy,
    /// A per-tag stage was synced: `per_tag_deploys` lists the tags deployed.
    PerTag,
    /// Monitor-only stage: the selected tag is recorded as `available_tag`; nothing deployed.
    Available,
    /// The selected digest is younger than `min_release_age`; it is deployed from `release_at`.
    WaitReleaseAge,
    /// The selected digest failed to deploy before; automatic deploys skip it.
    SkipFailed,
}

/// A tag and the digest it pointed at.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolledTag {
    pub tag: String,
    #[schema(example = "sha256:4f53…")]
    pub digest: String,
}

impl From<&TagDigest> for PolledTag {
    fn from(target: &TagDigest) -> Self {
        Self {
            tag: target.tag.clone(),
            digest: target.digest.to_string(),
        }
    }
}

/// What `POST /api/stages/{id}/poll` found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StagePollResponse {
    pub stage_id: i64,
    /// Every tag of the repository, sorted.
    pub tags_seen: Vec<String>,
    /// The tag the policy selected (per-tag stages: the one that appeared last).
    #[schema(required = true)]
    pub selected_tag: Option<String>,
    #[schema(required = true)]
    pub selected_digest: Option<String>,
    pub decision: PollDecision,
    /// `wait_release_age`: when the selected digest is old enough to deploy.
    #[serde(with = "crate::domain::time_format::option")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub release_at: Option<DateTime<Utc>>,
    /// `per_tag`: the new or changed tags the sync deployed.
    pub per_tag_deploys: Vec<PolledTag>,
    /// `deploy`: the deployment as it ended (`succeeded` or `failed`); null when nothing was
    /// deployed, or when a newer deploy of the stage overtook this one.
    #[schema(required = true)]
    pub deployment: Option<DeploymentResponse>,
    /// Why the deploy or sync the poll started could not run at all.
    #[schema(required = true)]
    pub deploy_error: Option<String>,
}

/// Polls a stage's repository now.
///
/// Lists the repository's tags, reads the digests the stage's policy needs, and acts as a
/// scheduled poll would: deploys a new digest, syncs a per-tag stage, or records the available
/// tag of a monitor-only stage. Answers once a deploy it started has ended.
#[utoipa::path(
    post,
    path = "/api/stages/{id}/poll",
    tag = "stages",
    params(("id" = i64, Path, description = "the stage's id")),
    responses(
        (status = 200, body = StagePollResponse, description = "what the poll found and did"),
        (status = 400, body = ErrorBody, description = "the id is not an integer"),
        (status = 401, body = ErrorBody, description = "not authenticated"),
        (status = 403, body = ErrorBody, description = "needs the member role"),
        (status = 404, body = ErrorBody, description = "no such stage"),
        (status = 503, body = ErrorBody, description = "the registry could not be polled (or asked to wait: `Retry-After`)"),
    ),
    security(("token" = []), ("session" = [])),
)]
pub(crate) async fn stage_poll_post(
    user: Member,
    IdPath(id): IdPath,
    State(state): State<AppState>,
) -> WebResult<Json<StagePollResponse>> {
    let actor = user.user().username.to_string();
    let report = state
        .poller
        .poll_now(id, Some(actor))
        .await
        .map_err(|e| poll_error(e, state.clock.now()))?;
    Ok(Json(respond(report).await))
}

/// The answer for a report, once the deploy it started (if any) has ended.
async fn respond(report: PollReport) -> StagePollResponse {
    let (deployment, deploy_error) = match report.work {
        Some(work) => {
            let outcome = work.outcome().await;
            (
                outcome.deployment.as_ref().map(DeploymentResponse::from),
                outcome.error,
            )
        }
        None => (None, None),
    };
    let (decision, release_at, per_tag_deploys) = match &report.plan.decision {
        Decision::NoMatchingTag => (PollDecision::NoMatchingTag, None, Vec::new()),
        Decision::UpToDate => (PollDecision::UpToDate, None, Vec::new()),
        Decision::Deploy(_) => (PollDecision::Deploy, None, Vec::new()),
        Decision::PerTag(plan) => (
            PollDecision::PerTag,
            None,
            plan.deploy.iter().map(PolledTag::from).collect(),
        ),
        Decision::Available { .. } => (PollDecision::Available, None, Vec::new()),
        Decision::WaitReleaseAge { until, .. } => (PollDecision::WaitReleaseAge, Some(*until), Vec::new()),
        Decision::SkipFailed(_) => (PollDecision::SkipFailed, None, Vec::new()),
    };
    StagePollResponse {
        stage_id: report.stage_id,
        tags_seen: report.tags_seen,
        selected_tag: report.plan.selected.as_ref().map(|s| s.tag.clone()),
        selected_digest: report.plan.selected.as_ref().map(|s| s.digest.to_string()),
        decision,
        release_at,
        per_tag_deploys,
        deployment,
        deploy_error,
    }
}

fn poll_error(error: PollError, now: DateTime<Utc>) -> WebError {
    match error {
        PollError::StageNotFound(_) => WebError::not_found(error.to_string()),
        PollError::Registry { .. } | PollError::Stopped => WebError::unavailable(error.to_string()),
        PollError::BackingOff { until, .. } => {
            let secs = (until - now).num_seconds().max(1);
            WebError {
                retry_after: u64::try_from(secs).ok(),
                ..WebError::unavailable(error.to_string())
            }
        }
        PollError::Internal(message) => WebError::internal(anyhow::anyhow!(message)),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn poll_errors_map_to_their_statuses() {
        let now = Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time");
        assert_eq!(
            poll_error(PollError::StageNotFound(7), now).status,
            StatusCode::NOT_FOUND
        );
        let registry = PollError::Registry {
            repository: "127.0.0.1:5000/a".into(),
            message: "cannot reach the registry".into(),
            retry_at: None,
        };
        let error = poll_error(registry, now);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            error.message.contains("cannot reach the registry"),
            "{}",
            error.message
        );
        let waiting = PollError::BackingOff {
            repository: "127.0.0.1:5000/a".into(),
            until: now + chrono::TimeDelta::seconds(90),
        };
        let error = poll_error(waiting, now);
        assert_eq!(
            (error.status, error.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Some(90))
        );
    }
}
