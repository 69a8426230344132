//! The stage page, `GET /stages/{id}`: the stage's settings (edit form), its instances with
//! their actions, the deployment history with errors, the container logs of one instance
//! (`?logs=<instance id>`, see [`super::logs`]), and the actions a member can take — deploy a
//! tag, poll now, roll back, stop / start / restart / remove an instance.
//!
//! Deploys, polls, rollbacks and instance actions can take a while (a health gate, a stop's
//! grace period). The form waits [`ACTION_WAIT`] for the API handler; when it is not done by
//! then the answer says so and the page shows the outcome live (`static/live.js` refreshes the
//! instances and deployments when the deployer's event arrives). The action itself always runs
//! to its end.

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::form::{FormData, Forms, api_body};
use super::logs::{LogsRequest, LogsView, instance_panel};
use super::page::{
    ACTION_WAIT, Chrome, Finished, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render,
    see_other_with, within,
};
use super::stage_form::{STAGE_FIELDS, StageFormValues, stage_json};
use super::view::{BlockedDigestView, DeploymentView, InstanceView, short_digest};
use crate::deploy::rollback_target;
use crate::domain::instance::{Instance, InstanceFilter, Trigger};
use crate::domain::tag_policy::PolicyMode;
use crate::domain::workload::project_network_name;
use crate::web::api;
use crate::web::api::stage_poll::PollDecision;
use crate::web::auth::{CurrentUser, Member, Viewer};
use crate::web::error::{WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// How many deployments the stage page lists.
const DEPLOYMENT_HISTORY: u32 = 25;

#[derive(Template)]
#[template(path = "stage.html")]
pub struct StagePage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub project_id: i64,
    pub project_name: String,
    pub stage: StageInfo,
    pub instances: Vec<InstanceView>,
    pub deployments: Vec<DeploymentView>,
    pub stage_values: StageFormValues,
    pub logs: Option<LogsView>,
    /// The rollback confirmation: what it brings back.
    pub rollback_question: String,
    /// Digests automatic deploys skip because their deploy failed.
    pub blocked: Vec<BlockedDigestView>,
    /// The stage's latest deployment, when the stage made it to heal itself (its serving
    /// container was removed outside docker-watcher).
    pub healed: Option<DeploymentView>,
}

impl PageTemplate for StagePage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct StageInfo {
    pub id: i64,
    pub name: String,
    pub tag_policy: String,
    pub per_tag: bool,
    pub schedule: String,
    pub auto_deploy: bool,
    pub hostname: String,
    /// The hostname's link through the reverse proxy; none without a hostname, and none for
    /// a per-tag stage, whose `hostname` is the pattern of its instances' names.
    pub hostname_href: Option<String>,
    pub max_instances: u32,
    pub min_release_age: String,
    pub port: u16,
    pub health_check: String,
    /// The names of the plain variables; their values are shown to members only (in the form).
    pub env_keys: Vec<String>,
    pub secret_env_keys: Vec<String>,
    /// Monitor-only stages: the tag the policy selected, when it is not the one running.
    pub update_available: Option<String>,
    /// The current instance's tag and digest when it was created from an older configuration
    /// than the stage's (SPEC §3 "Workloads": the stage is out of date).
    pub config_changed: Option<(String, String)>,
    /// Mounts as `source → target`, and the networks: the project's own, then the others.
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
}

pub async fn stage_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
    flash: FlashMessage,
    RawQuery(query): RawQuery,
) -> Response {
    let logs_for = LogsRequest::from_query(query.as_deref());
    render_stage(
        &state,
        &viewer,
        id,
        logs_for,
        flash,
        Forms::none(),
        StatusCode::OK,
    )
    .await
}

/// Renders a stage's page, with `forms` when one of its forms was refused.
pub async fn render_stage(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    logs_for: Option<LogsRequest>,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    match build(state, viewer, id, logs_for, flash, forms).await {
        Ok(page) => render(status, &page),
        Err(err) => error_page(err, Some(&viewer.0)),
    }
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    logs_for: Option<LogsRequest>,
    flash: FlashMessage,
    forms: Forms,
) -> WebResult<StagePage> {
    let stage = state
        .store
        .get_stage(id)
        .await
        .map_err(|_| WebError::not_found(format!("no stage with id {id}")))?;
    let project = state.store.get_project(stage.project_id).await?;
    let now = state.clock.now();
    let per_tag = stage.tag_policy.mode() == PolicyMode::PerTag;
    let hostname = crate::routes::stage_hostname(
        &stage,
        project.name.as_str(),
        state.settings.current().base_domain.as_ref(),
    );
    let stored = state
        .store
        .list_instances(&InstanceFilter {
            stage_id: Some(id),
            ..Default::default()
        })
        .await?;
    let rollback_question = rollback_question(rollback_target(stage.current_instance_id, &stored));
    let instances: Vec<InstanceView> = stored
        .iter()
        .map(|i| InstanceView::new(i, per_tag, hostname.as_deref(), &state.proxy_links, now))
        .collect();
    let deployments: Vec<DeploymentView> = state
        .store
        .list_deployments(Some(id), DEPLOYMENT_HISTORY)
        .await?
        .iter()
        .map(|d| DeploymentView::new(d, now))
        .collect();
    let healed = deployments
        .first()
        .filter(|d| d.trigger == Trigger::Heal.as_str() && d.status != "running")
        .cloned();
    let blocked = state
        .store
        .list_failed_digests(id)
        .await?
        .iter()
        .map(|f| BlockedDigestView::new(f, now))
        .collect();
    let logs = match logs_for.and_then(|want| {
        let instance = instances.iter().find(|i| i.id == want.id)?;
        Some((instance, want.filter))
    }) {
        Some((instance, filter)) => {
            Some(instance_panel(state, instance, format!("/stages/{id}"), filter).await)
        }
        None => None,
    };
    let config_changed = stored
        .iter()
        .find(|i| Some(i.id) == stage.current_instance_id && i.config_revision < stage.config_revision)
        .and_then(|i| Some((i.image_tag.clone(), i.image_digest.clone()?)));
    let current_tag = instances.iter().find(|i| i.is_current).map(|i| i.tag.as_str());
    let update_available = stage
        .available_tag
        .as_ref()
        .filter(|tag| !stage.auto_deploy && current_tag != Some(tag.as_str()))
        .cloned();
    let mut chrome = Chrome::new(
        &viewer.0,
        format!("{} / {}", project.name, stage.name),
        Nav::Dashboard,
        flash,
    )
    .live(state, "regions")
    .await;
    chrome.live_stage = Some(id);
    Ok(StagePage {
        chrome,
        forms,
        project_id: project.id,
        project_name: project.name.to_string(),
        stage: StageInfo {
            id,
            name: stage.name.to_string(),
            tag_policy: stage.tag_policy.to_string(),
            per_tag,
            schedule: stage.schedule.as_ref().map_or_else(
                || format!("{} (default)", state.settings.current().default_poll_schedule),
                ToString::to_string,
            ),
            auto_deploy: stage.auto_deploy,
            hostname_href: hostname
                .as_deref()
                .filter(|_| !per_tag)
                .map(|h| state.proxy_links.href(h)),
            // A per-tag stage's own name answers nothing: each instance has
            // `{tag}.{stage}.{project}.{base_domain}`, so the header shows that pattern.
            hostname: if per_tag {
                crate::routes::per_tag_hostname_pattern(
                    &stage,
                    project.name.as_str(),
                    state.settings.current().base_domain.as_ref(),
                )
                .unwrap_or_default()
            } else {
                hostname.unwrap_or_default()
            },
            max_instances: stage.max_instances,
            min_release_age: stage
                .min_release_age
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            port: stage.container.port,
            health_check: stage.container.health_check.as_ref().map_or_else(
                || format!("up for {} s", stage.container.min_ready_seconds),
                |h| format!("GET {} → {}", h.path, h.expected_status),
            ),
            env_keys: stage.container.env.keys().cloned().collect(),
            secret_env_keys: stage.secret_env_keys.clone(),
            update_available,
            config_changed,
            volumes: stage
                .container
                .volumes
                .iter()
                .map(|v| {
                    let mode = if v.read_only { " (read-only)" } else { "" };
                    format!("{} → {}{mode}", v.source, v.target)
                })
                .collect(),
            networks: std::iter::once(format!(
                "{} (as {})",
                project_network_name(project.name.as_str()),
                stage.name
            ))
            .chain(stage.container.networks.iter().cloned())
            .collect(),
        },
        instances,
        deployments,
        stage_values: StageFormValues::of(&stage),
        logs,
        rollback_question,
        blocked,
        healed,
    })
}

/// The rollback confirmation, naming the instance, tag and digest it brings back.
fn rollback_question(target: Option<&Instance>) -> String {
    match target {
        Some(i) => format!(
            "Bring back instance #{} (tag {}, digest {}) and stop the current one?",
            i.id,
            i.image_tag,
            i.image_digest.as_deref().unwrap_or("unknown"),
        ),
        None => "There is no earlier instance to bring back: none ran and is stopped now.".to_owned(),
    }
}

/// `POST /stages/{id}/edit`: changes a stage.
pub async fn stage_edit_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&stage_json(&form, true)?)?;
        api::stages::stage_patch(member.clone(), IdPath(id), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok(Json(stage)) => see_other_with(
            &format!("/stages/{id}"),
            Flash::notice(format!("Stage {} saved.", stage.name)),
        ),
        Err(err) if err.status == StatusCode::NOT_FOUND && err.field.is_none() => {
            error_page(err, Some(&member.0))
        }
        Err(err) => {
            let forms = Forms::failed("edit-stage", &form, &err, STAGE_FIELDS);
            let viewer = Viewer(member.0.clone());
            render_stage(&state, &viewer, id, None, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /stages/{id}/delete` (confirmed): deletes a stage.
pub async fn stage_delete_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return confirmation_page(
            &member.0,
            "Delete the stage?",
            &format!("/stages/{id}/delete"),
            "Deleting a stage cannot be undone.",
            "Delete stage",
            &format!("/stages/{id}"),
        );
    }
    let project_id = match state.store.get_stage(id).await {
        Ok(stage) => stage.project_id,
        Err(_) => {
            return error_page(
                WebError::not_found(format!("no stage with id {id}")),
                Some(&member.0),
            );
        }
    };
    match api::stages::stage_delete(
        member.clone(),
        IdPath(id),
        State(state.clone()),
        ApiQuery(Default::default()),
    )
    .await
    {
        Ok(_) => see_other_with(
            &format!("/projects/{project_id}"),
            Flash::notice("Stage deleted."),
        ),
        Err(err) => see_other_with(&format!("/stages/{id}"), Flash::error(err.message)),
    }
}

/// `POST /stages/{id}/deploy`: deploys the tag given, or what the policy selects when blank.
pub async fn stage_deploy_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let tag = form.opt("tag");
    let digest = form.opt("digest");
    let what = match (&tag, &digest) {
        (Some(t), Some(d)) => format!("tag {t} at {}", short_digest(Some(d))),
        (Some(t), None) => format!("tag {t}"),
        _ => "what the tag policy selects".to_owned(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let json = Bytes::from(json!({ "tag": tag, "digest": digest }).to_string());
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stage_actions::stage_deploy_post(task_member, IdPath(id), State(task_state), headers, json).await
    })
    .await;
    let back = format!("/stages/{id}");
    match outcome {
        Ok(Finished::Done(Ok((status, Json(deployment))))) => {
            let flash = if status == StatusCode::OK {
                Flash::notice(format!("Stage already runs {}.", deployment.image_tag))
            } else if deployment.status == "succeeded" {
                Flash::notice(format!(
                    "Deployed tag {} (instance {}).",
                    deployment.image_tag,
                    deployment.instance_id.unwrap_or_default()
                ))
            } else {
                Flash::error(format!(
                    "The deploy of tag {} failed: {}",
                    deployment.image_tag,
                    deployment.error.unwrap_or_default()
                ))
            };
            see_other_with(&back, flash)
        }
        Ok(Finished::StillRunning) => see_other_with(
            &back,
            Flash::notice(format!(
                "Deploying {what}… this page shows the outcome when it is done."
            )),
        ),
        Ok(Finished::Done(Err(err))) if err.field.as_deref() == Some("tag") && digest.is_none() => {
            let forms = Forms::failed("deploy", &form, &err, &["tag"]);
            let viewer = Viewer(member.0.clone());
            render_stage(&state, &viewer, id, None, FlashMessage(None), forms, err.status).await
        }
        Ok(Finished::Done(Err(err))) | Err(err) => action_failed(&member.0, &back, err),
    }
}

/// `POST /stages/{id}/poll`: polls the stage's repository now.
pub async fn stage_poll_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
) -> Response {
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stage_poll::stage_poll_post(task_member, IdPath(id), State(task_state)).await
    })
    .await;
    let back = format!("/stages/{id}");
    match outcome {
        Ok(Finished::Done(Ok(Json(report)))) => {
            let decision = serde_json::to_value(report.decision)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default();
            let selected = report
                .selected_tag
                .map_or_else(|| "no tag".to_owned(), |t| format!("tag {t}"));
            let mut message = format!(
                "Polled: {} tag{} in the registry, selected {selected}: {decision}.",
                report.tags_seen.len(),
                if report.tags_seen.len() == 1 { "" } else { "s" },
            );
            if let Some(error) = report.deploy_error {
                message.push_str(&format!(" The deploy could not run: {error}"));
                return see_other_with(&back, Flash::error(message));
            }
            if let Some(d) = report.deployment.filter(|d| d.status == "failed") {
                message.push_str(&format!(" The deploy failed: {}", d.error.unwrap_or_default()));
                return see_other_with(&back, Flash::error(message));
            }
            if report.decision == PollDecision::SkipFailed {
                let digest = report
                    .selected_digest
                    .as_deref()
                    .map_or_else(String::new, |d| format!(" ({})", short_digest(Some(d))));
                return see_other_with(
                    &back,
                    Flash::warning(format!(
                        "Polled: selected {selected}{digest}, skipped: this digest failed before \
                         (retry it from the stage page)."
                    )),
                );
            }
            see_other_with(&back, Flash::notice(message))
        }
        Ok(Finished::StillRunning) => see_other_with(
            &back,
            Flash::notice("Polling… a deploy it starts shows up here when it is done."),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => action_failed(&member.0, &back, err),
    }
}

/// `POST /stages/{id}/rollback` (confirmed): brings back the previous successful instance.
pub async fn stage_rollback_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let back = format!("/stages/{id}");
    if !FormData::parse(&body).confirmed() {
        let target = match state.store.get_stage(id).await {
            Ok(stage) => state
                .store
                .list_instances(&InstanceFilter {
                    stage_id: Some(id),
                    ..Default::default()
                })
                .await
                .ok()
                .and_then(|all| rollback_target(stage.current_instance_id, &all).cloned()),
            Err(_) => None,
        };
        return confirmation_page(
            &member.0,
            "Roll back the stage?",
            &format!("/stages/{id}/rollback"),
            &rollback_question(target.as_ref()),
            "Roll back",
            &back,
        );
    }
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        api::stage_actions::stage_rollback_post(task_member, IdPath(id), State(task_state)).await
    })
    .await;
    match outcome {
        Ok(Finished::Done(Ok((_, Json(d))))) if d.status == "succeeded" => see_other_with(
            &back,
            Flash::notice(format!("Rolled back to tag {}.", d.image_tag)),
        ),
        Ok(Finished::Done(Ok((_, Json(d))))) => see_other_with(
            &back,
            Flash::error(format!(
                "The rollback to tag {} failed: {}",
                d.image_tag,
                d.error.unwrap_or_default()
            )),
        ),
        Ok(Finished::StillRunning) => see_other_with(
            &back,
            Flash::notice("Rolling back… this page shows the outcome when it is done."),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => action_failed(&member.0, &back, err),
    }
}

/// Which instance action a form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InstanceAction {
    Stop,
    Start,
    Restart,
    Remove,
}

impl InstanceAction {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "stop" => Self::Stop,
            "start" => Self::Start,
            "restart" => Self::Restart,
            "remove" => Self::Remove,
            _ => return None,
        })
    }

    /// Stopping takes a site down; removing cannot be undone.
    fn needs_confirmation(self) -> bool {
        matches!(self, Self::Stop | Self::Remove)
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Restart => "restart",
            Self::Remove => "remove",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Stop => "stopped",
            Self::Start => "started",
            Self::Restart => "restarted",
            Self::Remove => "removed",
        }
    }
}

/// `POST /instances/{id}/{stop|start|restart|remove}`: an instance action, back to its stage.
pub async fn instance_action_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    Path((_, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(action) = InstanceAction::parse(&action) else {
        return error_page(
            WebError::not_found(format!("no instance action '{action}'")),
            Some(&member.0),
        );
    };
    let instance = match state.store.get_instance(id).await {
        Ok(instance) => instance,
        Err(_) => {
            return error_page(
                WebError::not_found(format!("no instance with id {id}")),
                Some(&member.0),
            );
        }
    };
    let back = format!("/stages/{}", instance.stage_id);
    let verb = action.verb();
    if action.needs_confirmation() && !FormData::parse(&body).confirmed() {
        return confirmation_page(
            &member.0,
            &format!("{} instance {id}?", capitalized(verb)),
            &format!("/instances/{id}/{verb}"),
            &format!(
                "Instance {id} runs tag {} of {} / {}.{}",
                instance.image_tag,
                instance.project_name,
                instance.stage_name,
                if action == InstanceAction::Remove {
                    " Its container is removed; this cannot be undone."
                } else {
                    " It stops serving traffic until it is started again."
                }
            ),
            &format!("{} instance", capitalized(verb)),
            &back,
        );
    }
    let task_state = state.clone();
    let task_member = member.clone();
    let outcome = within(ACTION_WAIT, async move {
        let state = State(task_state);
        let result = match action {
            InstanceAction::Stop => api::instances::instance_stop_post(task_member, IdPath(id), state).await,
            InstanceAction::Start => {
                api::instances::instance_start_post(task_member, IdPath(id), state).await
            }
            InstanceAction::Restart => {
                api::instances::instance_restart_post(task_member, IdPath(id), state).await
            }
            InstanceAction::Remove => {
                return api::instances::instance_delete(task_member, IdPath(id), state)
                    .await
                    .map(|_| ());
            }
        };
        result.map(|_| ())
    })
    .await;
    match outcome {
        Ok(Finished::Done(Ok(()))) => {
            see_other_with(&back, Flash::notice(format!("Instance {id} {}.", action.done())))
        }
        Ok(Finished::StillRunning) => see_other_with(
            &back,
            Flash::notice(format!(
                "Instance {id}: {verb} in progress… this page shows the outcome when it is done."
            )),
        ),
        Ok(Finished::Done(Err(err))) | Err(err) => action_failed(&member.0, &back, err),
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// An action that was refused or failed: back to the page, saying why. A missing page (404
/// without a field) is an error page: there is nothing to go back to.
fn action_failed(current: &CurrentUser, back: &str, err: WebError) -> Response {
    if err.status == StatusCode::NOT_FOUND && err.field.is_none() {
        return error_page(err, Some(current));
    }
    see_other_with(back, Flash::error(err.message))
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub question: String,
    pub target: String,
    pub explanation: String,
    pub button: String,
    pub cancel: String,
}

impl PageTemplate for ConfirmPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

/// The page a destructive post without `confirm=yes` gets: the question, and the form that
/// confirms it (what the `<details>` confirmation sends in one step).
pub fn confirmation_page(
    current: &CurrentUser,
    question: &str,
    target: &str,
    explanation: &str,
    button: &str,
    cancel: &str,
) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new(current, question, Nav::None, FlashMessage(None)),
        question: question.to_owned(),
        target: target.to_owned(),
        explanation: explanation.to_owned(),
        button: button.to_owned(),
        cancel: cancel.to_owned(),
    };
    render(StatusCode::OK, &page)
}
