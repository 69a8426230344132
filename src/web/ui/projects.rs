//! The project page, `GET /projects/{id}`: the project's repository and credentials (edit form
//! for members, delete for admins), its stages with what runs on each, and the form to add a
//! stage, and its accessories (their forms are handled in [`super::accessories`]). Its form
//! targets: `POST /projects` (the dashboard's new-project form), `POST /projects/{id}/edit`,
//! `POST /projects/{id}/delete` and `POST /projects/{id}/stages`. Each hands the form, as JSON,
//! to the API handler that does the same for `/api`.

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::accessory_view::{AccessoryFormValues, AccessoryRow, accessory_rows};
use super::dashboard::{PROJECT_FIELDS, render_dashboard};
use super::form::{FormData, Forms, api_body, json_text};
use super::logs::{LogsRequest, LogsView, accessory_panel};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render, see_other_with};
use super::stage_form::{STAGE_FIELDS, StageFormValues, stage_json};
use super::view::InstanceView;
use crate::domain::instance::{InstanceFilter, InstanceStatus};
use crate::domain::tag_policy::PolicyMode;
use crate::web::api;
use crate::web::auth::{Admin, Member, Viewer};
use crate::web::error::{WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

#[derive(Template)]
#[template(path = "project.html")]
pub struct ProjectPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub project: ProjectView,
    pub stages: Vec<ProjectStageRow>,
    /// The new-stage form's starting values.
    pub stage_values: StageFormValues,
    pub accessories: Vec<AccessoryRow>,
    /// The new-accessory form's starting values.
    pub accessory_values: AccessoryFormValues,
    /// The logs panel of one accessory (`?logs=<accessory id>`).
    pub logs: Option<LogsView>,
}

impl PageTemplate for ProjectPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct ProjectView {
    pub id: i64,
    pub name: String,
    pub image: String,
    pub registry_username: String,
    pub has_registry_password: bool,
    pub insecure_registry: bool,
}

pub struct ProjectStageRow {
    pub id: i64,
    pub name: String,
    pub tag_policy: String,
    pub schedule: String,
    pub auto_deploy: bool,
    pub hostname: String,
    /// The hostname's link through the reverse proxy; none without a hostname, and none for a
    /// per-tag stage, whose `hostname` is its instances' pattern.
    pub hostname_href: Option<String>,
    pub instances: Vec<InstanceView>,
}

pub async fn project_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
    flash: FlashMessage,
    RawQuery(query): RawQuery,
) -> Response {
    let mut page = match build(&state, &viewer, id, flash, Forms::none()).await {
        Ok(page) => page,
        Err(err) => return error_page(err, Some(&viewer.0)),
    };
    if let Some(want) = LogsRequest::from_query(query.as_deref())
        && let Some(accessory) = page.accessories.iter().find(|a| a.id == want.id)
    {
        page.logs = Some(accessory_panel(&state, accessory, format!("/projects/{id}"), want.filter).await);
    }
    render(StatusCode::OK, &page)
}

/// Renders a project's page, with `forms` when one of its forms was refused.
pub async fn render_project(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    match build(state, viewer, id, flash, forms).await {
        Ok(page) => render(status, &page),
        Err(err) => error_page(err, Some(&viewer.0)),
    }
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    flash: FlashMessage,
    forms: Forms,
) -> WebResult<ProjectPage> {
    let project = state
        .store
        .get_project(id)
        .await
        .map_err(|_| WebError::not_found(format!("no project with id {id}")))?;
    let now = state.clock.now();
    let base_domain = state.settings.current().base_domain;
    let stages = state.store.list_stages(id).await?;
    let instances = state
        .store
        .list_instances(&InstanceFilter {
            project_id: Some(id),
            ..Default::default()
        })
        .await?;
    let rows = stages
        .iter()
        .map(|stage| {
            let per_tag = stage.tag_policy.mode() == PolicyMode::PerTag;
            let hostname = crate::routes::stage_hostname(stage, project.name.as_str(), base_domain.as_ref());
            ProjectStageRow {
                id: stage.id,
                name: stage.name.to_string(),
                tag_policy: stage.tag_policy.to_string(),
                schedule: stage
                    .schedule
                    .as_ref()
                    .map_or_else(|| "default".to_owned(), ToString::to_string),
                auto_deploy: stage.auto_deploy,
                // A per-tag stage's own name answers nothing: show its instances' pattern.
                hostname: if per_tag {
                    crate::routes::per_tag_hostname_pattern(
                        stage,
                        project.name.as_str(),
                        base_domain.as_ref(),
                    )
                    .unwrap_or_default()
                } else {
                    hostname.clone().unwrap_or_default()
                },
                hostname_href: hostname
                    .as_deref()
                    .filter(|_| !per_tag)
                    .map(|h| state.proxy_links.href(h)),
                instances: instances
                    .iter()
                    .filter(|i| i.stage_id == stage.id)
                    .filter(|i| {
                        (per_tag && i.status == InstanceStatus::Running)
                            || (!per_tag && stage.current_instance_id == Some(i.id))
                            || matches!(i.status, InstanceStatus::Pending | InstanceStatus::Deploying)
                    })
                    .map(|i| InstanceView::new(i, per_tag, hostname.as_deref(), &state.proxy_links, now))
                    .collect(),
            }
        })
        .collect();
    let chrome = Chrome::new(
        &viewer.0,
        format!("Project {}", project.name),
        Nav::Dashboard,
        flash,
    )
    .live(state, "regions")
    .await;
    Ok(ProjectPage {
        chrome,
        forms,
        project: ProjectView {
            id: project.id,
            name: project.name.to_string(),
            image: project.image.name(),
            registry_username: project.registry_username.clone().unwrap_or_default(),
            has_registry_password: project.has_registry_password,
            insecure_registry: project.insecure_registry,
        },
        stages: rows,
        stage_values: StageFormValues::defaults(),
        accessories: accessory_rows(state, id).await?,
        accessory_values: AccessoryFormValues::default(),
        logs: None,
    })
}

/// `POST /projects`: adds a project (the dashboard's form).
pub async fn projects_post(State(state): State<AppState>, Ui(member): Ui<Member>, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&json!({
            "name": form.text("name"),
            "image": form.text("image"),
            "registry_username": json_text(form.opt("registry_username")),
            "registry_password": json_text(form.get("registry_password").filter(|p| !p.is_empty()).map(str::to_owned)),
            "insecure_registry": form.checked("insecure_registry"),
        }))?;
        api::projects::projects_post(member.clone(), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok((_, Json(project))) => see_other_with(
            &format!("/projects/{}", project.id),
            Flash::notice(format!("Project {} added. Now add a stage.", project.name)),
        ),
        Err(err) => {
            let forms = Forms::failed("new-project", &form, &err, PROJECT_FIELDS);
            let viewer = Viewer(member.0.clone());
            render_dashboard(&state, &viewer, FlashMessage(None), forms, err.status).await
        }
    }
}

/// The inputs of the edit-project form.
const EDIT_PROJECT_FIELDS: &[&str] = &[
    "name",
    "image",
    "registry_username",
    "registry_password",
    "remove_registry_password",
    "insecure_registry",
];

/// `POST /projects/{id}/edit`: changes a project. A blank password keeps the stored one.
pub async fn project_edit_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let mut patch = Map::new();
        patch.insert("name".into(), Value::from(form.text("name")));
        patch.insert("image".into(), Value::from(form.text("image")));
        patch.insert(
            "registry_username".into(),
            json_text(form.opt("registry_username")),
        );
        patch.insert(
            "insecure_registry".into(),
            Value::from(form.checked("insecure_registry")),
        );
        if form.checked("remove_registry_password") {
            patch.insert("registry_password".into(), Value::Null);
        } else if let Some(password) = form.get("registry_password").filter(|p| !p.is_empty()) {
            patch.insert("registry_password".into(), Value::from(password));
        }
        let request = api_body(&Value::Object(patch))?;
        api::projects::project_patch(member.clone(), IdPath(id), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok(Json(project)) => see_other_with(
            &format!("/projects/{id}"),
            Flash::notice(format!("Project {} saved.", project.name)),
        ),
        Err(err) if err.status == StatusCode::NOT_FOUND => error_page(err, Some(&member.0)),
        Err(err) => {
            let forms = Forms::failed("edit-project", &form, &err, EDIT_PROJECT_FIELDS);
            let viewer = Viewer(member.0.clone());
            render_project(&state, &viewer, id, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /projects/{id}/delete` (admins, confirmed): deletes a project without stages.
pub async fn project_delete_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    if !form.confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            "Delete the project?",
            &format!("/projects/{id}/delete"),
            "Deleting a project cannot be undone. Only a project without stages can be deleted.",
            "Delete project",
            &format!("/projects/{id}"),
        );
    }
    match api::projects::project_delete(
        admin.clone(),
        IdPath(id),
        State(state.clone()),
        ApiQuery(Default::default()),
    )
    .await
    {
        Ok(_) => see_other_with("/", Flash::notice("Project deleted.")),
        Err(err) => see_other_with(&format!("/projects/{id}"), Flash::error(err.message)),
    }
}

/// `POST /projects/{id}/stages`: adds a stage to a project.
pub async fn project_stages_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&stage_json(&form, false)?)?;
        api::stages::project_stages_post(member.clone(), IdPath(id), State(state.clone()), ApiJson(request))
            .await
    }
    .await;
    match result {
        Ok((_, Json(stage))) => see_other_with(
            &format!("/stages/{}", stage.id),
            Flash::notice(format!("Stage {} added.", stage.name)),
        ),
        Err(err) if err.status == StatusCode::NOT_FOUND && err.field.is_none() => {
            error_page(err, Some(&member.0))
        }
        Err(err) => {
            let forms = Forms::failed("new-stage", &form, &err, STAGE_FIELDS);
            let viewer = Viewer(member.0.clone());
            render_project(&state, &viewer, id, FlashMessage(None), forms, err.status).await
        }
    }
}
