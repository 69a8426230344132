//! The dashboard, `GET /`: what is live where. Every project with its stages; for each stage the
//! instance serving it (tag, short digest, status and since when, hostname as a link), deploys
//! in progress, the update a monitor-only stage could take, and its last deployment; then the
//! last deployments of all stages. Members get the form to add a project (its post lives in
//! [`super::projects`], which re-renders this page when the form is refused).
//!
//! The page refreshes its `data-live-region` parts when an event arrives (`static/live.js`).

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::form::Forms;
use super::page::{Chrome, FlashMessage, Nav, PageTemplate, Ui, error_page, render};
use super::view::{DeploymentView, InstanceView};
use crate::domain::instance::{InstanceFilter, InstanceStatus};
use crate::domain::tag_policy::PolicyMode;
use crate::web::auth::Viewer;
use crate::web::error::WebResult;
use crate::web::state::AppState;

/// How many deployments the dashboard lists.
const LAST_DEPLOYMENTS: u32 = 10;

/// The inputs of the new-project form, for placing errors.
pub const PROJECT_FIELDS: &[&str] = &[
    "name",
    "image",
    "registry_username",
    "registry_password",
    "insecure_registry",
];

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub projects: Vec<ProjectCard>,
    pub deployments: Vec<DeploymentRow>,
    /// How many instances run now, over all stages.
    pub running: usize,
}

impl PageTemplate for DashboardPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct ProjectCard {
    pub id: i64,
    pub name: String,
    pub image: String,
    pub stages: Vec<StageRow>,
}

pub struct StageRow {
    pub id: i64,
    pub name: String,
    pub tag_policy: String,
    pub auto_deploy: bool,
    pub per_tag: bool,
    /// The instances serving it, and deploys in progress.
    pub instances: Vec<InstanceView>,
    /// Monitor-only stages: a selected tag that is not the one running.
    pub update_available: Option<String>,
    pub last_deployment: Option<DeploymentView>,
}

pub struct DeploymentRow {
    pub project_name: String,
    pub stage_name: String,
    pub view: DeploymentView,
}

pub async fn dashboard_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
) -> Response {
    render_dashboard(&state, &viewer, flash, Forms::none(), StatusCode::OK).await
}

/// Renders the dashboard, with `forms` when the new-project form was refused.
pub async fn render_dashboard(
    state: &AppState,
    viewer: &Viewer,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let chrome = Chrome::new(&viewer.0, "Dashboard", Nav::Dashboard, flash)
        .live(state, "regions")
        .await;
    match build(state).await {
        Ok((projects, deployments, running)) => render(
            status,
            &DashboardPage {
                chrome,
                forms,
                projects,
                deployments,
                running,
            },
        ),
        Err(err) => error_page(err, Some(&viewer.0)),
    }
}

async fn build(state: &AppState) -> WebResult<(Vec<ProjectCard>, Vec<DeploymentRow>, usize)> {
    let now = state.clock.now();
    let base_domain = state.settings.current().base_domain;
    let projects = state.store.list_projects().await?;
    let stages = state.store.list_all_stages().await?;
    let instances = state.store.list_instances(&InstanceFilter::default()).await?;
    let deployments = state.store.list_deployments(None, LAST_DEPLOYMENTS).await?;
    let running = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .count();

    let project_names: HashMap<i64, &str> = projects.iter().map(|p| (p.id, p.name.as_str())).collect();
    let stage_names: HashMap<i64, (&str, i64)> = stages
        .iter()
        .map(|s| (s.id, (s.name.as_str(), s.project_id)))
        .collect();
    // Instances come newest first; the first deployment seen per stage is its last.
    let mut last_by_stage = HashMap::new();
    for d in &deployments {
        last_by_stage.entry(d.stage_id).or_insert(d);
    }

    let mut cards: Vec<ProjectCard> = projects
        .iter()
        .map(|p| ProjectCard {
            id: p.id,
            name: p.name.to_string(),
            image: p.image.name(),
            stages: Vec::new(),
        })
        .collect();
    for stage in &stages {
        let per_tag = stage.tag_policy.mode() == PolicyMode::PerTag;
        let project_name = project_names.get(&stage.project_id).copied().unwrap_or("");
        let hostname = crate::routes::stage_hostname(stage, project_name, base_domain.as_ref());
        let shown: Vec<InstanceView> = instances
            .iter()
            .filter(|i| i.stage_id == stage.id)
            .filter(|i| {
                let in_progress = matches!(i.status, InstanceStatus::Pending | InstanceStatus::Deploying);
                let serving = if per_tag {
                    i.status == InstanceStatus::Running
                } else {
                    stage.current_instance_id == Some(i.id)
                };
                in_progress || serving
            })
            .map(|i| InstanceView::new(i, per_tag, hostname.as_deref(), &state.proxy_links, now))
            .collect();
        let current_tag = shown.iter().find(|i| i.is_current).map(|i| i.tag.as_str());
        let update_available = stage
            .available_tag
            .as_ref()
            .filter(|tag| !stage.auto_deploy && current_tag != Some(tag.as_str()))
            .cloned();
        let row = StageRow {
            id: stage.id,
            name: stage.name.to_string(),
            tag_policy: stage.tag_policy.to_string(),
            auto_deploy: stage.auto_deploy,
            per_tag,
            instances: shown,
            update_available,
            last_deployment: last_by_stage.get(&stage.id).map(|d| DeploymentView::new(d, now)),
        };
        if let Some(card) = cards.iter_mut().find(|c| c.id == stage.project_id) {
            card.stages.push(row);
        }
    }
    let rows = deployments
        .iter()
        .map(|d| {
            let (stage_name, project_id) = stage_names.get(&d.stage_id).copied().unwrap_or(("?", 0));
            DeploymentRow {
                project_name: project_names.get(&project_id).copied().unwrap_or("?").to_owned(),
                stage_name: stage_name.to_owned(),
                view: DeploymentView::new(d, now),
            }
        })
        .collect();
    Ok((cards, rows, running))
}
