//! The stack file's shape and its conversion into [`Resource`]s. Values are parsed with the
//! same domain parsers the API uses, so a file is valid exactly when the same API calls would
//! be, and they are kept in the canonical form the API answers with, so the diff against an
//! installation compares like with like. Errors name the file, the line and the field.
//!
//! ```toml
//! [settings]
//! base_domain = "apps.example.com"
//!
//! [projects.shop]
//! image = "ghcr.io/acme/shop"
//! registry_username = "ci"
//! registry_password = "${SHOP_REGISTRY_PASSWORD}"   # secrets: environment references only
//!
//! [projects.shop.stages.prod]
//! tag_policy = "semver:^1"
//! hostname = "shop.example.com"
//! container = { port = 8080, env = { RUST_LOG = "info" } }
//!
//! [proxies."grafana.example.com"]
//! target_url = "http://127.0.0.1:3000"
//!
//! [notifications.ops]                                 # notification channels, by name
//! kind = "slack"
//! secrets = { url = "${OPS_SLACK_URL}" }
//! rule = { min_severity = "error", projects = ["shop"], kinds = ["deploy_failed"] }
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};

use super::channel::{self, RuleEntry};
use super::source::{Location, SourceMap};
use super::{CHANNELS_SECTION, Kind, Resource, SECRET_ENV_PREFIX, Stack, StackError};
use crate::domain::ParseError;
use crate::domain::duration::HumanDuration;
use crate::domain::hostname::Hostname;
use crate::domain::name::Name;
use crate::domain::project::{parse_project_image, parse_registry_username};
use crate::domain::proxy::{TargetUrl, parse_proxy_name};
use crate::domain::schedule::Schedule;
use crate::domain::settings::Settings;
use crate::domain::stage::{ContainerSpec, DeployStrategy, NewStage, check_secret_env, parse_max_instances};
use crate::domain::tag_policy::TagPolicy;
use crate::domain::workload::Hooks;

/// The largest stack file accepted (the API's body limit is 1 MiB, JSON-escaped).
pub const MAX_FILE_BYTES: usize = 512 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    settings: Option<toml::Table>,
    #[serde(default)]
    projects: Option<BTreeMap<String, ProjectEntry>>,
    #[serde(default)]
    proxies: Option<BTreeMap<String, ProxyEntry>>,
    #[serde(default)]
    notifications: Option<BTreeMap<String, ChannelEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectEntry {
    image: String,
    #[serde(default)]
    registry_username: Option<String>,
    #[serde(default)]
    registry_password: Option<String>,
    #[serde(default)]
    insecure_registry: bool,
    #[serde(default)]
    stages: BTreeMap<String, StageEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageEntry {
    tag_policy: String,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default = "yes")]
    auto_deploy: bool,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    max_instances: Option<i64>,
    #[serde(default)]
    min_release_age: Option<String>,
    /// A [`ContainerSpec`] plus `secret_env` (`${VARIABLE}` references only), read apart.
    #[serde(default)]
    container: Option<toml::Table>,
    #[serde(default)]
    hooks: Option<toml::Table>,
    /// `start_first` (the default) or `stop_first`.
    #[serde(default)]
    strategy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyEntry {
    /// Default: the hostname.
    #[serde(default)]
    name: Option<String>,
    target_url: String,
    #[serde(default)]
    preserve_host: bool,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelEntry {
    kind: String,
    #[serde(default = "yes")]
    enabled: bool,
    /// The kind's settings, as the API takes them.
    #[serde(default)]
    settings: Option<toml::Table>,
    /// The kind's secrets, `${VARIABLE}` references only.
    #[serde(default)]
    secrets: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    rule: Option<RuleEntry>,
}

fn yes() -> bool {
    true
}

/// Builds errors and locations for one file.
struct Reader<'a> {
    file: &'a str,
    map: SourceMap<'a>,
    locations: BTreeMap<String, Location>,
}

impl Reader<'_> {
    fn error_at(&self, path: &[&str], message: impl Into<String>) -> StackError {
        let mut location = self.map.locate(path);
        // Name the field that is wrong even when the file does not write it (a missing value).
        location.path = path.join(".");
        StackError {
            file: self.file.to_owned(),
            location,
            message: message.into(),
        }
    }

    fn field<T>(&self, path: &[&str], result: Result<T, ParseError>) -> Result<T, StackError> {
        result.map_err(|e| self.error_at(path, e.0))
    }

    /// Remembers where the table at `path` and each of `fields` below it are written.
    fn remember(&mut self, path: &[&str], fields: &[&str]) {
        let table = path.join(".");
        let at = self.map.locate(path);
        self.locations.insert(table.clone(), at);
        for field in fields {
            let full: Vec<&str> = path.iter().copied().chain(std::iter::once(*field)).collect();
            let at = self.map.locate(&full);
            if at.path == full.join(".") {
                self.locations.insert(format!("{table}.{field}"), at);
            }
        }
    }
}

/// Parses a stack file. `variables` are the environment values of the `${VARIABLE}`
/// references the file makes (the `apply` command sends exactly those).
pub fn parse(file: &str, text: &str, variables: &HashMap<String, String>) -> Result<Stack, StackError> {
    let mut reader = Reader {
        file,
        map: SourceMap::new(text),
        locations: BTreeMap::new(),
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(reader.error_at(&[], format!("the file is larger than {MAX_FILE_BYTES} bytes")));
    }
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let location = reader.map.locate_span(e.span().unwrap_or(0..0));
        StackError {
            file: file.to_owned(),
            location,
            message: e.message().trim().to_owned(),
        }
    })?;

    let mut resources = Vec::new();
    let mut sections = Vec::new();
    if let Some(settings) = &doc.settings {
        sections.push(Kind::Settings);
        resources.push(settings_resource(&mut reader, settings)?);
    }
    if let Some(projects) = &doc.projects {
        sections.push(Kind::Project);
        let mut stages = Vec::new();
        for (name, entry) in projects {
            resources.push(project_resource(&mut reader, name, entry, variables)?);
            for (stage, stage_entry) in &entry.stages {
                stages.push(stage_resource(&mut reader, name, stage, stage_entry, variables)?);
            }
        }
        resources.extend(stages);
    }
    if let Some(proxies) = &doc.proxies {
        sections.push(Kind::Proxy);
        for (hostname, entry) in proxies {
            resources.push(proxy_resource(&mut reader, hostname, entry)?);
        }
    }
    if let Some(channels) = &doc.notifications {
        sections.push(Kind::Channel);
        reader.remember(&[CHANNELS_SECTION], &[]);
        for (name, entry) in channels {
            resources.push(channel_resource(&mut reader, name, entry, variables)?);
        }
    }
    check_unique_hostnames(&reader, &resources)?;
    Ok(Stack {
        file_name: file.to_owned(),
        resources,
        sections,
        locations: reader.locations,
    })
}

fn settings_resource(reader: &mut Reader<'_>, table: &toml::Table) -> Result<Resource, StackError> {
    reader.remember(&["settings"], &Settings::KEYS);
    let mut resource = Resource::new(Kind::Settings, Vec::new());
    let mut settings = Settings::default();
    for (key, value) in table {
        let path = ["settings", key.as_str()];
        let json = serde_json::to_value(value).map_err(|e| reader.error_at(&path, e.to_string()))?;
        settings
            .set(key, &json)
            .map_err(|e| reader.error_at(&path, e.message))?;
        let canonical = settings.get(key).unwrap_or(Value::Null);
        resource.fields.insert(key.clone(), canonical);
    }
    Ok(resource)
}

fn project_resource(
    reader: &mut Reader<'_>,
    name: &str,
    entry: &ProjectEntry,
    variables: &HashMap<String, String>,
) -> Result<Resource, StackError> {
    let base = ["projects", name];
    reader.remember(
        &base,
        &[
            "image",
            "registry_username",
            "registry_password",
            "insecure_registry",
        ],
    );
    let at = |field: &'static str| [base[0], base[1], field];
    reader.field(&base, Name::parse(name))?;
    let image = reader.field(&at("image"), parse_project_image(&entry.image))?;
    let username = entry
        .registry_username
        .as_deref()
        .map(parse_registry_username)
        .transpose();
    let username = reader.field(&at("registry_username"), username)?;
    let password = entry
        .registry_password
        .as_deref()
        .map(|raw| secret_from_environment(raw, variables))
        .transpose();
    let password = reader.field(&at("registry_password"), password)?;

    let mut resource = Resource::new(Kind::Project, vec![name.to_owned()]);
    resource.fields.insert("image".into(), json!(image.name()));
    resource
        .fields
        .insert("registry_username".into(), json!(username));
    resource
        .fields
        .insert("insecure_registry".into(), json!(entry.insecure_registry));
    resource.secrets.insert("registry_password".into(), password);
    Ok(resource)
}

fn stage_resource(
    reader: &mut Reader<'_>,
    project: &str,
    name: &str,
    entry: &StageEntry,
    variables: &HashMap<String, String>,
) -> Result<Resource, StackError> {
    let base = ["projects", project, "stages", name];
    reader.remember(&base, Kind::Stage.fields());
    let at = |field: &'static str| [base[0], base[1], base[2], base[3], field];
    reader.field(&base, Name::parse(name))?;
    let tag_policy = reader.field(&at("tag_policy"), TagPolicy::parse(&entry.tag_policy))?;
    let schedule = entry.schedule.as_deref().map(Schedule::parse).transpose();
    let schedule = reader.field(&at("schedule"), schedule)?;
    let hostname = entry.hostname.as_deref().map(Hostname::parse).transpose();
    let hostname = reader.field(&at("hostname"), hostname)?;
    let max_instances = entry
        .max_instances
        .map_or(Ok(NewStage::DEFAULT_MAX_INSTANCES), parse_max_instances);
    let max_instances = reader.field(&at("max_instances"), max_instances)?;
    let min_release_age = entry
        .min_release_age
        .as_deref()
        .map(HumanDuration::parse)
        .transpose();
    let min_release_age = reader.field(&at("min_release_age"), min_release_age)?;
    let strategy = entry.strategy.as_deref().map(DeployStrategy::parse).transpose();
    let strategy = reader.field(&at("strategy"), strategy)?.unwrap_or_default();
    let mut table = entry.container.clone().unwrap_or_default();
    let secret_env = table.remove("secret_env");
    let spec: ContainerSpec = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| reader.error_at(&at("container"), e.message().trim().to_owned()))?;
    spec.validate().map_err(|(field, e)| {
        let mut path: Vec<&str> = base.to_vec();
        path.extend(field.split('.'));
        reader.error_at(&path, e.0)
    })?;
    let mut secrets = BTreeMap::new();
    if let Some(secret_env) = secret_env {
        let secret_at = [base[0], base[1], base[2], base[3], "container", "secret_env"];
        let toml::Value::Table(secret_env) = secret_env else {
            return Err(reader.error_at(&secret_at, "must be a table of KEY = \"${VARIABLE}\"".to_owned()));
        };
        for (key, raw) in secret_env {
            let path = [
                base[0],
                base[1],
                base[2],
                base[3],
                "container",
                "secret_env",
                key.as_str(),
            ];
            let value = match raw.as_str() {
                Some(raw) => secret_from_environment(raw, variables),
                None => Err(ParseError::new("must be \"${VARIABLE}\"")),
            };
            let value = reader.field(&path, value)?;
            secrets.insert(key, Some(value));
        }
        let named = secrets.iter().map(|(k, v)| (k, v.as_ref()));
        check_secret_env(named, &spec.env).map_err(|(field, e)| {
            let mut path: Vec<&str> = base.to_vec();
            path.extend(field.split('.'));
            reader.error_at(&path, e.0)
        })?;
    }
    let container =
        serde_json::to_value(&spec).map_err(|e| reader.error_at(&at("container"), e.to_string()))?;

    let mut resource = Resource::new(Kind::Stage, vec![project.to_owned(), name.to_owned()]);
    let fields = &mut resource.fields;
    fields.insert("tag_policy".into(), json!(tag_policy.to_string()));
    fields.insert("schedule".into(), json!(schedule.map(|s| s.to_string())));
    fields.insert("auto_deploy".into(), json!(entry.auto_deploy));
    fields.insert("hostname".into(), json!(hostname.map(|h| h.to_string())));
    fields.insert("max_instances".into(), json!(max_instances));
    fields.insert(
        "min_release_age".into(),
        json!(min_release_age.map(|d| d.to_string())),
    );
    fields.insert("container".into(), container);
    fields.insert("strategy".into(), json!(strategy.as_str()));
    let hooks: Hooks = toml::Value::Table(entry.hooks.clone().unwrap_or_default())
        .try_into()
        .map_err(|e: toml::de::Error| reader.error_at(&at("hooks"), e.message().trim().to_owned()))?;
    hooks.validate().map_err(|(field, e)| {
        let mut path: Vec<&str> = base.to_vec();
        path.extend(field.split('.'));
        reader.error_at(&path, e.0)
    })?;
    let hooks = serde_json::to_value(&hooks).map_err(|e| reader.error_at(&at("hooks"), e.to_string()))?;
    resource.fields.insert("hooks".into(), hooks);
    for (key, value) in secrets {
        resource
            .secrets
            .insert(format!("{SECRET_ENV_PREFIX}{key}"), value);
    }
    Ok(resource)
}

fn proxy_resource(
    reader: &mut Reader<'_>,
    hostname: &str,
    entry: &ProxyEntry,
) -> Result<Resource, StackError> {
    let base = ["proxies", hostname];
    reader.remember(&base, Kind::Proxy.fields());
    let at = |field: &'static str| [base[0], base[1], field];
    let parsed = reader.field(&base, Hostname::parse(hostname))?;
    if parsed.as_str() != hostname {
        return Err(reader.error_at(
            &base,
            format!("write the hostname as \"{parsed}\" (lowercase, without a trailing dot)"),
        ));
    }
    let name = parse_proxy_name(entry.name.as_deref().unwrap_or(hostname));
    let name = reader.field(&at("name"), name)?;
    let target = reader.field(&at("target_url"), TargetUrl::parse(&entry.target_url))?;

    let mut resource = Resource::new(Kind::Proxy, vec![hostname.to_owned()]);
    resource.fields.insert("name".into(), json!(name));
    resource
        .fields
        .insert("target_url".into(), json!(target.to_string()));
    resource
        .fields
        .insert("preserve_host".into(), json!(entry.preserve_host));
    resource.fields.insert("enabled".into(), json!(entry.enabled));
    Ok(resource)
}

fn channel_resource(
    reader: &mut Reader<'_>,
    name: &str,
    entry: &ChannelEntry,
    variables: &HashMap<String, String>,
) -> Result<Resource, StackError> {
    let base = [CHANNELS_SECTION, name];
    reader.remember(&base, &["kind", "enabled", "settings", "secrets", "rule"]);
    let name = reader.field(&base, channel::channel_name(name))?;
    let settings = match &entry.settings {
        Some(table) => serde_json::to_value(table)
            .map_err(|e| reader.error_at(&[base[0], base[1], "settings"], e.to_string()))?,
        None => Value::Null,
    };
    let mut secrets = BTreeMap::new();
    for (key, raw) in entry.secrets.iter().flatten() {
        let path = [base[0], base[1], "secrets", key.as_str()];
        let value = match raw.as_str() {
            Some(raw) => secret_from_environment(raw, variables),
            None => Err(ParseError::new("must be \"${VARIABLE}\"")),
        };
        secrets.insert(key.clone(), Some(reader.field(&path, value)?));
    }
    let rule = entry.rule.clone().unwrap_or_default();
    channel::file_resource(&name, &entry.kind, entry.enabled, &settings, &secrets, &rule).map_err(|e| {
        let mut path: Vec<&str> = base.to_vec();
        path.extend(e.field.split('.'));
        reader.error_at(&path, e.message)
    })
}

/// A secret field: only a `${VARIABLE}` reference, resolved from `variables`, so the file can
/// be committed and the value never comes back out of the installation.
fn secret_from_environment(raw: &str, variables: &HashMap<String, String>) -> Result<String, ParseError> {
    let Some(variable) = reference_name(raw) else {
        return Err(ParseError::new(
            "a secret comes from the environment: write \"${VARIABLE}\" and set VARIABLE where apply runs",
        ));
    };
    match variables.get(variable) {
        Some(value) if !value.is_empty() => Ok(value.clone()),
        _ => Err(ParseError::new(format!(
            "the environment variable {variable} is not set (or empty) where apply runs"
        ))),
    }
}

/// `NAME` of a whole-string `${NAME}` reference.
pub fn reference_name(raw: &str) -> Option<&str> {
    let name = raw.trim().strip_prefix("${")?.strip_suffix('}')?;
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Two resources of the file routing one hostname would fail halfway through an apply; say so
/// before anything changes.
fn check_unique_hostnames(reader: &Reader<'_>, resources: &[Resource]) -> Result<(), StackError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for resource in resources {
        let (hostname, path) = match resource.kind {
            Kind::Stage => match resource.fields.get("hostname").and_then(Value::as_str) {
                Some(h) => (h.to_owned(), Some("hostname")),
                None => continue,
            },
            Kind::Proxy => (resource.key[0].clone(), None),
            Kind::Settings | Kind::Project | Kind::Channel => continue,
        };
        let table = resource.kind.path(&resource.key);
        if let Some(first) = seen.insert(hostname.clone(), table.join(".")) {
            let mut full: Vec<&str> = table.iter().map(String::as_str).collect();
            full.extend(path);
            return Err(reader.error_at(&full, format!("{hostname} is routed by {first} already")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const GOOD: &str = r#"
[settings]
base_domain = "Apps.Example.com"
stale_threshold_days = 14

[projects.shop]
image = "nginx"
registry_username = "ci"
registry_password = "${SHOP_PW}"

[projects.shop.stages.prod]
tag_policy = "semver:^1"
hostname = "Shop.Example.com"
min_release_age = "10m"
container = { port = 80, env = { RUST_LOG = "info" } }

[projects.shop.stages.dev]
tag_policy = "tag:latest"
auto_deploy = false

[proxies."grafana.example.com"]
target_url = "http://127.0.0.1:3000"
"#;

    #[test]
    fn a_file_becomes_canonical_resources_in_apply_order() {
        let stack = parse("stack.toml", GOOD, &vars(&[("SHOP_PW", "pw")])).unwrap();
        let kinds: Vec<(Kind, String)> = stack
            .resources
            .iter()
            .map(|r| (r.kind, r.display_key()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Settings, "settings".into()),
                (Kind::Project, "shop".into()),
                (Kind::Stage, "shop/dev".into()),
                (Kind::Stage, "shop/prod".into()),
                (Kind::Proxy, "grafana.example.com".into()),
            ]
        );
        let settings = &stack.resources[0];
        assert_eq!(settings.fields["base_domain"], "apps.example.com");
        assert_eq!(settings.fields.len(), 2, "only what the file sets");
        let project = &stack.resources[1];
        assert_eq!(project.fields["image"], "docker.io/library/nginx");
        assert_eq!(project.secrets["registry_password"].as_deref(), Some("pw"));
        let prod = &stack.resources[3];
        assert_eq!(prod.fields["hostname"], "shop.example.com");
        assert_eq!(prod.fields["max_instances"], 10);
        assert_eq!(prod.fields["auto_deploy"], true);
        assert_eq!(prod.fields["container"]["port"], 80);
        assert_eq!(prod.fields["container"]["min_ready_seconds"], 2);
        let proxy = &stack.resources[4];
        assert_eq!(proxy.fields["name"], "grafana.example.com");
        assert_eq!(proxy.fields["target_url"], "http://127.0.0.1:3000/");
        assert_eq!(stack.sections, vec![Kind::Settings, Kind::Project, Kind::Proxy]);
        assert_eq!(
            stack
                .location(Kind::Stage, &["shop".into(), "prod".into()], Some("hostname"))
                .map(|l| l.line),
            Some(13)
        );
    }

    #[test]
    fn a_stage_s_strategy_defaults_to_start_first_and_only_the_two_names_read() {
        let stack = parse("stack.toml", GOOD, &vars(&[("SHOP_PW", "pw")])).unwrap();
        assert_eq!(stack.resources[3].fields["strategy"], "start_first");
        let stop_first = GOOD.replace(
            "auto_deploy = false",
            "auto_deploy = false\nstrategy = \"stop_first\"",
        );
        let stack = parse("stack.toml", &stop_first, &vars(&[("SHOP_PW", "pw")])).unwrap();
        assert_eq!(stack.resources[2].fields["strategy"], "stop_first");
        let err = error(&GOOD.replace(
            "auto_deploy = false",
            "auto_deploy = false\nstrategy = \"rolling\"",
        ));
        assert_eq!(err.location.path, "projects.shop.stages.dev.strategy");
    }

    fn error(text: &str) -> StackError {
        parse("stack.toml", text, &vars(&[("SHOP_PW", "pw")])).unwrap_err()
    }

    #[test]
    fn bad_values_name_the_file_the_line_and_the_field() {
        let bad = GOOD.replace("semver:^1", "sometimes");
        let err = error(&bad);
        assert_eq!(err.location.path, "projects.shop.stages.prod.tag_policy");
        assert_eq!(err.location.line, 12);
        assert!(err.to_string().starts_with("stack.toml:12:14: "), "{err}");

        let err = error(&GOOD.replace("port = 80", "port = 0"));
        assert_eq!(err.location.path, "projects.shop.stages.prod.container.port");
        assert_eq!(err.location.line, 15);

        let err = error(&GOOD.replace("stale_threshold_days = 14", "stale_threshold_days = 0"));
        assert_eq!(err.location.path, "settings.stale_threshold_days");
        assert_eq!(err.location.line, 4);
    }

    #[test]
    fn type_errors_and_unknown_fields_are_located_too() {
        let err = error(&GOOD.replace("auto_deploy = false", "auto_deploy = \"no\""));
        assert_eq!(err.location.path, "projects.shop.stages.dev.auto_deploy");
        assert_eq!(err.location.line, 19);
        let err = error(&GOOD.replace("auto_deploy = false", "autodeploy = false"));
        assert_eq!(err.location.line, 19);
        assert!(err.message.contains("autodeploy"), "{err}");
        let err = error("[projects.x\n");
        assert_eq!(err.location.line, 1);
    }

    #[test]
    fn secrets_come_from_the_environment_only() {
        let err = error(&GOOD.replace("${SHOP_PW}", "hunter2"));
        assert_eq!(err.location.path, "projects.shop.registry_password");
        assert!(err.message.contains("${VARIABLE}"), "{err}");
        let err = parse("stack.toml", GOOD, &vars(&[])).unwrap_err();
        assert!(err.message.contains("SHOP_PW is not set"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(reference_name("${A_1}"), Some("A_1"));
        assert_eq!(reference_name("${1A}"), None);
        assert_eq!(reference_name("x${A}"), None);
    }

    #[test]
    fn one_hostname_routed_twice_in_a_file_is_refused_before_anything_changes() {
        let text = GOOD.replace(
            "tag_policy = \"tag:latest\"",
            "tag_policy = \"tag:latest\"\nhostname = \"shop.example.com\"",
        );
        let err = error(&text);
        assert_eq!(err.location.path, "projects.shop.stages.prod.hostname");
        assert!(err.message.contains("projects.shop.stages.dev"), "{err}");
    }

    const CHANNELS: &str = r#"
[projects.shop]
image = "nginx"

[notifications.ops]
kind = "webhook"
secrets = { url = "${OPS_URL}", signing_secret = "${OPS_SIGNING}" }
rule = { min_severity = "error", projects = ["shop"], kinds = ["deploy_failed"] }

[notifications."mail ops"]
kind = "email"
enabled = false

[notifications."mail ops".settings]
smtp_host = "mail.example.com"
tls = "starttls"
from = "dw@example.com"
to = ["ops@example.com"]
"#;

    #[test]
    fn notification_channels_are_resources_after_the_projects_with_secrets_from_the_environment() {
        let variables = vars(&[("OPS_URL", "https://hooks.example.com/x"), ("OPS_SIGNING", "k")]);
        let stack = parse("stack.toml", CHANNELS, &variables).unwrap();
        let kinds: Vec<(Kind, String)> = stack
            .resources
            .iter()
            .map(|r| (r.kind, r.display_key()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Project, "shop".into()),
                (Kind::Channel, "mail ops".into()),
                (Kind::Channel, "ops".into()),
            ]
        );
        assert!(stack.governs(Kind::Channel));
        let mail = &stack.resources[1];
        assert_eq!(mail.fields["enabled"], false);
        assert_eq!(mail.fields["settings"]["smtp_port"], Value::Null);
        assert_eq!(mail.fields["rule"]["min_severity"], "warn", "the default rule");
        let ops = &stack.resources[2];
        assert_eq!(ops.secrets["secrets.signing_secret"].as_deref(), Some("k"));
        assert_eq!(ops.fields["rule"]["projects"], json!(["shop"]));
    }

    #[test]
    fn a_bad_channel_names_the_line_and_the_field_below_it() {
        let variables = vars(&[("OPS_URL", "https://hooks.example.com/x"), ("OPS_SIGNING", "k")]);
        let error = |text: String| parse("stack.toml", &text, &variables).unwrap_err();
        let err = error(CHANNELS.replace("\"starttls\"", "\"ssl\""));
        assert_eq!(err.location.path, "notifications.mail ops.settings.tls");
        assert_eq!(err.location.line, 16);
        let err = error(CHANNELS.replace("\"deploy_failed\"", "\"deploy_exploded\""));
        assert_eq!(err.location.path, "notifications.ops.rule.kinds");
        assert_eq!(err.location.line, 8);
        let err = error(CHANNELS.replace("\"${OPS_SIGNING}\"", "\"literal-secret\""));
        assert_eq!(err.location.path, "notifications.ops.secrets.signing_secret");
        assert!(!err.to_string().contains("literal-secret"), "{err}");
        let err = error(CHANNELS.replace("url = \"${OPS_URL}\", ", ""));
        assert_eq!(err.location.path, "notifications.ops.secrets.url");
        assert!(err.message.contains("needs it"), "{err}");
        let err = error(CHANNELS.replace("kind = \"webhook\"", "kind = \"pager\""));
        assert_eq!(err.location.path, "notifications.ops.kind");
        assert_eq!(err.location.line, 6);
        let err = error(CHANNELS.replace("enabled = false", "enabled = false\ncolour = \"red\""));
        assert!(err.message.contains("colour"), "{err}");
        assert_eq!(err.location.line, 13);
    }

    #[test]
    fn the_documentations_example_file_parses() {
        let page = include_str!("../../docs/configuration-as-code.md");
        let start = page.find("```toml\n[settings]").expect("the example") + "```toml\n".len();
        let text = &page[start..start + page[start..].find("```").unwrap()];
        let variables = vars(&[
            ("SHOP_REGISTRY_PASSWORD", "pw"),
            ("OPS_SLACK_SECRETS_URL", "https://hooks.example.com/x"),
            ("ON_CALL_SECRETS_PASSWORD", "pw"),
        ]);
        let stack = parse("stack.toml", text, &variables).unwrap();
        assert_eq!(stack.sections.len(), 4, "every section");
        assert!(stack.resources.iter().any(|r| r.kind == Kind::Channel));
    }
}
