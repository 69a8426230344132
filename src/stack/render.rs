//! An installation written out as a stack file (`GET /api/export`, `docker-watcher export`):
//! every section, every resource with every field, in a stable order, so that exporting,
//! applying the file to an empty installation and exporting again gives the same text.
//! Secrets are written as `${VARIABLE}` references with a name derived from the resource
//! (`SHOP_REGISTRY_PASSWORD`), never as values.

use serde_json::Value;

use super::{Kind, Resource, SECRET_ENV_PREFIX};

const HEADER: &str = "\
# docker-watcher stack file, written by `docker-watcher export`.
# Apply it with `docker-watcher apply -f FILE` (add --prune to delete what it does not name).
# Secrets are references to environment variables: set them where apply runs.
";

/// The environment variable an export names for a secret field of a resource.
pub fn secret_reference(resource: &Resource, field: &str) -> String {
    let mut name: String = resource
        .key
        .iter()
        .chain(std::iter::once(&field.to_owned()))
        .map(|part| part.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// `resources` (an installation's, all kinds) as a stack file.
pub fn render(resources: &[Resource]) -> String {
    let mut doc = toml::Table::new();
    let mut projects = toml::Table::new();
    let mut proxies = toml::Table::new();
    for resource in resources {
        let mut table = fields_table(resource);
        for (field, value) in &resource.secrets {
            if value.is_none() {
                continue;
            }
            let reference = toml::Value::String(format!("${{{}}}", secret_reference(resource, field)));
            match field.strip_prefix(SECRET_ENV_PREFIX) {
                Some(key) => {
                    let container = table
                        .entry("container")
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(container) = container {
                        let secret_env = container
                            .entry("secret_env")
                            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                        if let toml::Value::Table(secret_env) = secret_env {
                            secret_env.insert(key.to_owned(), reference);
                        }
                    }
                }
                None => {
                    table.insert(field.clone(), reference);
                }
            }
        }
        match (resource.kind, resource.key.as_slice()) {
            (Kind::Settings, _) => {
                doc.insert("settings".into(), toml::Value::Table(table));
            }
            (Kind::Project, [project]) => {
                let entry = project_entry(&mut projects, project);
                entry.extend(table);
            }
            (Kind::Stage, [project, stage]) => {
                let entry = project_entry(&mut projects, project);
                let stages = entry
                    .entry("stages")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(stages) = stages {
                    stages.insert(stage.clone(), toml::Value::Table(table));
                }
            }
            (Kind::Proxy, [hostname]) => {
                proxies.insert(hostname.clone(), toml::Value::Table(table));
            }
            _ => {}
        }
    }
    doc.insert("projects".into(), toml::Value::Table(projects));
    doc.insert("proxies".into(), toml::Value::Table(proxies));
    let body = toml::to_string(&doc).unwrap_or_default();
    format!("{HEADER}\n{body}")
}

fn project_entry<'a>(projects: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    let entry = projects
        .entry(name.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(table) => table,
        other => {
            *other = toml::Value::Table(toml::Table::new());
            match other {
                toml::Value::Table(table) => table,
                _ => unreachable!("just replaced with a table"),
            }
        }
    }
}

/// The resource's fields without nulls (TOML has none: a field left out means none).
fn fields_table(resource: &Resource) -> toml::Table {
    let mut table = toml::Table::new();
    for (key, value) in &resource.fields {
        if let Some(value) = to_toml(value) {
            table.insert(key.clone(), value);
        }
    }
    table
}

fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| to_toml(v).map(|v| (k.clone(), v)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::stack::parse;

    const FILE: &str = r#"
[settings]
stale_threshold_days = 14
[projects.shop]
image = "nginx"
registry_password = "${PW}"
[projects.shop.stages.prod]
tag_policy = "tag:latest"
hostname = "shop.example.com"
container = { env = { A = "1" }, secret_env = { DB_PASSWORD = "${DBPW}" }, health_check = { path = "/h" } }
[proxies."a.example.com"]
target_url = "http://127.0.0.1:9/"
"#;

    #[test]
    fn a_rendered_file_parses_back_to_the_same_resources_with_secret_references() {
        let vars = HashMap::from([
            ("PW".to_owned(), "x".to_owned()),
            ("DBPW".to_owned(), "db-secret-value".to_owned()),
        ]);
        let stack = parse("s.toml", FILE, &vars).unwrap();
        let prod = stack.resources.iter().find(|r| r.kind == Kind::Stage).unwrap();
        assert_eq!(
            prod.secrets["container.secret_env.DB_PASSWORD"].as_deref(),
            Some("db-secret-value")
        );
        assert!(prod.fields["container"].get("secret_env").is_none());
        let text = render(&stack.resources);
        assert!(
            text.contains("registry_password = \"${SHOP_REGISTRY_PASSWORD}\""),
            "{text}"
        );
        assert!(
            text.contains("DB_PASSWORD = \"${SHOP_PROD_CONTAINER_SECRET_ENV_DB_PASSWORD}\""),
            "{text}"
        );
        assert!(
            !text.contains("\"x\"") && !text.contains("db-secret-value"),
            "{text}"
        );
        let vars = HashMap::from([
            ("SHOP_REGISTRY_PASSWORD".to_owned(), "x".to_owned()),
            (
                "SHOP_PROD_CONTAINER_SECRET_ENV_DB_PASSWORD".to_owned(),
                "db-secret-value".to_owned(),
            ),
        ]);
        let again = parse("export.toml", &text, &vars).unwrap();
        assert_eq!(again.resources, stack.resources);
        assert_eq!(render(&again.resources), text, "stable");
    }

    #[test]
    fn an_empty_installation_renders_every_section() {
        let text = render(&[]);
        assert!(
            text.contains("[projects]") && text.contains("[proxies]"),
            "{text}"
        );
        let stack = parse("e.toml", &text, &HashMap::new()).unwrap();
        assert!(stack.resources.is_empty());
        assert!(stack.governs(Kind::Project) && stack.governs(Kind::Proxy));
    }

    #[test]
    fn a_secret_variable_must_be_an_environment_reference() {
        let file = "[projects.shop]\nimage = \"nginx\"\n[projects.shop.stages.prod]\ntag_policy = \"tag:latest\"\ncontainer = { secret_env = { DB_PASSWORD = \"literal\" } }\n";
        let err = parse("s.toml", file, &HashMap::new()).unwrap_err();
        assert_eq!(
            err.location.path,
            "projects.shop.stages.prod.container.secret_env.DB_PASSWORD"
        );
        assert!(!err.message.contains("literal"), "{}", err.message);
    }

    #[test]
    fn secret_references_are_valid_variable_names() {
        let resource = Resource::new(Kind::Project, vec!["1-app".into()]);
        assert_eq!(
            secret_reference(&resource, "registry_password"),
            "_1_APP_REGISTRY_PASSWORD"
        );
    }
}
