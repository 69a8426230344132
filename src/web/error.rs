//! The one error type of the HTTP boundary. Every handler returns `Result<_, WebError>`; every
//! failure leaves as the JSON shape of SPEC.md §5:
//! `{"error": {"code": "...", "message": "...", "field": "name-or-null"}}`.
//! Internal errors are logged once, with their whole chain, and answered without details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::deploy::{ConflictReason, DeployError, Missing};
use crate::docker::DockerError;
use crate::domain::ParseError;
use crate::registry::RegistryError;
use crate::store::StoreError;

/// The closed set of error codes clients branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Validation,
    NotFound,
    Conflict,
    Unauthorized,
    Forbidden,
    RateLimited,
    Unavailable,
    Internal,
}

#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds a client should wait (429, 503).
    pub retry_after: Option<u64>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

pub type WebResult<T> = Result<T, WebError>;

impl WebError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400: a field of the request is wrong.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, ErrorCode::Validation, message)
        }
    }

    /// 400 about the request as a whole (a body that is not JSON at all).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::Validation, message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }

    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_owned),
            ..Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many attempts; try again later",
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message)
    }

    /// 500. The cause is logged here, once, and not shown to the client.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        tracing::error!(error = format!("{err:#}"), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }

    /// A parse error of the named field.
    pub fn field(field: impl Into<String>, err: ParseError) -> Self {
        Self::validation(field, err.0)
    }
}

impl From<StoreError> for WebError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found("not found"),
            StoreError::Conflict { field, message } => Self::conflict(Some(field), message),
            other => Self::internal(other),
        }
    }
}

/// The deploy workflow's failures, variant by variant: a new variant does not compile until it
/// has its answer here.
impl From<DeployError> for WebError {
    fn from(err: DeployError) -> Self {
        match err {
            DeployError::NotFound(missing) => {
                let message = missing.to_string();
                match missing {
                    Missing::Stage(_) | Missing::Instance(_) | Missing::Accessory(_) => {
                        Self::not_found(message)
                    }
                    // The registry has no tag the stage's policy would take.
                    Missing::MatchingTag(_) => Self {
                        field: Some("tag".into()),
                        ..Self::not_found(message)
                    },
                }
            }
            DeployError::Conflict(reason) => {
                let message = reason.to_string();
                match reason {
                    ConflictReason::NothingToRollBack { .. }
                    | ConflictReason::RollbackPerTag { .. }
                    | ConflictReason::NotPerTag { .. }
                    | ConflictReason::InstanceDeploying(_)
                    | ConflictReason::InstanceRemoving(_)
                    | ConflictReason::InstanceChanged { .. }
                    | ConflictReason::NoContainer(_)
                    | ConflictReason::ContainerGone(_)
                    | ConflictReason::InstanceRouted { .. }
                    | ConflictReason::AccessoryRemoving(_) => Self::conflict(None, message),
                }
            }
            DeployError::Registry { context, source } => {
                registry_error(&source, &format!("{context}: {source}"))
            }
            DeployError::Docker { context, source } => docker_error(&source, &format!("{context}: {source}")),
            DeployError::Internal(e) => Self::internal(e),
        }
    }
}

impl From<crate::domain::notification::ChannelFieldError> for WebError {
    fn from(err: crate::domain::notification::ChannelFieldError) -> Self {
        Self::validation(err.field, err.message)
    }
}

impl From<crate::notify::NotifyError> for WebError {
    fn from(err: crate::notify::NotifyError) -> Self {
        use crate::notify::NotifyError;
        match err {
            NotifyError::Invalid(field) => field.into(),
            NotifyError::NotFound(id) => Self::not_found(format!("no notification channel with id {id}")),
            NotifyError::Conflict { field, message } => Self::conflict(Some(field), message),
            NotifyError::Internal(e) => Self::internal(e),
        }
    }
}

/// A registry failure while resolving a tag: a missing tag is the client's (404 on `tag`); the
/// rest is the registry's (503, with `Retry-After` when it asked for one).
fn registry_error(e: &RegistryError, message: &str) -> WebError {
    match e {
        RegistryError::NotFound => WebError {
            field: Some("tag".into()),
            ..WebError::not_found(format!("{message}: no such tag in the registry"))
        },
        RegistryError::RateLimited { retry_after } => WebError {
            retry_after: retry_after.map(|d| d.as_secs().max(1)),
            ..WebError::unavailable(message.to_owned())
        },
        RegistryError::Unauthorized { .. }
        | RegistryError::Unreachable { .. }
        | RegistryError::Server { .. }
        | RegistryError::Protocol { .. }
        | RegistryError::Setup { .. } => WebError::unavailable(message.to_owned()),
    }
}

/// An engine failure: unreachable is a 503 (try later); a container the engine no longer has or
/// a state it refuses is a 409; any other answer of the engine is unexpected (500, logged).
fn docker_error(e: &DockerError, message: &str) -> WebError {
    match e {
        DockerError::Unavailable { .. } | DockerError::Timeout(_) | DockerError::Connect { .. } => {
            WebError::unavailable(message.to_owned())
        }
        DockerError::NotFound | DockerError::Conflict { .. } => WebError::conflict(None, message.to_owned()),
        DockerError::Engine(_) => WebError::internal(anyhow::anyhow!("{message}")),
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Turns a parse result into a validation error of `field`.
pub trait FieldResult<T> {
    fn field(self, field: &str) -> WebResult<T>;
}

impl<T> FieldResult<T> for Result<T, ParseError> {
    fn field(self, field: &str) -> WebResult<T> {
        self.map_err(|e| WebError::field(field, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_workflow_failures_map_to_statuses() {
        let status = |e: DeployError| WebError::from(e).status;
        assert_eq!(status(Missing::Stage(1).into()), StatusCode::NOT_FOUND);
        assert_eq!(
            status(ConflictReason::NothingToRollBack { stage: "prod".into() }.into()),
            StatusCode::CONFLICT
        );
        let err = WebError::from(DeployError::from(Missing::MatchingTag("semver:^9".into())));
        assert_eq!(
            (err.status, err.field.as_deref()),
            (StatusCode::NOT_FOUND, Some("tag"))
        );
        let err = WebError::from(DeployError::registry("resolving x:v9", RegistryError::NotFound));
        assert_eq!(
            (err.status, err.field.as_deref()),
            (StatusCode::NOT_FOUND, Some("tag"))
        );
        let down = DeployError::registry(
            "resolving x:v9",
            RegistryError::Unreachable {
                message: "refused".into(),
            },
        );
        assert_eq!(status(down), StatusCode::SERVICE_UNAVAILABLE);
        let limited = WebError::from(DeployError::registry(
            "listing",
            RegistryError::RateLimited {
                retry_after: Some(std::time::Duration::from_secs(7)),
            },
        ));
        assert_eq!(
            (limited.status, limited.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Some(7))
        );
        let engine_down = DeployError::docker(
            "starting the container",
            DockerError::Unavailable {
                message: "no socket".into(),
            },
        );
        assert_eq!(status(engine_down), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(DeployError::docker("stopping", DockerError::NotFound)),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(DeployError::Internal(anyhow::anyhow!("disk full"))),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
