//! What the project page shows of its accessories: one row per accessory (status, image, out of
//! date, port) with its edit form's starting values. Secret variables appear by name only.

use crate::domain::accessory::{Accessory, AccessoryStatus, image_reference};
use crate::web::error::WebResult;
use crate::web::state::AppState;

/// The id of accessory `id`'s edit form.
pub fn edit_form_id(id: i64) -> String {
    format!("edit-accessory-{id}")
}

/// What an accessory form shows before anything is typed.
#[derive(Debug, Clone, Default)]
pub struct AccessoryFormValues {
    pub name: String,
    pub image: String,
    pub port: String,
    /// One argument per line.
    pub command: String,
    /// `KEY=value` lines.
    pub env: String,
    /// The names of its secret variables (never their values).
    pub secret_env_keys: Vec<String>,
    /// `source:target` lines, `:ro` appended for read-only mounts.
    pub volumes: String,
}

impl AccessoryFormValues {
    pub fn of(accessory: &Accessory) -> Self {
        let spec = &accessory.spec;
        Self {
            name: accessory.name.to_string(),
            image: image_reference(&accessory.image),
            port: spec.port.map(|p| p.to_string()).unwrap_or_default(),
            command: spec.command.as_ref().map_or_else(String::new, |c| c.join("\n")),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            secret_env_keys: accessory.secret_env_keys.clone(),
            volumes: spec
                .volumes
                .iter()
                .map(|v| {
                    format!(
                        "{}:{}{}",
                        v.source,
                        v.target,
                        if v.read_only { ":ro" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One accessory as the project page lists it.
pub struct AccessoryRow {
    pub id: i64,
    pub name: String,
    pub image: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub out_of_date: bool,
    /// `5432 → 127.0.0.1:49153`, or blank without a port.
    pub port: String,
    pub env_keys: Vec<String>,
    /// The edit form's id and starting values (members only see the form).
    pub form_id: String,
    pub values: AccessoryFormValues,
}

impl AccessoryRow {
    pub fn new(accessory: &Accessory) -> Self {
        Self {
            id: accessory.id,
            name: accessory.name.to_string(),
            image: image_reference(&accessory.image),
            status: accessory.status.as_str(),
            status_class: status_class(accessory.status),
            out_of_date: accessory.out_of_date(),
            port: match (accessory.spec.port, accessory.host_port) {
                (Some(port), Some(host)) => format!("{port} → 127.0.0.1:{host}"),
                (Some(port), None) => port.to_string(),
                (None, _) => String::new(),
            },
            env_keys: accessory
                .spec
                .env
                .keys()
                .chain(&accessory.secret_env_keys)
                .cloned()
                .collect(),
            form_id: edit_form_id(accessory.id),
            values: AccessoryFormValues::of(accessory),
        }
    }
}

impl AccessoryRow {
    /// The edit form's starting values.
    pub fn values(&self) -> &AccessoryFormValues {
        &self.values
    }
}

/// The badge class of an accessory status, like an instance's.
pub fn status_class(status: AccessoryStatus) -> &'static str {
    match status {
        AccessoryStatus::Running => "ok",
        AccessoryStatus::Pending | AccessoryStatus::Starting | AccessoryStatus::Removing => "busy",
        AccessoryStatus::Stopped => "idle",
        AccessoryStatus::Failed => "bad",
        AccessoryStatus::Missing => "warn",
    }
}

/// The project's accessories as the page lists them.
pub async fn accessory_rows(state: &AppState, project_id: i64) -> WebResult<Vec<AccessoryRow>> {
    Ok(state
        .store
        .list_accessories(project_id)
        .await?
        .iter()
        .map(AccessoryRow::new)
        .collect())
}
