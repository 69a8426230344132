//! The diff between a stack file and an installation: which resources to create, which fields
//! of which to update, and — with `prune` — what to delete, in the order that keeps parents
//! before children. Pure: the caller loads the installation as [`Resource`]s and carries the
//! changes out. Applying a file twice gives an empty plan the second time, because both sides
//! are in the API's canonical form.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Kind, Resource, Stack};
use crate::domain::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One field that changes; `from`/`to` are `null` for none, and withheld for secrets.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// Dotted below the resource: `tag_policy`, `container.env.RUST_LOG`.
    pub field: String,
    #[schema(value_type = Object)]
    pub from: Value,
    #[schema(value_type = Object)]
    pub to: Value,
    /// A write-only value: `from` and `to` say only `"(set)"` or `null`.
    pub secret: bool,
}

/// One change to one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub key: Vec<String>,
    pub action: Action,
    /// What changes (every set field, for a create; nothing, for a delete).
    pub fields: Vec<FieldChange>,
    /// The resource as the file wants it (create, update); the current one for a delete.
    pub resource: Resource,
}

impl Change {
    /// The top-level fields that change (a nested change counts as its top-level field).
    pub fn top_level_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = self
            .fields
            .iter()
            .map(|f| f.field.split('.').next().unwrap_or(&f.field))
            .collect();
        fields.dedup();
        fields
    }
}

/// The changes that make `current` match `desired`: creates and updates in kind order (file
/// order within a kind), then — with `prune` — deletions of what the file governs but does not
/// name, children first.
pub fn plan(desired: &Stack, current: &[Resource], prune: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for kind in Kind::ALL {
        for wanted in desired.resources.iter().filter(|r| r.kind == kind) {
            let existing = current.iter().find(|r| r.kind == kind && r.key == wanted.key);
            match existing {
                None => changes.push(Change {
                    kind,
                    key: wanted.key.clone(),
                    action: Action::Create,
                    fields: diff(&Resource::new(kind, wanted.key.clone()), wanted, false),
                    resource: wanted.clone(),
                }),
                Some(existing) => {
                    let target = if kind.is_partial() {
                        partial_target(existing, wanted, prune)
                    } else {
                        wanted.clone()
                    };
                    let fields = diff(existing, &target, true);
                    if !fields.is_empty() {
                        changes.push(Change {
                            kind,
                            key: wanted.key.clone(),
                            action: Action::Update,
                            fields,
                            resource: target,
                        });
                    }
                }
            }
        }
    }
    if prune {
        for kind in Kind::ALL.iter().rev() {
            for existing in current.iter().filter(|r| r.kind == *kind) {
                let named = desired
                    .resources
                    .iter()
                    .any(|r| r.kind == *kind && r.key == existing.key);
                if !named && !kind.is_partial() && desired.governs(*kind) {
                    changes.push(Change {
                        kind: *kind,
                        key: existing.key.clone(),
                        action: Action::Delete,
                        fields: Vec::new(),
                        resource: existing.clone(),
                    });
                }
            }
        }
    }
    changes
}

/// A partial resource (the settings) after the file: the fields it sets; with `prune`, the
/// defaults for those it leaves out.
fn partial_target(existing: &Resource, wanted: &Resource, prune: bool) -> Resource {
    let mut target = existing.clone();
    if prune {
        let defaults = Settings::default().to_json();
        for (key, value) in defaults {
            target.fields.insert(key, value);
        }
    }
    for (key, value) in &wanted.fields {
        target.fields.insert(key.clone(), value.clone());
    }
    target
}

/// The field changes from `before` to `after`. For an update, fields equal on both sides are
/// left out and nested objects are compared leaf by leaf; for a create every set field shows.
fn diff(before: &Resource, after: &Resource, update: bool) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for field in before.kind.fields() {
        let from = before.fields.get(*field).unwrap_or(&Value::Null);
        let Some(to) = after.fields.get(*field) else {
            continue;
        };
        if update {
            diff_values(field, from, to, &mut changes);
        } else if !to.is_null() {
            changes.push(FieldChange {
                field: (*field).to_owned(),
                from: Value::Null,
                to: to.clone(),
                secret: false,
            });
        }
    }
    let secrets: std::collections::BTreeSet<&String> =
        before.secrets.keys().chain(after.secrets.keys()).collect();
    for field in secrets {
        let from = before.secrets.get(field).cloned().flatten();
        let Some(to) = after.secrets.get(field).cloned() else {
            continue;
        };
        if from != to {
            let shown = |v: &Option<String>| v.as_ref().map_or(Value::Null, |_| Value::from("(set)"));
            changes.push(FieldChange {
                field: field.clone(),
                from: shown(&from),
                to: shown(&to),
                secret: true,
            });
        }
    }
    changes
}

fn diff_values(path: &str, from: &Value, to: &Value, out: &mut Vec<FieldChange>) {
    if from == to {
        return;
    }
    if let (Value::Object(a), Value::Object(b)) = (from, to) {
        let empty = Map::new();
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let (x, y) = (a.get(key), b.get(key));
            let null = Value::Null;
            let x = x.unwrap_or(&null);
            let y = y.unwrap_or(&null);
            let child = format!("{path}.{key}");
            match (x, y) {
                (Value::Object(_), _) | (_, Value::Object(_)) => {
                    let (x, y) = (
                        if x.is_null() {
                            &Value::Object(empty.clone())
                        } else {
                            x
                        },
                        if y.is_null() {
                            &Value::Object(empty.clone())
                        } else {
                            y
                        },
                    );
                    diff_values(&child, x, y, out);
                }
                _ => diff_values(&child, x, y, out),
            }
        }
        return;
    }
    out.push(FieldChange {
        field: path.to_owned(),
        from: from.clone(),
        to: to.clone(),
        secret: false,
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::stack::parse;

    fn stack(text: &str) -> Stack {
        let vars = HashMap::from([("PW".to_owned(), "secret".to_owned())]);
        parse("s.toml", text, &vars).unwrap()
    }

    const FILE: &str = r#"
[settings]
stale_threshold_days = 14
[projects.shop]
image = "nginx"
registry_password = "${PW}"
[projects.shop.stages.prod]
tag_policy = "tag:latest"
container = { env = { A = "1" } }
[proxies]
"#;

    #[test]
    fn an_empty_installation_gets_every_resource_created_parents_first() {
        let changes = plan(&stack(FILE), &[], false);
        let summary: Vec<(Kind, Action)> = changes.iter().map(|c| (c.kind, c.action)).collect();
        assert_eq!(summary[0], (Kind::Settings, Action::Create));
        assert_eq!(summary[1], (Kind::Project, Action::Create));
        assert_eq!(summary[2], (Kind::Stage, Action::Create));
        let project = &changes[1];
        let password = project.fields.iter().find(|f| f.secret).unwrap();
        assert_eq!(password.to, "(set)", "never the value");
    }

    #[test]
    fn the_same_state_plans_nothing_and_a_change_shows_leaf_by_leaf() {
        let desired = stack(FILE);
        let mut current = desired.resources.clone();
        // The installation holds every setting, not just the file's.
        current[0].fields = Settings::default().to_json();
        current[0].fields.insert("stale_threshold_days".into(), 14.into());
        assert!(plan(&desired, &current, false).is_empty());
        assert!(plan(&desired, &current, true).is_empty());

        let changed = stack(&FILE.replace("A = \"1\"", "A = \"2\", B = \"x\""));
        let changes = plan(&changed, &current, false);
        assert_eq!(changes.len(), 1);
        let fields: Vec<&str> = changes[0].fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, vec!["container.env.A", "container.env.B"]);
        assert_eq!(changes[0].top_level_fields(), vec!["container"]);
    }

    #[test]
    fn prune_deletes_only_what_the_file_governs_children_first() {
        let desired = stack(FILE);
        let mut current = desired.resources.clone();
        let mut other = Resource::new(Kind::Project, vec!["old".into()]);
        other
            .fields
            .insert("image".into(), "docker.io/library/old".into());
        let old_stage = Resource::new(Kind::Stage, vec!["old".into(), "web".into()]);
        let gone_stage = Resource::new(Kind::Stage, vec!["shop".into(), "gone".into()]);
        let proxy = Resource::new(Kind::Proxy, vec!["x.example.com".into()]);
        current.extend([other, old_stage, gone_stage, proxy]);
        current[0].fields = Settings::default().to_json();
        current[0].fields.insert("stale_threshold_days".into(), 14.into());
        current[0].fields.insert("event_retention_days".into(), 90.into());

        assert!(
            plan(&desired, &current, false).is_empty(),
            "nothing without prune"
        );
        let changes = plan(&desired, &current, true);
        let summary: Vec<(Action, String)> = changes
            .iter()
            .map(|c| (c.action, c.resource.display_key()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Action::Update, "settings".into()),
                (Action::Delete, "x.example.com".into()),
                (Action::Delete, "old/web".into()),
                (Action::Delete, "shop/gone".into()),
                (Action::Delete, "old".into()),
            ]
        );
        assert_eq!(changes[0].fields[0].field, "event_retention_days");
        assert_eq!(changes[0].fields[0].to, 30, "back to the default");

        // Without a [proxies] section, proxies are left alone.
        let no_proxies = stack(&FILE.replace("[proxies]\n", ""));
        assert!(
            plan(&no_proxies, &current, true)
                .iter()
                .all(|c| c.kind != Kind::Proxy)
        );
    }
}
