//! The `container` object of a stage as the API reads and writes it (SPEC §3 "Workloads").
//!
//! It is the stored [`ContainerSpec`] plus what never is stored in it: secret variables.
//! `secret_env` is **write-only** — `{"KEY": "value"}` sets or replaces a variable, `{"KEY":
//! null}` removes it, keys not named are kept, even when the rest of the container object
//! replaces the stage's spec — and answers only ever carry `secret_env_keys`. Plain `env`
//! values are for members and admins; a viewer gets `env: null` and the names in `env_keys`.
//!
//! A secret value never appears in an answer, an error message or an event: the values are
//! read by a deserializer of our own whose errors do not quote them, and checks name the key.

use std::collections::BTreeMap;

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::domain::project::SealedSecret;
use crate::domain::stage::{ContainerSpec, HealthCheck, check_secret_env};
use crate::domain::workload::{VolumeMount, check_bind_mounts};
use crate::secrets::SecretBox;
use crate::web::error::{FieldResult, WebError, WebResult};
use crate::web::state::AppState;

/// The container spec of a create or update request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerRequest {
    /// The port the application listens on inside the container; default 8080.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535, example = 8080)]
    pub port: Option<u16>,
    /// Plain environment variables (readable by members and admins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Overrides the image's command when set; at least one argument (null for the image's).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Without a health check the container must stay up this long; default 2.
    #[serde(default)]
    #[schema(maximum = 3600)]
    pub min_ready_seconds: Option<u32>,
    /// A memory limit in MB, 6 (Docker's minimum) to 1048576.
    #[serde(default)]
    #[schema(minimum = 6, maximum = 1048576)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Mounts: a `source` without a leading `/` is the project's named volume
    /// `dw-{project}-{source}` (kept across deploys, rollbacks and stale cleanup); one starting
    /// with `/` is a bind mount of that host path, allowed only under the setting
    /// `allowed_bind_paths`. `target` is an absolute path in the container.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Existing engine networks to join, besides the project's own network `dw-{project}`
    /// (where the container answers to the stage's name).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Labels of the container (`io.docker-watcher.*` are docker-watcher's own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The user the process runs as: `name`, `uid`, `name:group` or `uid:gid`; null: the image's.
    #[serde(default)]
    pub user: Option<String>,
    /// `no`, `on-failure`, `on-failure:N`, `always` or `unless-stopped` (default).
    #[serde(default)]
    #[schema(example = "unless-stopped")]
    pub restart_policy: Option<String>,
    /// The signal a stop sends first; default `SIGTERM`.
    #[serde(default)]
    #[schema(example = "SIGTERM")]
    pub stop_signal: Option<String>,
    /// Seconds a stop waits after the signal before it kills; 0 to 3600, default 10.
    #[serde(default)]
    #[schema(maximum = 3600, example = 10)]
    pub stop_grace_seconds: Option<u32>,
    /// Write-only secret variables: a string sets or replaces one, `null` removes it (in an
    /// update); variables not named are kept. Sealed at rest; never returned.
    #[serde(default, deserialize_with = "secret_values")]
    #[schema(value_type = Object, additional_properties = true, example = json!({"DATABASE_PASSWORD": "s3cret", "OLD_TOKEN": null}))]
    pub secret_env: SecretEnvInput,
    /// Read-only (answers carry it); accepted and ignored so an answer can be sent back.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub secret_env_keys: Option<IgnoredAny>,
    /// Read-only (answers carry it); accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub env_keys: Option<IgnoredAny>,
}

/// Secret values as they arrive: `Some` to set, `None` to remove. Not `Debug`-printable.
#[derive(Default)]
pub struct SecretEnvInput(pub BTreeMap<String, Option<String>>);

impl std::fmt::Debug for SecretEnvInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Reads `{"KEY": "value" | null}` without ever quoting a value in an error.
pub(crate) fn secret_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretEnvInput, D::Error> {
    use serde::de::Error;
    let raw = serde_json::Value::deserialize(deserializer)
        .map_err(|_| D::Error::custom("must be an object of KEY: \"value\" or null"))?;
    let serde_json::Value::Object(map) = raw else {
        return Err(D::Error::custom("must be an object of KEY: \"value\" or null"));
    };
    let mut values = BTreeMap::new();
    for (key, value) in map {
        let value = match value {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            _ => {
                return Err(D::Error::custom(format!(
                    "the value of {key} must be a string, or null to remove it"
                )));
            }
        };
        values.insert(key, value);
    }
    Ok(SecretEnvInput(values))
}

impl ContainerRequest {
    /// The spec to store and the secret changes, checked (each error names its field). For a
    /// create, removals (`null`) are meaningless and dropped; `current` are the stage's
    /// secret keys now (empty for a create), to check plain and secret names do not collide.
    pub fn into_parts(self, current_secret_keys: &[String]) -> WebResult<(ContainerSpec, SecretEnvInput)> {
        let defaults = ContainerSpec::default();
        let spec = ContainerSpec {
            port: self.port.unwrap_or(defaults.port),
            env: self.env,
            command: self.command,
            health_check: self.health_check,
            min_ready_seconds: self.min_ready_seconds.unwrap_or(defaults.min_ready_seconds),
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            volumes: self.volumes,
            networks: self.networks,
            labels: self.labels,
            user: self.user,
            restart_policy: match self.restart_policy {
                Some(raw) => raw.parse().field("container.restart_policy")?,
                None => defaults.restart_policy,
            },
            stop_signal: match self.stop_signal {
                Some(raw) => raw.parse().field("container.stop_signal")?,
                None => defaults.stop_signal,
            },
            stop_grace_seconds: self.stop_grace_seconds.unwrap_or(defaults.stop_grace_seconds),
        };
        spec.validate()
            .map_err(|(field, err)| WebError::field(field, err))?;
        check_secret_input(
            &self.secret_env,
            &spec.env,
            current_secret_keys,
            "container.",
            "stage",
        )?;
        Ok((spec, self.secret_env))
    }
}

/// Checks a secret-variable request against the plain variables `env` and the secret keys the
/// owner has now (`current_secret_keys`): names are env names, a name is plain or secret, not
/// both, and at most [`MAX_SECRET_ENV`](crate::domain::stage::MAX_SECRET_ENV) secrets. Fields
/// are named under `prefix` (`container.` for a stage, nothing for an accessory); `owner` says
/// whose secret it is in messages.
pub fn check_secret_input(
    secret_env: &SecretEnvInput,
    env: &BTreeMap<String, String>,
    current_secret_keys: &[String],
    prefix: &str,
    owner: &str,
) -> WebResult<()> {
    check_secret_env(secret_env.0.iter().map(|(k, v)| (k, v.as_ref())), env).map_err(|(field, err)| {
        let field = field.strip_prefix("container.").unwrap_or(&field);
        WebError::field(format!("{prefix}{field}"), err)
    })?;
    // A plain variable may not take the name of a secret that stays.
    if let Some(key) = env
        .keys()
        .find(|key| current_secret_keys.contains(key) && !matches!(secret_env.0.get(*key), Some(None)))
    {
        return Err(WebError::validation(
            format!("{prefix}env.{key}"),
            format!(
                "'{key}' is a secret variable of this {owner}; remove the secret first (secret_env: {{\"{key}\": null}})"
            ),
        ));
    }
    if secret_env.0.values().flatten().count() + current_secret_keys.len()
        > crate::domain::stage::MAX_SECRET_ENV
    {
        return Err(WebError::validation(
            format!("{prefix}secret_env"),
            format!(
                "at most {} secret variables",
                crate::domain::stage::MAX_SECRET_ENV
            ),
        ));
    }
    Ok(())
}

/// Seals the values to set; keeps only what changes compared with `current` (sealed values
/// opened with `secrets`): setting a variable to the value it has, or removing one that is not
/// there, is no change of configuration.
pub fn sealed_changes(
    input: SecretEnvInput,
    current: &BTreeMap<String, SealedSecret>,
    secrets: &SecretBox,
) -> BTreeMap<String, Option<SealedSecret>> {
    input
        .0
        .into_iter()
        .filter_map(|(key, value)| match value {
            Some(value) => {
                let unchanged = current
                    .get(&key)
                    .and_then(|sealed| secrets.open(sealed).ok())
                    .is_some_and(|old| old == value);
                (!unchanged).then(|| (key, Some(secrets.seal(&value))))
            }
            None => current.contains_key(&key).then_some((key, None)),
        })
        .collect()
}

/// The container spec as answers carry it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContainerResponse {
    pub port: u16,
    /// Plain variables with their values; null for viewers, who see only `env_keys`.
    #[schema(required = true)]
    pub env: Option<BTreeMap<String, String>>,
    /// The names of the plain variables.
    pub env_keys: Vec<String>,
    /// The names of the secret variables; their values are never returned.
    pub secret_env_keys: Vec<String>,
    #[schema(required = true)]
    pub command: Option<Vec<String>>,
    #[schema(required = true)]
    pub health_check: Option<HealthCheck>,
    pub min_ready_seconds: u32,
    #[schema(required = true)]
    pub memory_mb: Option<u32>,
    #[schema(required = true)]
    pub cpus: Option<f64>,
    pub volumes: Vec<VolumeMount>,
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    #[schema(required = true)]
    pub user: Option<String>,
    #[schema(example = "unless-stopped")]
    pub restart_policy: String,
    #[schema(example = "SIGTERM")]
    pub stop_signal: String,
    pub stop_grace_seconds: u32,
}

impl ContainerResponse {
    /// The answer for a caller who may (`reveal_env`) or may not read plain values.
    pub fn new(spec: &ContainerSpec, secret_env_keys: &[String], reveal_env: bool) -> Self {
        Self {
            port: spec.port,
            env: reveal_env.then(|| spec.env.clone()),
            env_keys: spec.env.keys().cloned().collect(),
            secret_env_keys: secret_env_keys.to_vec(),
            command: spec.command.clone(),
            health_check: spec.health_check.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            memory_mb: spec.memory_mb,
            cpus: spec.cpus,
            volumes: spec.volumes.clone(),
            networks: spec.networks.clone(),
            labels: spec.labels.clone(),
            user: spec.user.clone(),
            restart_policy: spec.restart_policy.to_string(),
            stop_signal: spec.stop_signal.to_string(),
            stop_grace_seconds: spec.stop_grace_seconds,
        }
    }
}

/// What only the running installation can tell about a spec (SPEC §3 "Workloads"): its bind
/// mounts lie under the setting `allowed_bind_paths`, and every network it names exists on the
/// engine and is not one of docker-watcher's own (a project network is joined by its project's
/// containers only). Each refusal is a 400 naming `container.volumes` or `container.networks`.
pub async fn check_workload(state: &AppState, spec: &ContainerSpec) -> WebResult<()> {
    check_bind_mounts(&spec.volumes, &state.settings.current().allowed_bind_paths)
        .map_err(|message| WebError::validation("container.volumes", message))?;
    for network in &spec.networks {
        let labels = state.engine.network_labels(network).await.map_err(|e| {
            WebError::unavailable(format!(
                "cannot check the network {network} on the Docker engine: {e}"
            ))
        })?;
        match labels {
            None => {
                return Err(WebError::validation(
                    "container.networks",
                    format!("there is no network named {network} on the Docker engine"),
                ));
            }
            Some(labels) if labels.contains_key(crate::docker::engine::labels::MANAGED) => {
                return Err(WebError::validation(
                    "container.networks",
                    format!(
                        "{network} is a network docker-watcher manages; a stage is on its own project's network already"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::extract::parse_json;

    fn request(json: &str) -> WebResult<ContainerRequest> {
        parse_json(json.as_bytes())
    }

    #[test]
    fn a_bad_secret_never_quotes_its_value() {
        for body in [
            r#"{"secret_env": "hunter2-value"}"#,
            r#"{"secret_env": {"KEY": 424242}}"#,
            r#"{"secret_env": {"KEY": ["hunter2-value"]}}"#,
        ] {
            let err = request(body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("secret_env"), "{body}");
            assert!(
                !err.message.contains("hunter2") && !err.message.contains("424242"),
                "{}",
                err.message
            );
        }
        let err = request(r#"{"secret_env": {"1BAD": "hunter2-value"}}"#)
            .unwrap()
            .into_parts(&[])
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.secret_env.1BAD"));
        assert!(!err.message.contains("hunter2"));
    }

    #[test]
    fn a_name_is_plain_or_secret_not_both() {
        let err = request(r#"{"env": {"A": "1"}, "secret_env": {"A": "2"}}"#)
            .unwrap()
            .into_parts(&[])
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.secret_env.A"));
        let err = request(r#"{"env": {"A": "1"}}"#)
            .unwrap()
            .into_parts(&["A".to_owned()])
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("container.env.A"));
        // Removing the secret in the same request frees the name.
        assert!(
            request(r#"{"env": {"A": "1"}, "secret_env": {"A": null}}"#)
                .unwrap()
                .into_parts(&["A".to_owned()])
                .is_ok()
        );
    }

    #[test]
    fn an_answer_can_be_sent_back_as_a_request() {
        let spec = ContainerSpec::default();
        let answer = serde_json::to_string(&ContainerResponse::new(&spec, &["S".to_owned()], true)).unwrap();
        let (back, secrets) = request(&answer).unwrap().into_parts(&["S".to_owned()]).unwrap();
        assert_eq!(back, spec);
        assert!(secrets.0.is_empty());
    }

    #[test]
    fn only_changed_secrets_are_sealed() {
        let secrets = SecretBox::from_key([3; 32]);
        let current = BTreeMap::from([
            ("SAME".to_owned(), secrets.seal("v")),
            ("GONE".to_owned(), secrets.seal("x")),
        ]);
        let input = SecretEnvInput(BTreeMap::from([
            ("SAME".to_owned(), Some("v".to_owned())),
            ("GONE".to_owned(), None),
            ("ABSENT".to_owned(), None),
            ("NEW".to_owned(), Some("n".to_owned())),
        ]));
        let changes = sealed_changes(input, &current, &secrets);
        assert_eq!(changes.keys().collect::<Vec<_>>(), ["GONE", "NEW"]);
        assert_eq!(changes["GONE"], None);
        assert_eq!(secrets.open(changes["NEW"].as_ref().unwrap()).unwrap(), "n");
    }
}
