//! An installation written out as a stack file (`GET /api/export`, `docker-watcher export`):
//! every section, every resource with every field, in a stable order, so that exporting,
//! applying the file to an empty installation and exporting again gives the same text.
//! Secrets are written as `${VARIABLE}` references with a name derived from the resource
//! (`SHOP_REGISTRY_PASSWORD`, `OPS_SECRETS_URL`), never as values. Notification channels are
//! an admin's: a member's export leaves their section out and says so.

use serde_json::Value;

use std::collections::{BTreeMap, BTreeSet};

use super::{CHANNELS_SECTION, Kind, Resource, SECRET_ENV_PREFIX};

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

/// What an export leaves out, and says so in the file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Omitted {
    Nothing,
    /// The caller may not read notification channels (admins only): the file has no
    /// `[notifications]` section, so applying it leaves the channels alone, even with `--prune`.
    Channels,
}

/// `resources` (an installation's, all kinds) as a stack file.
pub fn render(resources: &[Resource], omitted: Omitted) -> String {
    let references = secret_references(resources);
    let mut doc = toml::Table::new();
    let mut projects = toml::Table::new();
    let mut proxies = toml::Table::new();
    let mut channels = toml::Table::new();
    for (index, resource) in resources.iter().enumerate() {
        let mut table = fields_table(resource);
        // Webhook, Slack and Discord channels have no settings: no empty table for them.
        if resource.kind == Kind::Channel
            && table
                .get("settings")
                .and_then(toml::Value::as_table)
                .is_some_and(toml::Table::is_empty)
        {
            table.remove("settings");
        }
        for (field, value) in &resource.secrets {
            if value.is_none() {
                continue;
            }
            let Some(reference) = references.get(&(index, field.as_str())) else {
                continue;
            };
            let reference = toml::Value::String(format!("${{{reference}}}"));
            // `container.secret_env.KEY`, `secrets.url`: tables below the resource's own.
            let mut path: Vec<&str> = match field.strip_prefix(SECRET_ENV_PREFIX) {
                Some(key) => vec!["container", "secret_env", key],
                None => field.split('.').collect(),
            };
            let last = path.pop().unwrap_or_default();
            let mut at = &mut table;
            for part in path {
                at = sub_table(at, part);
            }
            at.insert(last.to_owned(), reference);
        }
        match (resource.kind, resource.key.as_slice()) {
            (Kind::Settings, _) => {
                doc.insert("settings".into(), toml::Value::Table(table));
            }
            (Kind::Project, [project]) => {
                let entry = sub_table(&mut projects, project);
                entry.extend(table);
            }
            (Kind::Stage, [project, stage]) => {
                let stages = sub_table(sub_table(&mut projects, project), "stages");
                stages.insert(stage.clone(), toml::Value::Table(table));
            }
            (Kind::Proxy, [hostname]) => {
                proxies.insert(hostname.clone(), toml::Value::Table(table));
            }
            (Kind::Channel, [name]) => {
                channels.insert(name.clone(), toml::Value::Table(table));
            }
            _ => {}
        }
    }
    doc.insert("projects".into(), toml::Value::Table(projects));
    doc.insert("proxies".into(), toml::Value::Table(proxies));
    let mut header = HEADER.to_owned();
    match omitted {
        Omitted::Nothing => {
            doc.insert(CHANNELS_SECTION.into(), toml::Value::Table(channels));
        }
        Omitted::Channels => header.push_str(
            "# Notification channels are left out: exporting them needs the admin role. Without a\n\
             # [notifications] section, applying this file leaves them as they are.\n",
        ),
    }
    let body = toml::to_string(&doc).unwrap_or_default();
    format!("{header}\n{body}")
}

/// The environment variable each set secret is written as, by resource index and secret
/// name. Names are derived from the resource ([`secret_reference`]); two secrets whose names
/// would be the same (`a-b` and `a_b`) get `_2`, `_3`… in the order of kind and key, so an
/// export never asks for one variable where two values are meant, and the same installation
/// always gets the same names.
fn secret_references(resources: &[Resource]) -> BTreeMap<(usize, &str), String> {
    let mut order: Vec<usize> = (0..resources.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&resources[*a], &resources[*b]);
        (a.kind, &a.key).cmp(&(b.kind, &b.key))
    });
    let mut taken = BTreeSet::new();
    let mut references = BTreeMap::new();
    for index in order {
        let resource = &resources[index];
        for (field, value) in &resource.secrets {
            if value.is_none() {
                continue;
            }
            let base = secret_reference(resource, field);
            let mut name = base.clone();
            let mut n = 2;
            while !taken.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            references.insert((index, field.as_str()), name);
        }
    }
    references
}

/// The table at `key` in `table`, made (or made a table) if need be.
fn sub_table<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let entry = table
        .entry(key.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    match entry {
        toml::Value::Table(table) => table,
        _ => unreachable!("just made a table"),
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
        let text = render(&stack.resources, Omitted::Nothing);
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
        assert_eq!(render(&again.resources, Omitted::Nothing), text, "stable");
    }

    #[test]
    fn an_empty_installation_renders_every_section() {
        let text = render(&[], Omitted::Nothing);
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

    #[test]
    fn channels_render_with_their_secrets_as_distinct_references_and_parse_back() {
        let file = r#"
[notifications.ops-hook]
kind = "webhook"
secrets = { url = "${A}", signing_secret = "${B}" }
rule = { min_severity = "error", projects = ["shop"] }
[notifications.ops_hook]
kind = "slack"
secrets = { url = "${C}" }
"#;
        let vars = HashMap::from([
            ("A".to_owned(), "https://a.example.com/token-a".to_owned()),
            ("B".to_owned(), "signing-b".to_owned()),
            ("C".to_owned(), "https://c.example.com/token-c".to_owned()),
        ]);
        let stack = parse("s.toml", file, &vars).unwrap();
        let text = render(&stack.resources, Omitted::Nothing);
        assert!(text.contains("url = \"${OPS_HOOK_SECRETS_URL}\""), "{text}");
        assert!(text.contains("url = \"${OPS_HOOK_SECRETS_URL_2}\""), "{text}");
        assert!(
            text.contains("signing_secret = \"${OPS_HOOK_SECRETS_SIGNING_SECRET}\""),
            "{text}"
        );
        assert!(!text.contains("token-") && !text.contains("signing-b"), "{text}");
        let vars = HashMap::from([
            (
                "OPS_HOOK_SECRETS_URL".to_owned(),
                "https://a.example.com/token-a".to_owned(),
            ),
            (
                "OPS_HOOK_SECRETS_SIGNING_SECRET".to_owned(),
                "signing-b".to_owned(),
            ),
            (
                "OPS_HOOK_SECRETS_URL_2".to_owned(),
                "https://c.example.com/token-c".to_owned(),
            ),
        ]);
        let again = parse("export.toml", &text, &vars).unwrap();
        assert_eq!(again.resources, stack.resources);
        assert_eq!(render(&again.resources, Omitted::Nothing), text, "stable");
    }

    #[test]
    fn a_members_export_leaves_the_channels_out_and_says_so() {
        let text = render(&[], Omitted::Channels);
        assert!(text.contains("needs the admin role"), "{text}");
        let stack = parse("e.toml", &text, &HashMap::new()).unwrap();
        assert!(!stack.governs(Kind::Channel), "applying it leaves channels alone");
        let admin = parse("e.toml", &render(&[], Omitted::Nothing), &HashMap::new()).unwrap();
        assert!(admin.governs(Kind::Channel));
    }
}
