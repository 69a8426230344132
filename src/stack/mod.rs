//! Configuration as code: the stack file (TOML) that describes an installation — settings,
//! projects with their stages, standalone proxies, notification channels — and the pure machinery around it: parsing
//! with line-and-field errors ([`parse`]), the diff between a file and an installation
//! ([`plan`]), and writing an installation back out as a file ([`render`]). No IO: the web
//! layer loads the current state, runs the plan through the API's own handlers, and answers
//! `POST /api/apply` and `GET /api/export`.
//!
//! Every kind of thing a file can hold is a [`Resource`]: a [`Kind`], a key (`["shop", "prod"]`),
//! canonical field values as the API writes them (`image` normalised, hostnames lowercase,
//! durations formatted), and secrets kept apart so they are compared but never printed. The
//! diff, the prune rules, the role each change needs and the export are generic over kinds, so
//! a new kind (accessories, engines) is a variant of [`Kind`] with its
//! field list, an entry type in [`parse`], and its create/update/delete calls in the web layer.
//!
//! # Layout
//! - [`source`]: lines, columns and field paths of a file's text.
//! - [`channel`]: a notification channel's canonical fields, from a file and from the store.
//! - [`parse`]: the file's shape and its conversion into resources.
//! - [`plan`]: the changes that make an installation match a file.
//! - [`render`]: an installation as a file (secrets as `${VARIABLE}` references).

pub mod channel;
pub mod parse;
pub mod plan;
pub mod render;
pub mod source;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use parse::parse;
pub use plan::{Action, Change, FieldChange, plan};
pub use render::render;
pub use source::Location;

/// The kinds of resource a stack file describes, in the order changes are applied (parents
/// before children); deletions run in the reverse order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Settings,
    Project,
    Stage,
    Proxy,
    /// A notification channel and its rule, after the projects its rule names.
    Channel,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Settings,
        Kind::Project,
        Kind::Stage,
        Kind::Proxy,
        Kind::Channel,
    ];

    /// The word users read in plans and errors.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Settings => "settings",
            Kind::Project => "project",
            Kind::Stage => "stage",
            Kind::Proxy => "proxy",
            Kind::Channel => "channel",
        }
    }

    /// The fields a file sets for this kind (besides its key), named as in the API.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Settings => &crate::domain::settings::Settings::KEYS,
            Kind::Project => &["image", "registry_username", "insecure_registry"],
            Kind::Stage => &[
                "tag_policy",
                "schedule",
                "auto_deploy",
                "hostname",
                "max_instances",
                "min_release_age",
                "container",
                "hooks",
                "strategy",
            ],
            Kind::Proxy => &["name", "target_url", "preserve_host", "enabled"],
            Kind::Channel => &["kind", "enabled", "settings", "rule"],
        }
    }

    /// The fixed write-only fields: given from the environment, compared by value, never
    /// shown. A stage's secret variables are write-only too, one secret per variable, named
    /// with [`SECRET_ENV_PREFIX`] (`container.secret_env.DATABASE_PASSWORD`), and so are a
    /// channel's, by its kind ([`channel::SECRETS_PREFIX`]: `secrets.url`).
    pub fn secret_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Project => &["registry_password"],
            Kind::Settings | Kind::Stage | Kind::Proxy | Kind::Channel => &[],
        }
    }

    /// Whether fields a file leaves out are left alone (settings) rather than set to their
    /// defaults (a project, a stage, a proxy is described whole).
    pub fn is_partial(self) -> bool {
        matches!(self, Kind::Settings)
    }

    /// Whether `action` on this kind needs an admin (as the API's own routes do): settings,
    /// standalone proxies and notification channels always, and deleting a project.
    pub fn needs_admin(self, action: Action) -> bool {
        match self {
            Kind::Settings | Kind::Proxy | Kind::Channel => true,
            Kind::Project => action == Action::Delete,
            Kind::Stage => false,
        }
    }

    /// The dotted path of a resource's table in the file.
    pub fn path(self, key: &[String]) -> Vec<String> {
        match (self, key) {
            (Kind::Settings, _) => vec!["settings".to_owned()],
            (Kind::Project, [project, ..]) => vec!["projects".to_owned(), project.clone()],
            (Kind::Stage, [project, stage, ..]) => vec![
                "projects".to_owned(),
                project.clone(),
                "stages".to_owned(),
                stage.clone(),
            ],
            (Kind::Proxy, [hostname, ..]) => vec!["proxies".to_owned(), hostname.clone()],
            (Kind::Channel, [name, ..]) => vec![CHANNELS_SECTION.to_owned(), name.clone()],
            (kind, key) => vec![kind.noun().to_owned(), key.join("/")],
        }
    }
}

/// The section of a stack file that holds the notification channels, keyed by name.
pub const CHANNELS_SECTION: &str = "notifications";

/// The secret name of a stage's secret variable `KEY`: `container.secret_env.KEY`.
pub const SECRET_ENV_PREFIX: &str = "container.secret_env.";

/// One thing of an installation or a file, in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: Kind,
    /// Unique within the kind: `["shop"]`, `["shop", "prod"]`, `["grafana.example.com"]`;
    /// empty for the settings.
    pub key: Vec<String>,
    /// Canonical values of [`Kind::fields`], as the API writes them; `null` for none.
    pub fields: Map<String, Value>,
    /// Plain values of [`Kind::secret_fields`] and of a stage's secret variables (`None`: not
    /// set). From a file they are the environment's values; from an installation, the opened
    /// sealed values. A secret a file leaves out is left as it is.
    pub secrets: BTreeMap<String, Option<String>>,
}

impl Resource {
    pub fn new(kind: Kind, key: Vec<String>) -> Self {
        Self {
            kind,
            key,
            fields: Map::new(),
            secrets: BTreeMap::new(),
        }
    }

    /// A resource from an API answer: the kind's fields are picked from it (missing ones are
    /// `null`).
    pub fn from_api(kind: Kind, key: Vec<String>, answer: &Value) -> Self {
        let mut resource = Self::new(kind, key);
        for field in kind.fields() {
            let value = answer.get(*field).cloned().unwrap_or(Value::Null);
            resource.fields.insert((*field).to_owned(), value);
        }
        resource
    }

    /// `shop/prod`, `grafana.example.com`, `settings`.
    pub fn display_key(&self) -> String {
        if self.key.is_empty() {
            self.kind.noun().to_owned()
        } else {
            self.key.join("/")
        }
    }
}

/// A parsed stack file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub file_name: String,
    /// Every resource the file names, in apply order.
    pub resources: Vec<Resource>,
    /// The sections the file has (`settings`, `projects`, `proxies`, `notifications`):
    /// `--prune` deletes only within these, so a file without `[proxies]` leaves the proxies
    /// alone.
    pub sections: Vec<Kind>,
    /// Where each resource and field is written: `path` → location.
    pub locations: BTreeMap<String, Location>,
}

impl Stack {
    /// Whether the file governs resources of `kind`: whether, with `--prune`, their absence
    /// from the file deletes them. Stages belong to the `projects` section: a project the file
    /// names has exactly the stages it lists, and one it does not name goes with its stages.
    pub fn governs(&self, kind: Kind) -> bool {
        match kind {
            Kind::Stage => self.sections.contains(&Kind::Project),
            Kind::Project | Kind::Proxy | Kind::Settings | Kind::Channel => self.sections.contains(&kind),
        }
    }

    /// Where a resource (or one of its fields, `field` being a dotted path below it) is
    /// written, falling back to the nearest enclosing field written (`rule` for
    /// `rule.projects`), then to the resource's table.
    pub fn location(&self, kind: Kind, key: &[String], field: Option<&str>) -> Option<&Location> {
        let table = kind.path(key).join(".");
        let mut field = field;
        while let Some(f) = field {
            if let Some(at) = self.locations.get(&format!("{table}.{f}")) {
                return Some(at);
            }
            field = f.rsplit_once('.').map(|(parent, _)| parent);
        }
        self.locations.get(&table)
    }
}

/// A stack file that cannot be applied: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {path}{sep}{message}", line = location.line, column = location.column, path = location.path, sep = if location.path.is_empty() { "" } else { ": " })]
pub struct StackError {
    pub file: String,
    pub location: Location,
    pub message: String,
}
