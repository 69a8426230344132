//! The engine resources a project's stages use beyond containers (SPEC §3 "Workloads"): named
//! volumes `dw-{project}-{source}` and the project network `dw-{project}`. Volumes hold data,
//! so nothing removes them but an admin's delete of their stage or project with
//! `?remove_volumes=true`; the network holds nothing and goes with its project.
//!
//! The order is what keeps a refusal whole: everything that could refuse the delete is checked
//! first, then the volumes are removed (a volume still in use is a 409 and nothing is deleted),
//! then the record.

use serde::Deserialize;

use super::deployments::present;
use crate::docker::DockerError;
use crate::docker::engine::labels;
use crate::domain::project::Project;
use crate::domain::stage::Stage;
use crate::domain::user::Role;
use crate::domain::workload::{project_network_name, volume_name};
use crate::web::auth::CurrentUser;
use crate::web::error::{WebError, WebResult};
use crate::web::state::AppState;

/// The query of `DELETE /api/stages/{id}` and `DELETE /api/projects/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// `1`/`true` (admins only): also remove the named volumes — their data is gone for good.
    /// Absent, `0` or `false`: the volumes are kept.
    #[param(value_type = Option<String>, example = "true")]
    pub remove_volumes: Option<String>,
}

impl DeleteParams {
    /// Whether volumes go too; asking for it needs an admin.
    pub fn remove_volumes(&self, user: &CurrentUser) -> WebResult<bool> {
        let remove = match present(self.remove_volumes.as_deref()) {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(WebError::validation(
                    "remove_volumes",
                    format!("remove_volumes must be 1, true, 0 or false, not '{other}'"),
                ));
            }
        };
        if remove {
            user.require(Role::Admin)?;
        }
        Ok(remove)
    }
}

/// The named volumes of `stage` that no other stage of its project mounts: what deleting the
/// stage with its volumes removes.
pub async fn stage_volumes(state: &AppState, project: &Project, stage: &Stage) -> WebResult<Vec<String>> {
    let others = state.store.list_stages(project.id).await?;
    let mut names: Vec<String> = stage
        .container
        .volumes
        .iter()
        .filter(|v| !v.is_bind())
        .filter(|v| {
            !others
                .iter()
                .filter(|other| other.id != stage.id)
                .any(|other| other.container.volumes.iter().any(|o| o.source == v.source))
        })
        .map(|v| volume_name(project.name.as_str(), &v.source))
        .collect();
    names.dedup();
    Ok(names)
}

/// Every volume docker-watcher created for `project` (they carry its label).
pub async fn project_volumes(state: &AppState, project: &Project) -> WebResult<Vec<String>> {
    state
        .engine
        .list_volumes(&state.installation_id, (labels::PROJECT, project.name.as_str()))
        .await
        .map_err(|e| engine_error("listing the project's volumes", e))
}

/// Removes `names`; one already gone is fine, one in use refuses (409) before the rest.
pub async fn remove_volumes(state: &AppState, names: &[String]) -> WebResult<()> {
    for name in names {
        match state.engine.remove_volume(name).await {
            Ok(()) | Err(DockerError::NotFound) => {}
            Err(DockerError::Conflict { message }) => {
                return Err(WebError::conflict(
                    Some("remove_volumes"),
                    format!("the volume {name} is still in use ({message}); nothing was deleted"),
                ));
            }
            Err(e) => return Err(engine_error(&format!("removing the volume {name}"), e)),
        }
    }
    Ok(())
}

/// Removes the project's network once the project is gone. Nothing depends on it any more, so
/// a failure is logged, not answered.
pub async fn remove_project_network(state: &AppState, project: &Project) {
    let name = project_network_name(project.name.as_str());
    match state.engine.remove_network(&name).await {
        Ok(()) | Err(DockerError::NotFound) => {}
        Err(e) => tracing::warn!(network = %name, error = %e, "could not remove the project's network"),
    }
}

fn engine_error(doing: &str, e: DockerError) -> WebError {
    if e.is_unavailable() {
        WebError::unavailable(format!("{doing}: {e}"))
    } else {
        WebError::internal(anyhow::Error::from(e).context(doing.to_owned()))
    }
}
