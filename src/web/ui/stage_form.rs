//! The stage form (new stage on the project page, edit on the stage page): its inputs, the
//! values it starts with, and how what was typed becomes the JSON the API reads. Inputs are
//! named like the API's fields (`container.volumes`), so an error of the API lands next to its
//! input. Sections follow what a stage is: what to deploy, routing, the container's runtime,
//! environment and secrets, volumes and networks, health.

use serde_json::{Map, Value, json};

use super::form::{FormData, json_number};
use crate::domain::stage::{ContainerSpec, DeployStrategy, Stage};
use crate::domain::workload::Hook;
use crate::web::error::{WebError, WebResult};

/// The inputs of the stage forms (new and edit), named like the API's fields so its errors land
/// next to them.
pub const STAGE_FIELDS: &[&str] = &[
    "name",
    "tag_policy",
    "schedule",
    "auto_deploy",
    "hostname",
    "max_instances",
    "min_release_age",
    "strategy",
    "container.port",
    "container.env",
    "container.secret_env",
    "container.command",
    "container.health_check.path",
    "container.health_check.expected_status",
    "container.min_ready_seconds",
    "container.memory_mb",
    "container.cpus",
    "container.volumes",
    "container.networks",
    "container.labels",
    "container.user",
    "container.restart_policy",
    "container.stop_signal",
    "container.stop_grace_seconds",
    "hooks.pre_deploy.command",
    "hooks.pre_deploy.timeout_seconds",
    "hooks.post_deploy.command",
    "hooks.post_deploy.timeout_seconds",
];

/// The choices of the form's `strategy` input, as `(value, label)`.
pub const STRATEGY_OPTIONS: &[(&str, &str)] = &[
    ("start_first", "Start the new instance first"),
    ("stop_first", "Stop the old instance first"),
];

/// What the stage form shows before anything is typed: a stage's values, or the defaults.
#[derive(Debug, Clone)]
pub struct StageFormValues {
    pub name: String,
    pub tag_policy: String,
    pub schedule: String,
    pub auto_deploy: bool,
    pub hostname: String,
    pub max_instances: String,
    pub min_release_age: String,
    /// `start_first` or `stop_first`.
    pub strategy: String,
    pub port: String,
    /// `KEY=value` lines.
    pub env: String,
    /// The names of the stage's secret variables (their values are never shown).
    pub secret_env_keys: Vec<String>,
    /// One argument per line.
    pub command: String,
    pub health_path: String,
    pub health_status: String,
    pub min_ready_seconds: String,
    pub memory_mb: String,
    pub cpus: String,
    /// `source:target` lines, `:ro` appended for read-only mounts.
    pub volumes: String,
    /// Comma-separated network names.
    pub networks: String,
    /// `KEY=value` lines.
    pub labels: String,
    pub user: String,
    pub restart_policy: String,
    pub stop_signal: String,
    pub stop_grace_seconds: String,
    /// Each hook's command, one argument per line, and its timeout.
    pub pre_deploy_command: String,
    pub pre_deploy_timeout: String,
    pub post_deploy_command: String,
    pub post_deploy_timeout: String,
}

impl StageFormValues {
    /// The choices of the `strategy` input.
    pub fn strategy_options(&self) -> &'static [(&'static str, &'static str)] {
        STRATEGY_OPTIONS
    }

    pub fn defaults() -> Self {
        let spec = ContainerSpec::default();
        Self {
            name: String::new(),
            tag_policy: String::new(),
            schedule: String::new(),
            auto_deploy: true,
            hostname: String::new(),
            max_instances: "10".into(),
            min_release_age: String::new(),
            strategy: DeployStrategy::default().as_str().into(),
            port: spec.port.to_string(),
            env: String::new(),
            secret_env_keys: Vec::new(),
            command: String::new(),
            health_path: String::new(),
            health_status: "200".into(),
            min_ready_seconds: spec.min_ready_seconds.to_string(),
            memory_mb: String::new(),
            cpus: String::new(),
            volumes: String::new(),
            networks: String::new(),
            labels: String::new(),
            user: String::new(),
            restart_policy: spec.restart_policy.to_string(),
            stop_signal: spec.stop_signal.to_string(),
            stop_grace_seconds: spec.stop_grace_seconds.to_string(),
            pre_deploy_command: String::new(),
            pre_deploy_timeout: "300".into(),
            post_deploy_command: String::new(),
            post_deploy_timeout: "300".into(),
        }
    }

    pub fn of(stage: &Stage) -> Self {
        let spec = &stage.container;
        let opt = |v: Option<String>| v.unwrap_or_default();
        Self {
            name: stage.name.to_string(),
            tag_policy: stage.tag_policy.to_string(),
            schedule: opt(stage.schedule.as_ref().map(ToString::to_string)),
            auto_deploy: stage.auto_deploy,
            hostname: opt(stage.hostname.as_ref().map(ToString::to_string)),
            max_instances: stage.max_instances.to_string(),
            min_release_age: opt(stage.min_release_age.as_ref().map(ToString::to_string)),
            strategy: stage.strategy.as_str().into(),
            port: spec.port.to_string(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            secret_env_keys: stage.secret_env_keys.clone(),
            command: spec.command.as_ref().map_or_else(String::new, |c| c.join("\n")),
            health_path: opt(spec.health_check.as_ref().map(|h| h.path.clone())),
            health_status: spec
                .health_check
                .as_ref()
                .map_or_else(|| "200".to_owned(), |h| h.expected_status.to_string()),
            min_ready_seconds: spec.min_ready_seconds.to_string(),
            memory_mb: opt(spec.memory_mb.map(|m| m.to_string())),
            cpus: opt(spec.cpus.map(|c| c.to_string())),
            volumes: spec
                .volumes
                .iter()
                .map(|v| {
                    let mode = if v.read_only { ":ro" } else { "" };
                    format!("{}:{}{mode}", v.source, v.target)
                })
                .collect::<Vec<_>>()
                .join("\n"),
            networks: spec.networks.join(", "),
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            user: opt(spec.user.clone()),
            restart_policy: spec.restart_policy.to_string(),
            stop_signal: spec.stop_signal.to_string(),
            stop_grace_seconds: spec.stop_grace_seconds.to_string(),
            pre_deploy_command: hook_command(stage.hooks.pre_deploy.as_ref()),
            pre_deploy_timeout: hook_timeout(stage.hooks.pre_deploy.as_ref()),
            post_deploy_command: hook_command(stage.hooks.post_deploy.as_ref()),
            post_deploy_timeout: hook_timeout(stage.hooks.post_deploy.as_ref()),
        }
    }
}

fn hook_command(hook: Option<&Hook>) -> String {
    hook.map_or_else(String::new, |h| h.command.join("\n"))
}

fn hook_timeout(hook: Option<&Hook>) -> String {
    hook.map_or_else(|| "300".to_owned(), |h| h.timeout_seconds.to_string())
}

/// One argument per non-blank line.
pub(super) fn lines(raw: &str) -> Vec<&str> {
    raw.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// The stage form as the JSON the API reads. A new stage leaves blank inputs out (their
/// defaults apply); an edit sends `null` for blank nullable ones (clearing them) and the whole
/// container spec, which a PATCH replaces.
pub fn stage_json(form: &FormData, patch: bool) -> WebResult<Value> {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(form.text("name")));
    body.insert("tag_policy".into(), Value::from(form.text("tag_policy")));
    body.insert("auto_deploy".into(), Value::from(form.checked("auto_deploy")));
    for key in ["schedule", "hostname", "min_release_age"] {
        match form.opt(key) {
            Some(value) => {
                body.insert(key.into(), Value::from(value));
            }
            None if patch => {
                body.insert(key.into(), Value::Null);
            }
            None => {}
        }
    }
    if let Some(max) = form.opt("max_instances") {
        body.insert("max_instances".into(), json_number(&max));
    }
    if let Some(strategy) = form.opt("strategy") {
        body.insert("strategy".into(), Value::from(strategy));
    }

    let mut container = Map::new();
    for (key, input) in [
        ("port", "container.port"),
        ("min_ready_seconds", "container.min_ready_seconds"),
        ("stop_grace_seconds", "container.stop_grace_seconds"),
    ] {
        if let Some(raw) = form.opt(input) {
            container.insert(key.into(), json_number(&raw));
        }
    }
    for (key, input) in [("memory_mb", "container.memory_mb"), ("cpus", "container.cpus")] {
        container.insert(key.into(), json_number(&form.text(input)));
    }
    container.insert(
        "env".into(),
        parse_env("container.env", form.get("container.env").unwrap_or(""))?,
    );
    let secrets = secret_env_json(form, "container.secret_env")?;
    if !secrets.is_empty() {
        container.insert("secret_env".into(), Value::Object(secrets));
    }
    let command = lines(form.get("container.command").unwrap_or(""));
    container.insert(
        "command".into(),
        if command.is_empty() {
            Value::Null
        } else {
            json!(command)
        },
    );
    container.insert(
        "health_check".into(),
        match form.opt("container.health_check.path") {
            Some(path) => {
                let mut check = Map::new();
                check.insert("path".into(), Value::from(path));
                if let Some(status) = form.opt("container.health_check.expected_status") {
                    check.insert("expected_status".into(), json_number(&status));
                }
                Value::Object(check)
            }
            None => Value::Null,
        },
    );
    container.insert(
        "volumes".into(),
        parse_volumes("container.volumes", form.get("container.volumes").unwrap_or(""))?,
    );
    container.insert(
        "networks".into(),
        json!(
            form.text("container.networks")
                .split([',', '\n'])
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        ),
    );
    container.insert(
        "labels".into(),
        parse_env("container.labels", form.get("container.labels").unwrap_or(""))?,
    );
    container.insert(
        "user".into(),
        form.opt("container.user").map_or(Value::Null, Value::from),
    );
    for (key, input) in [
        ("restart_policy", "container.restart_policy"),
        ("stop_signal", "container.stop_signal"),
    ] {
        if let Some(raw) = form.opt(input) {
            container.insert(key.into(), Value::from(raw));
        }
    }
    body.insert("container".into(), Value::Object(container));
    let mut hooks = Map::new();
    for name in ["pre_deploy", "post_deploy"] {
        let command = lines(form.get(&format!("hooks.{name}.command")).unwrap_or(""));
        let hook = if command.is_empty() {
            Value::Null
        } else {
            let mut hook = Map::new();
            hook.insert("command".into(), json!(command));
            if let Some(timeout) = form.opt(&format!("hooks.{name}.timeout_seconds")) {
                hook.insert("timeout_seconds".into(), json_number(&timeout));
            }
            Value::Object(hook)
        };
        hooks.insert(name.into(), hook);
    }
    body.insert("hooks".into(), Value::Object(hooks));
    Ok(Value::Object(body))
}

/// The secret-variable inputs named `field` (`KEY=value` lines that set or replace) and
/// `{field}.remove` (ticked keys to remove) as the API's `secret_env`; keys in neither are kept.
pub(super) fn secret_env_json(form: &FormData, field: &str) -> WebResult<Map<String, Value>> {
    let mut secrets = match parse_env(field, form.get(field).unwrap_or(""))? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for key in form.all(&format!("{field}.remove")) {
        secrets.entry(key.to_owned()).or_insert(Value::Null);
    }
    Ok(secrets)
}

/// `source:target` lines (`:ro` appended for a read-only mount) as the API's `volumes`; an
/// error names `field`.
pub(super) fn parse_volumes(field: &str, raw: &str) -> WebResult<Value> {
    let mut volumes = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (line, read_only) = match line.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (line.strip_suffix(":rw").unwrap_or(line), false),
        };
        let Some((source, target)) = line.split_once(':') else {
            return Err(WebError::validation(
                field,
                format!(
                    "line {}: write one mount per line as source:/target, :ro for read-only",
                    n + 1
                ),
            ));
        };
        volumes.push(json!({"source": source.trim(), "target": target.trim(), "read_only": read_only}));
    }
    Ok(Value::Array(volumes))
}

/// `KEY=value` lines as a JSON object; blank lines are skipped. An error names the line, never
/// its text (the lines may be secrets).
pub(super) fn parse_env(field: &str, raw: &str) -> WebResult<Value> {
    let mut env = Map::new();
    for (n, line) in raw.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(WebError::validation(
                field,
                format!("line {}: write one variable per line as KEY=value", n + 1),
            ));
        };
        env.insert(key.trim().to_owned(), Value::from(value));
    }
    Ok(Value::Object(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_form_becomes_the_apis_json() {
        let form = FormData::parse(
            b"name=web&tag_policy=tag%3Av1&auto_deploy=false&auto_deploy=true&schedule=&max_instances=\
              &container.port=8080&container.env=A%3D1%0D%0A%0D%0AB%3Dx%3Dy&container.command=\
              &container.health_check.path=%2Fhealth&container.health_check.expected_status=204\
              &container.min_ready_seconds=&container.memory_mb=&container.cpus=0.5",
        );
        let created = stage_json(&form, false).unwrap();
        assert_eq!(created["auto_deploy"], true);
        assert!(created.get("schedule").is_none() && created.get("max_instances").is_none());
        assert_eq!(created["container"]["port"], 8080);
        assert_eq!(created["container"]["env"], json!({"A": "1", "B": "x=y"}));
        assert_eq!(created["container"]["command"], Value::Null);
        assert_eq!(
            created["container"]["health_check"],
            json!({"path": "/health", "expected_status": 204})
        );
        assert_eq!(created["container"]["cpus"], 0.5);
        assert!(created["container"].get("min_ready_seconds").is_none());
        let patched = stage_json(&form, true).unwrap();
        assert_eq!(patched["schedule"], Value::Null);
    }

    #[test]
    fn the_strategy_reaches_the_api_only_when_chosen() {
        let chosen = stage_json(&FormData::parse(b"strategy=stop_first"), true).unwrap();
        assert_eq!(chosen["strategy"], "stop_first");
        let blank = stage_json(&FormData::parse(b"name=web"), false).unwrap();
        assert!(blank.get("strategy").is_none(), "the API's default applies");
    }

    #[test]
    fn an_env_line_without_equals_names_the_env_field() {
        let form = FormData::parse(b"container.env=A%3D1%0ANOPE");
        let err = stage_json(&form, false).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.env"));
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn volumes_networks_and_the_runtime_fields_reach_the_api() {
        let form = FormData::parse(
            b"container.volumes=data%3A%2Fdata%0D%0A%2Fsrv%2Fshop%3A%2Fsrv%3Aro&container.networks=backend%2C+shared\
              &container.labels=com.example.team%3Dshop&container.user=1000%3A1000\
              &container.restart_policy=on-failure%3A3&container.stop_signal=SIGQUIT&container.stop_grace_seconds=30",
        );
        let json = stage_json(&form, true).unwrap();
        let container = &json["container"];
        assert_eq!(
            container["volumes"],
            json!([
                {"source": "data", "target": "/data", "read_only": false},
                {"source": "/srv/shop", "target": "/srv", "read_only": true},
            ])
        );
        assert_eq!(container["networks"], json!(["backend", "shared"]));
        assert_eq!(container["labels"], json!({"com.example.team": "shop"}));
        assert_eq!(container["user"], "1000:1000");
        assert_eq!(container["restart_policy"], "on-failure:3");
        assert_eq!(container["stop_signal"], "SIGQUIT");
        assert_eq!(container["stop_grace_seconds"], 30);
        assert_eq!(json["hooks"], json!({"pre_deploy": null, "post_deploy": null}));
        let with_hook = FormData::parse(
            b"hooks.pre_deploy.command=%2Fapp%2Fmigrate%0D%0Aup&hooks.pre_deploy.timeout_seconds=60",
        );
        assert_eq!(
            stage_json(&with_hook, true).unwrap()["hooks"]["pre_deploy"],
            json!({"command": ["/app/migrate", "up"], "timeout_seconds": 60})
        );
        let err = stage_json(&FormData::parse(b"container.volumes=data"), true).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.volumes"));
    }
}
