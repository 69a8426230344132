//! The installation as stack resources, and stack changes carried out through the API's own
//! handlers. Loading reads the store and shapes each record with the API's response type, so
//! the diff compares exactly what the API answers; carrying out calls the very handler that
//! `POST`, `PATCH` or `DELETE` on the resource runs, with the caller's role — validation,
//! conflicts, events, route-table and poller refreshes all happen as for a single API call.
//! Adding a kind to [`crate::stack::Kind`] means a loading branch and three calls here.
//! Notification channels are loaded only for admins: a member may not read them.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::notifications::{
    ChannelCreateRequest, ChannelPatchRequest, RuleRequest, channel_delete, channel_patch, channels_post,
};
use super::projects::{
    ProjectCreateRequest, ProjectPatchRequest, ProjectResponse, project_delete, project_patch, projects_post,
};
use super::proxies::{
    ProxyCreateRequest, ProxyPatchRequest, ProxyResponse, proxies_post, proxy_delete, proxy_patch,
};
use super::settings::settings_patch;
use super::stage_container::check_workload;
use super::stages::{
    StageCreateRequest, StagePatchRequest, StageResponse, project_stages_post, stage_delete, stage_patch,
};
use crate::domain::instance::InstanceFilter;
use crate::domain::stage::ContainerSpec;
use crate::domain::user::Role;
use crate::stack::channel::{self, SECRETS_PREFIX};
use crate::stack::{Action, Change, Kind, Resource, SECRET_ENV_PREFIX, Stack};
use crate::web::auth::{Admin, CurrentUser, Member};
use crate::web::error::{WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// The installation's resources, with the ids the API addresses them by.
#[derive(Debug, Default)]
pub struct Installation {
    pub resources: Vec<Resource>,
    projects: HashMap<String, i64>,
    stages: HashMap<(String, String), i64>,
    proxies: HashMap<String, i64>,
    channels: HashMap<String, i64>,
}

fn to_json<T: serde::Serialize>(value: &T) -> WebResult<Value> {
    serde_json::to_value(value).map_err(WebError::internal)
}

/// Reads the whole configuration of the installation — the notification channels only when
/// `with_channels` (an admin's). Sealed secrets are opened to be compared with a file's; one
/// that no longer opens compares unequal to anything, so an apply rewrites it.
pub async fn load_installation(state: &AppState, with_channels: bool) -> WebResult<Installation> {
    let mut installation = Installation::default();
    let settings = Value::Object(state.settings.current().to_json());
    installation
        .resources
        .push(Resource::from_api(Kind::Settings, Vec::new(), &settings));
    let mut stages = Vec::new();
    for project in state.store.list_projects().await? {
        let name = project.name.to_string();
        let mut resource = Resource::from_api(
            Kind::Project,
            vec![name.clone()],
            &to_json(&ProjectResponse::from(&project))?,
        );
        let password = state
            .store
            .project_registry_password(project.id)
            .await?
            .map(|sealed| state.secrets.open(&sealed).unwrap_or_default());
        resource.secrets.insert("registry_password".into(), password);
        installation.resources.push(resource);
        installation.projects.insert(name.clone(), project.id);
        for stage in state.store.list_stages(project.id).await? {
            let key = vec![name.clone(), stage.name.to_string()];
            installation
                .stages
                .insert((key[0].clone(), key[1].clone()), stage.id);
            // The stored spec, as a file writes it (answers add env_keys and secret_env_keys).
            let mut json = to_json(&StageResponse::new(&stage, true))?;
            json["container"] = to_json(&stage.container)?;
            let mut resource = Resource::from_api(Kind::Stage, key, &json);
            for (name, sealed) in state.store.stage_secrets(stage.id).await? {
                let value = state.secrets.open(&sealed).unwrap_or_default();
                resource
                    .secrets
                    .insert(format!("{SECRET_ENV_PREFIX}{name}"), Some(value));
            }
            stages.push(resource);
        }
    }
    installation.resources.extend(stages);
    for proxy in state.store.list_proxies().await? {
        let hostname = proxy.hostname.to_string();
        installation.proxies.insert(hostname.clone(), proxy.id);
        installation.resources.push(Resource::from_api(
            Kind::Proxy,
            vec![hostname],
            &to_json(&ProxyResponse::from(&proxy))?,
        ));
    }
    if with_channels {
        load_channels(state, &mut installation).await?;
    }
    Ok(installation)
}

/// The notification channels, their rules' project ids as names.
async fn load_channels(state: &AppState, installation: &mut Installation) -> WebResult<()> {
    let names: HashMap<i64, String> = installation
        .projects
        .iter()
        .map(|(name, id)| (*id, name.clone()))
        .collect();
    for stored in state.store.list_channels().await? {
        let projects = stored
            .rule
            .project_ids
            .iter()
            .filter_map(|id| names.get(id).cloned())
            .collect();
        // A channel whose secrets no longer open compares as having none: an apply sets them.
        let secrets = match state.notifier.channel_secrets(stored.id).await {
            Ok(secrets) => secrets,
            Err(e) => {
                tracing::warn!(error = %e, channel_id = stored.id, "cannot open a channel's secrets");
                Default::default()
            }
        };
        installation.channels.insert(stored.name.clone(), stored.id);
        installation
            .resources
            .push(channel::stored_resource(&stored, projects, &secrets));
    }
    Ok(())
}

/// Refuses a file that names what the caller may not even read: notification channels are an
/// admin's, so a member's file must leave `[notifications]` out (whatever it would change).
pub fn check_sections(user: &CurrentUser, stack: &Stack) -> WebResult<()> {
    if !stack.sections.contains(&Kind::Channel) {
        return Ok(());
    }
    if let Err(refused) = user.require(Role::Admin) {
        let section = crate::stack::CHANNELS_SECTION;
        let place = match stack.locations.get(section) {
            Some(at) => format!("{}:{}:{}", stack.file_name, at.line, at.column),
            None => stack.file_name.clone(),
        };
        return Err(WebError {
            message: format!(
                "{place}: {section}: notification channels need the admin role, and you are {}: leave the [{section}] section out of the file",
                user.user.role
            ),
            field: Some(section.to_owned()),
            ..refused
        });
    }
    Ok(())
}

/// Refuses, before anything changes, a plan the API would refuse halfway: changes that need
/// an admin, deleting a stage that still has instances, changing a channel's kind, a channel's
/// rule naming a project that will not exist, and a stage container the running installation
/// refuses (a bind mount outside `allowed_bind_paths`, an unknown network).
pub async fn check_changes(
    state: &AppState,
    user: &CurrentUser,
    stack: &Stack,
    installation: &Installation,
    changes: &[Change],
) -> WebResult<()> {
    check_sections(user, stack)?;
    for change in changes {
        if change.kind.needs_admin(change.action)
            && let Err(refused) = user.require(crate::domain::user::Role::Admin)
        {
            return Err(located(refused, stack, change, None, 0));
        }
        if change.kind == Kind::Stage
            && matches!(change.action, Action::Create | Action::Update)
            && let Some(container) = change.resource.fields.get("container")
            && let Ok(spec) = serde_json::from_value::<ContainerSpec>(container.clone())
            && let Err(refused) = check_workload(state, &spec).await
        {
            let field = refused.field.clone();
            return Err(located(refused, stack, change, field.as_deref(), 0));
        }
        if (change.kind, change.action) == (Kind::Stage, Action::Delete) {
            let id = installation.stage_id(&change.key)?;
            let filter = InstanceFilter {
                stage_id: Some(id),
                ..InstanceFilter::default()
            };
            let instances = state.store.list_instances(&filter).await?.len();
            if instances > 0 {
                let refused = WebError::conflict(
                    None,
                    format!(
                        "stage {} still has {instances} instance(s); apply never removes containers: clean them up first (DELETE /api/instances/{{id}}) or keep the stage in the file",
                        change.key.join("/")
                    ),
                );
                return Err(located(refused, stack, change, None, 0));
            }
        }
        if change.kind == Kind::Channel && change.action != Action::Delete {
            check_channel(stack, installation, changes, change)?;
        }
    }
    Ok(())
}

/// A channel's kind never changes (the API cannot change it either), and the projects its rule
/// names exist once the plan's projects are made.
fn check_channel(
    stack: &Stack,
    installation: &Installation,
    changes: &[Change],
    change: &Change,
) -> WebResult<()> {
    if change.action == Action::Update && change.fields.iter().any(|f| f.field == "kind") {
        let refused = WebError::conflict(
            Some("kind"),
            "a channel's kind cannot change: give the new channel another name (with --prune the old one goes)",
        );
        return Err(located(refused, stack, change, Some("kind"), 0));
    }
    let rule = change.resource.fields.get("rule").cloned().unwrap_or_default();
    for project in channel::rule_projects(&rule) {
        let key = [project.clone()];
        let planned = |action: Action| {
            changes
                .iter()
                .any(|c| c.kind == Kind::Project && c.action == action && c.key == key)
        };
        let exists = installation.projects.contains_key(&project) && !planned(Action::Delete);
        if !exists && !planned(Action::Create) {
            let refused = WebError::validation(
                "rule.projects",
                format!("no project named {project}: neither in the file nor in the installation"),
            );
            return Err(located(refused, stack, change, Some("rule.projects"), 0));
        }
    }
    Ok(())
}

impl Installation {
    fn project_id(&self, key: &[String]) -> WebResult<i64> {
        key.first()
            .and_then(|name| self.projects.get(name).copied())
            .ok_or_else(|| WebError::not_found(format!("no project {}", key.join("/"))))
    }

    fn stage_id(&self, key: &[String]) -> WebResult<i64> {
        match key {
            [project, stage] => self.stages.get(&(project.clone(), stage.clone())).copied(),
            _ => None,
        }
        .ok_or_else(|| WebError::not_found(format!("no stage {}", key.join("/"))))
    }

    fn channel_id(&self, key: &[String]) -> WebResult<i64> {
        key.first()
            .and_then(|name| self.channels.get(name).copied())
            .ok_or_else(|| WebError::not_found(format!("no notification channel {}", key.join("/"))))
    }

    fn proxy_id(&self, key: &[String]) -> WebResult<i64> {
        key.first()
            .and_then(|hostname| self.proxies.get(hostname).copied())
            .ok_or_else(|| WebError::not_found(format!("no proxy {}", key.join("/"))))
    }
}

/// Carries out `changes` in order; the first failure stops it, located in the file and saying
/// how many changes were made before it.
pub async fn carry_out(
    state: &AppState,
    user: &CurrentUser,
    stack: &Stack,
    installation: &mut Installation,
    changes: &[Change],
) -> WebResult<()> {
    for (done, change) in changes.iter().enumerate() {
        if let Err(err) = carry_out_one(state, user, installation, change).await {
            let field = err.field.clone();
            return Err(located(err, stack, change, field.as_deref(), done));
        }
    }
    Ok(())
}

/// A request body from the change: the changed top-level fields (all of them for a create),
/// plus `extra` (the name, the hostname), plus secrets that change.
fn body<T: DeserializeOwned>(change: &Change, extra: &[(&str, Value)]) -> WebResult<T> {
    let mut object = Map::new();
    let fields: Vec<&str> = match change.action {
        Action::Create => change.kind.fields().to_vec(),
        Action::Update | Action::Delete => change.top_level_fields(),
    };
    for field in fields {
        if let Some(value) = change.resource.fields.get(field) {
            object.insert(field.to_owned(), value.clone());
        }
    }
    for (field, value) in &change.resource.secrets {
        let changed = change.fields.iter().any(|f| f.field == *field);
        if !(changed || change.action == Action::Create)
            || (value.is_none() && change.action != Action::Update)
        {
            continue;
        }
        let value = value.clone().map_or(Value::Null, Value::String);
        match field.strip_prefix(SECRET_ENV_PREFIX) {
            // A stage's `container` replaces the spec whole: send it with the secret changes.
            Some(key) => {
                let container = object.entry("container").or_insert_with(|| {
                    change
                        .resource
                        .fields
                        .get("container")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Map::new()))
                });
                if let Value::Object(container) = container {
                    let secret_env = container
                        .entry("secret_env")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(secret_env) = secret_env {
                        secret_env.insert(key.to_owned(), value);
                    }
                }
            }
            None => {
                object.insert(field.clone(), value);
            }
        }
    }
    for (key, value) in extra {
        object.insert((*key).to_owned(), value.clone());
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| WebError::validation("", e.to_string()))
}

async fn carry_out_one(
    state: &AppState,
    user: &CurrentUser,
    installation: &mut Installation,
    change: &Change,
) -> WebResult<()> {
    let st = || State(state.clone());
    let member = || Member(user.clone());
    let admin = || Admin(user.clone());
    let key = &change.key;
    match (change.kind, change.action) {
        (Kind::Settings, Action::Create | Action::Update) => {
            let patch: Value = body(change, &[])?;
            let _settings = settings_patch(admin(), st(), ApiJson(patch)).await?;
        }
        (Kind::Settings, Action::Delete) => {}
        (Kind::Project, Action::Create) => {
            let request: ProjectCreateRequest = body(change, &[("name", key[0].clone().into())])?;
            let (_, Json(project)) = projects_post(member(), st(), ApiJson(request)).await?;
            installation.projects.insert(key[0].clone(), project.id);
        }
        (Kind::Project, Action::Update) => {
            let request: ProjectPatchRequest = body(change, &[])?;
            let id = installation.project_id(key)?;
            let _project = project_patch(member(), IdPath(id), st(), ApiJson(request)).await?;
        }
        (Kind::Project, Action::Delete) => {
            let id = installation.project_id(key)?;
            project_delete(admin(), IdPath(id), st(), ApiQuery(Default::default())).await?;
        }
        (Kind::Stage, Action::Create) => {
            let request: StageCreateRequest = body(change, &[("name", key[1].clone().into())])?;
            let project_id = installation.project_id(key)?;
            let (_, Json(stage)) =
                project_stages_post(member(), IdPath(project_id), st(), ApiJson(request)).await?;
            installation
                .stages
                .insert((key[0].clone(), key[1].clone()), stage.id);
        }
        (Kind::Stage, Action::Update) => {
            let request: StagePatchRequest = body(change, &[])?;
            let id = installation.stage_id(key)?;
            let _stage = stage_patch(member(), IdPath(id), st(), ApiJson(request)).await?;
        }
        (Kind::Stage, Action::Delete) => {
            let id = installation.stage_id(key)?;
            stage_delete(member(), IdPath(id), st(), ApiQuery(Default::default())).await?;
        }
        (Kind::Proxy, Action::Create) => {
            let request: ProxyCreateRequest = body(change, &[("hostname", key[0].clone().into())])?;
            let (_, Json(proxy)) = proxies_post(admin(), st(), ApiJson(request)).await?;
            installation.proxies.insert(key[0].clone(), proxy.id);
        }
        (Kind::Proxy, Action::Update) => {
            let request: ProxyPatchRequest = body(change, &[])?;
            let id = installation.proxy_id(key)?;
            let _proxy = proxy_patch(admin(), IdPath(id), st(), ApiJson(request)).await?;
        }
        (Kind::Proxy, Action::Delete) => {
            let id = installation.proxy_id(key)?;
            proxy_delete(admin(), IdPath(id), st()).await?;
        }
        (Kind::Channel, Action::Create) => {
            let request = ChannelCreateRequest {
                name: key[0].clone(),
                kind: string_field(change, "kind"),
                enabled: change
                    .resource
                    .fields
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                settings: change
                    .resource
                    .fields
                    .get("settings")
                    .cloned()
                    .unwrap_or_default(),
                secrets: channel_secrets(change),
                rule: Some(rule_request(installation, change)?),
            };
            let (_, Json(created)) = channels_post(admin(), st(), ApiJson(request)).await?;
            installation.channels.insert(key[0].clone(), created.id);
        }
        (Kind::Channel, Action::Update) => {
            let changed = change.top_level_fields();
            let given = |field: &str| {
                changed
                    .contains(&field)
                    .then(|| change.resource.fields.get(field).cloned())
                    .flatten()
            };
            let request = ChannelPatchRequest {
                name: None,
                enabled: given("enabled").and_then(|v| v.as_bool()),
                settings: given("settings"),
                secrets: channel_secrets(change),
                rule: given("rule")
                    .map(|_| rule_request(installation, change))
                    .transpose()?,
            };
            let id = installation.channel_id(key)?;
            let _channel = channel_patch(admin(), IdPath(id), st(), ApiJson(request)).await?;
        }
        (Kind::Channel, Action::Delete) => {
            let id = installation.channel_id(key)?;
            channel_delete(admin(), IdPath(id), st()).await?;
        }
    }
    Ok(())
}

fn string_field(change: &Change, field: &str) -> String {
    change
        .resource
        .fields
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The channel's secrets a create sets (all the file gives) or an update changes.
fn channel_secrets(change: &Change) -> std::collections::BTreeMap<String, Option<String>> {
    change
        .resource
        .secrets
        .iter()
        .filter(|(field, _)| {
            change.action == Action::Create || change.fields.iter().any(|f| f.field == **field)
        })
        .filter_map(|(field, value)| {
            field
                .strip_prefix(SECRETS_PREFIX)
                .map(|key| (key.to_owned(), value.clone()))
        })
        .collect()
}

/// The API's rule from a channel's canonical one: project names become this installation's ids
/// (projects the apply created are known by now).
fn rule_request(installation: &Installation, change: &Change) -> WebResult<RuleRequest> {
    let rule = change.resource.fields.get("rule").cloned().unwrap_or_default();
    let strings = |field: &str| -> Vec<String> {
        rule.get(field)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let project_ids = channel::rule_projects(&rule)
        .iter()
        .map(|name| {
            installation
                .projects
                .get(name)
                .copied()
                .ok_or_else(|| WebError::validation("rule.projects", format!("no project named {name}")))
        })
        .collect::<WebResult<_>>()?;
    Ok(RuleRequest {
        min_severity: rule
            .get("min_severity")
            .and_then(Value::as_str)
            .map(str::to_owned),
        sources: strings("sources"),
        project_ids,
        kinds: strings("kinds"),
    })
}

/// An API error of one change, told in the file's terms: the field's path in the file, and
/// `file:line:column` where the resource (or the field) is written.
fn located(err: WebError, stack: &Stack, change: &Change, field: Option<&str>, done: usize) -> WebError {
    let table = change.kind.path(&change.key).join(".");
    let path = match field.filter(|f| !f.is_empty()) {
        Some(field) => format!("{table}.{field}"),
        None => table,
    };
    let place = match stack.location(change.kind, &change.key, field) {
        Some(at) => format!("{}:{}:{}", stack.file_name, at.line, at.column),
        None => stack.file_name.clone(),
    };
    let verb = match change.action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Delete => "deleting",
    };
    let earlier = match done {
        0 => String::new(),
        1 => " (1 earlier change of this apply was made)".to_owned(),
        n => format!(" ({n} earlier changes of this apply were made)"),
    };
    WebError {
        message: format!(
            "{place}: {path}: {verb} {} {}: {}{earlier}",
            change.kind.noun(),
            change.key.join("/"),
            err.message
        ),
        field: Some(path),
        ..err
    }
}
