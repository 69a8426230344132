//! What a stage's container is given besides its image, env and command (SPEC §3 "Workloads"):
//! volumes (named, or bind mounts of host paths), networks to join, labels, the user, the
//! restart policy and the stop signal. Everything here is parsed or checked without IO; whether a
//! network exists is asked of the engine by the API, and whether a bind path is allowed depends
//! on the admin setting `allowed_bind_paths`, which is handed in.
//!
//! Names: a named volume `data` of project `shop` is the engine's volume `dw-shop-data`, and the
//! project's network is `dw-shop` — both derived here so every module agrees on them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ParseError;

/// One mount of a stage's container. A `source` starting with `/` is a bind mount of that host
/// path; anything else names a volume of the project (`dw-{project}-{source}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// A volume name (`data`) or an absolute host path (`/srv/shop/uploads`).
    #[schema(example = "data")]
    pub source: String,
    /// Where it appears in the container: an absolute path.
    #[schema(example = "/var/lib/app")]
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl VolumeMount {
    /// A bind mount of a host path (rather than a named volume).
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('/')
    }
}

/// The engine's name of a project's named volume.
pub fn volume_name(project: &str, source: &str) -> String {
    format!("dw-{project}-{source}")
}

/// The engine's name of a project's own bridge network.
pub fn project_network_name(project: &str) -> String {
    format!("dw-{project}")
}

/// The most mounts, networks and labels a container takes.
pub const MAX_VOLUMES: usize = 50;
pub const MAX_NETWORKS: usize = 20;
pub const MAX_LABELS: usize = 100;

/// Where the Docker socket usually lives: never mounted into a container, nor any directory
/// holding it.
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// The label namespace docker-watcher keeps for itself.
pub const RESERVED_LABEL_PREFIX: &str = "io.docker-watcher.";

/// An absolute path without `.`/`..` components, empty components or a trailing `/`: the only
/// form in which "lies under" can be decided by comparing strings.
fn check_clean_absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("'{path}' is not an absolute path"));
    }
    if path.len() > 4096 || path.chars().any(char::is_control) {
        return Err("a path must be at most 4096 characters, without control characters".into());
    }
    if path == "/" {
        return Ok(());
    }
    if path[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "'{path}' must be a plain absolute path: no '.', '..', '//' or trailing '/'"
        ));
    }
    Ok(())
}

/// Whether `path` is `root` or lies below it (both clean and absolute).
fn is_under(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// One entry of the setting `allowed_bind_paths`: a clean absolute path, never `/` nor the
/// Docker socket.
pub fn parse_bind_root(raw: &str) -> Result<String, ParseError> {
    check_clean_absolute(raw).map_err(ParseError::new)?;
    if raw == "/" {
        return Err(ParseError::new(
            "'/' is never allowed: name the directories to share",
        ));
    }
    if DOCKER_SOCKETS.iter().any(|socket| is_under(socket, raw)) {
        return Err(ParseError::new(format!(
            "'{raw}' holds the Docker socket, which is never mounted into a container"
        )));
    }
    Ok(raw.to_owned())
}

/// Checks a container's mounts without the setting: sources and targets well-formed, targets
/// unique. Bind paths are checked against the setting by [`check_bind_mounts`].
pub fn check_volumes(volumes: &[VolumeMount]) -> Result<(), String> {
    if volumes.len() > MAX_VOLUMES {
        return Err(format!("at most {MAX_VOLUMES} volumes"));
    }
    let mut targets = Vec::new();
    for (n, volume) in volumes.iter().enumerate() {
        let which = format!("volume {} ({} → {})", n + 1, volume.source, volume.target);
        if volume.is_bind() {
            check_clean_absolute(&volume.source).map_err(|e| format!("{which}: {e}"))?;
        } else if !is_volume_source(&volume.source) {
            return Err(format!(
                "{which}: a source is an absolute host path or a volume name (letters, digits, '_', '.', '-', starting with a letter or digit, at most 64)"
            ));
        }
        if !volume.target.starts_with('/') {
            return Err(format!(
                "{which}: the target must be an absolute path in the container"
            ));
        }
        check_clean_absolute(&volume.target).map_err(|e| format!("{which}: {e}"))?;
        if volume.target == "/" {
            return Err(format!("{which}: the target must not be the container's root"));
        }
        if targets.contains(&volume.target.as_str()) {
            return Err(format!("{which}: two volumes mount at {}", volume.target));
        }
        targets.push(&volume.target);
    }
    Ok(())
}

fn is_volume_source(source: &str) -> bool {
    source.len() <= 64
        && source.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Refuses a bind mount that does not lie under one of `allowed` (the setting
/// `allowed_bind_paths`), and always `/`, the Docker socket and any directory holding it.
pub fn check_bind_mounts(volumes: &[VolumeMount], allowed: &[String]) -> Result<(), String> {
    for volume in volumes.iter().filter(|v| v.is_bind()) {
        let source = volume.source.as_str();
        if source == "/" || DOCKER_SOCKETS.iter().any(|socket| is_under(socket, source)) {
            return Err(format!(
                "the bind mount {source} is never allowed: it is the host's root or exposes the Docker socket"
            ));
        }
        if !allowed.iter().any(|root| is_under(source, root)) {
            return Err(if allowed.is_empty() {
                format!(
                    "the bind mount {source} is not allowed: no host path is (an admin lists them in the setting allowed_bind_paths); use a named volume"
                )
            } else {
                format!(
                    "the bind mount {source} is not allowed: it must lie under one of {} (setting allowed_bind_paths)",
                    allowed.join(", ")
                )
            });
        }
    }
    Ok(())
}

/// Checks the names of the networks to join: engine network names, unique, not `host` nor
/// `none` (a container on those cannot join the project's network).
pub fn check_networks(networks: &[String]) -> Result<(), String> {
    if networks.len() > MAX_NETWORKS {
        return Err(format!("at most {MAX_NETWORKS} networks"));
    }
    for (n, name) in networks.iter().enumerate() {
        let valid = name.len() <= 128
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!(
                "'{name}' is not a network name: letters, digits, '_', '.', '-', starting with a letter or digit"
            ));
        }
        if name == "host" || name == "none" {
            return Err(format!(
                "the network '{name}' cannot be joined: the container is on its project's network"
            ));
        }
        if networks[..n].contains(name) {
            return Err(format!("'{name}' is named twice"));
        }
    }
    Ok(())
}

/// Checks user labels: printable keys outside docker-watcher's own namespace, values without NUL.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic() && c != '=') {
            return Err(format!(
                "'{key}' is not a label key: 1 to 255 printable characters, no spaces or '='"
            ));
        }
        if key.starts_with(RESERVED_LABEL_PREFIX) {
            return Err(format!(
                "'{key}': labels starting with {RESERVED_LABEL_PREFIX} are docker-watcher's own"
            ));
        }
        if value.len() > 4096 || value.contains('\0') {
            return Err(format!(
                "the value of '{key}' must be at most 4096 bytes, without NUL"
            ));
        }
    }
    Ok(())
}

/// Checks `user`: `name`, `uid`, `name:group` or `uid:gid`.
pub fn check_user(user: &str) -> Result<(), String> {
    let part = |p: &str| {
        (1..=32).contains(&p.len())
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let valid = match user.split_once(':') {
        Some((name, group)) => part(name) && part(group),
        None => part(user),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{user}' is not a user: a name or uid, optionally with :group or :gid"
        ))
    }
}

/// What the engine does when the container exits (Docker's restart policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    No,
    /// Restarts after a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
    #[default]
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        Ok(match raw {
            "no" => Self::No,
            "always" => Self::Always,
            "unless-stopped" => Self::UnlessStopped,
            "on-failure" => Self::OnFailure { max_retries: None },
            _ => match raw.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=1000).contains(&n) => Self::OnFailure { max_retries: Some(n) },
                _ => {
                    return Err(ParseError::new(format!(
                        "'{raw}' is not a restart policy: no, on-failure, on-failure:N (N from 1 to 1000), always or unless-stopped"
                    )));
                }
            },
        })
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::No => f.write_str("no"),
            Self::OnFailure { max_retries: None } => f.write_str("on-failure"),
            Self::OnFailure { max_retries: Some(n) } => write!(f, "on-failure:{n}"),
            Self::Always => f.write_str("always"),
            Self::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl TryFrom<String> for RestartPolicy {
    type Error = ParseError;

    fn try_from(raw: String) -> Result<Self, ParseError> {
        raw.parse()
    }
}

impl From<RestartPolicy> for String {
    fn from(policy: RestartPolicy) -> Self {
        policy.to_string()
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The signals a container may be asked to stop with: the ones applications handle.
const STOP_SIGNALS: [&str; 10] = [
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGPWR", "SIGABRT",
    "SIGKILL",
];

/// The signal `docker stop` sends first, canonical as `SIGTERM` (`term`, `TERM` and `15` are
/// read as it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal(&'static str);

impl StopSignal {
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        Self("SIGTERM")
    }
}

impl FromStr for StopSignal {
    type Err = ParseError;

    fn from_str(raw: &str) -> Result<Self, ParseError> {
        let by_number = match raw {
            "1" => Some("SIGHUP"),
            "2" => Some("SIGINT"),
            "3" => Some("SIGQUIT"),
            "6" => Some("SIGABRT"),
            "9" => Some("SIGKILL"),
            "10" => Some("SIGUSR1"),
            "12" => Some("SIGUSR2"),
            "15" => Some("SIGTERM"),
            "28" => Some("SIGWINCH"),
            "30" => Some("SIGPWR"),
            _ => None,
        };
        let upper = raw.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        by_number
            .or_else(|| STOP_SIGNALS.iter().copied().find(|s| s[3..] == *name))
            .map(Self)
            .ok_or_else(|| {
                ParseError::new(format!(
                    "'{raw}' is not a stop signal: one of {}",
                    STOP_SIGNALS.join(", ")
                ))
            })
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A stage's deploy hooks (SPEC §3 "Workloads"): `pre_deploy` runs in a one-off container of
/// the new image before the new instance takes traffic (migrations; a failure fails the
/// deploy), `post_deploy` after the switch (a failure is only reported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub pre_deploy: Option<Hook>,
    #[serde(default)]
    pub post_deploy: Option<Hook>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// The command, run instead of the image's (`["/app/migrate", "up"]`).
    #[schema(example = json!(["/app/migrate", "up"]))]
    pub command: Vec<String>,
    /// The hook is stopped and counts as failed after this long; 1 to 3600, default 300.
    #[serde(default = "Hook::default_timeout_seconds")]
    #[schema(minimum = 1, maximum = 3600, example = 300)]
    pub timeout_seconds: u32,
}

impl Hook {
    fn default_timeout_seconds() -> u32 {
        300
    }
}

/// The most output of a hook a deployment keeps: its last 64 KiB.
pub const MAX_HOOK_OUTPUT: usize = 64 * 1024;

impl Hooks {
    /// Checks both hooks; the error names the field (`hooks.pre_deploy.command`).
    pub fn validate(&self) -> Result<(), (String, ParseError)> {
        for (name, hook) in [
            ("pre_deploy", &self.pre_deploy),
            ("post_deploy", &self.post_deploy),
        ] {
            let Some(hook) = hook else { continue };
            let fail = |field: &str, msg: &str| Err((format!("hooks.{name}.{field}"), ParseError::new(msg)));
            if hook.command.is_empty() || hook.command.len() > 1000 {
                return fail("command", "must be a list of 1 to 1000 arguments");
            }
            if hook.command.iter().any(|a| a.contains('\0')) {
                return fail("command", "must not contain NUL characters");
            }
            if !(1..=3600).contains(&hook.timeout_seconds) {
                return fail("timeout_seconds", "must be from 1 to 3600");
            }
        }
        Ok(())
    }
}

/// The last [`MAX_HOOK_OUTPUT`] bytes of `output`, cut at a character boundary.
pub fn output_tail(output: &str) -> &str {
    if output.len() <= MAX_HOOK_OUTPUT {
        return output;
    }
    let mut start = output.len() - MAX_HOOK_OUTPUT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    &output[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_name_their_bad_fields_and_keep_the_tail_of_their_output() {
        let hook = |command: Vec<&str>, timeout_seconds| Hook {
            command: command.into_iter().map(str::to_owned).collect(),
            timeout_seconds,
        };
        let hooks = Hooks {
            pre_deploy: Some(hook(vec![], 10)),
            post_deploy: None,
        };
        assert_eq!(hooks.validate().unwrap_err().0, "hooks.pre_deploy.command");
        let hooks = Hooks {
            pre_deploy: None,
            post_deploy: Some(hook(vec!["x"], 0)),
        };
        assert_eq!(
            hooks.validate().unwrap_err().0,
            "hooks.post_deploy.timeout_seconds"
        );
        assert!(Hooks::default().validate().is_ok());
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(MAX_HOOK_OUTPUT - 1));
        assert!(output_tail(&long).len() <= MAX_HOOK_OUTPUT);
        assert!(output_tail(&long).ends_with('b'));
        assert_eq!(output_tail("short"), "short");
    }

    fn mount(source: &str, target: &str) -> VolumeMount {
        VolumeMount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn volume_sources_are_names_or_clean_absolute_paths_and_targets_absolute() {
        assert!(check_volumes(&[mount("data", "/data"), mount("/srv/up", "/up")]).is_ok());
        assert!(
            check_volumes(&[mount("data", "data")])
                .unwrap_err()
                .contains("absolute")
        );
        assert!(check_volumes(&[mount("data", "/")]).is_err());
        assert!(check_volumes(&[mount("../x", "/x")]).is_err());
        assert!(check_volumes(&[mount("/srv/../etc", "/x")]).is_err());
        assert!(check_volumes(&[mount("/srv/x/", "/x")]).is_err());
        assert!(check_volumes(&[mount("a", "/x"), mount("b", "/x")]).is_err());
        assert!(check_volumes(&[mount("", "/x")]).is_err());
    }

    #[test]
    fn bind_mounts_lie_under_an_allowed_path_and_never_expose_the_socket_or_root() {
        let allowed = vec!["/srv/shop".to_owned(), "/var".to_owned()];
        assert!(check_bind_mounts(&[mount("/srv/shop", "/a")], &allowed).is_ok());
        assert!(check_bind_mounts(&[mount("/srv/shop/up", "/a")], &allowed).is_ok());
        assert!(check_bind_mounts(&[mount("/srv/shopping", "/a")], &allowed).is_err());
        assert!(check_bind_mounts(&[mount("/etc", "/a")], &allowed).is_err());
        assert!(check_bind_mounts(&[mount("/var/run/docker.sock", "/a")], &allowed).is_err());
        assert!(check_bind_mounts(&[mount("/var/run", "/a")], &allowed).is_err());
        assert!(check_bind_mounts(&[mount("/var", "/a")], &allowed).is_err());
        assert!(check_bind_mounts(&[mount("/", "/a")], &["/".to_owned()]).is_err());
        assert!(check_bind_mounts(&[mount("/srv/x", "/a")], &[]).is_err());
        // Named volumes are not the setting's business.
        assert!(check_bind_mounts(&[mount("data", "/a")], &[]).is_ok());
    }

    #[test]
    fn the_bind_path_setting_refuses_root_and_the_socket() {
        assert_eq!(parse_bind_root("/srv").unwrap(), "/srv");
        assert!(parse_bind_root("/").is_err());
        assert!(parse_bind_root("/run").is_err());
        assert!(parse_bind_root("/var/run/docker.sock").is_err());
        assert!(parse_bind_root("srv").is_err());
        assert!(parse_bind_root("/srv/../").is_err());
    }

    #[test]
    fn restart_policies_read_and_print_as_docker_writes_them() {
        for raw in ["no", "on-failure", "on-failure:3", "always", "unless-stopped"] {
            assert_eq!(raw.parse::<RestartPolicy>().unwrap().to_string(), raw);
        }
        for raw in ["", "sometimes", "on-failure:0", "on-failure:x", "Always"] {
            assert!(raw.parse::<RestartPolicy>().is_err(), "{raw}");
        }
        assert_eq!(RestartPolicy::default().to_string(), "unless-stopped");
    }

    #[test]
    fn stop_signals_are_canonical_names() {
        assert_eq!("term".parse::<StopSignal>().unwrap().as_str(), "SIGTERM");
        assert_eq!("SIGQUIT".parse::<StopSignal>().unwrap().as_str(), "SIGQUIT");
        assert_eq!("2".parse::<StopSignal>().unwrap().as_str(), "SIGINT");
        assert!("SIGSTOP".parse::<StopSignal>().is_err());
        assert!("BOGUS".parse::<StopSignal>().is_err());
        assert!("".parse::<StopSignal>().is_err());
    }

    #[test]
    fn networks_labels_and_users_are_checked() {
        assert!(check_networks(&["backend".into(), "shared_db".into()]).is_ok());
        assert!(check_networks(&["host".into()]).is_err());
        assert!(check_networks(&["a b".into()]).is_err());
        assert!(check_networks(&["x".into(), "x".into()]).is_err());
        let labels = |k: &str| BTreeMap::from([(k.to_owned(), "v".to_owned())]);
        assert!(check_labels(&labels("com.example.team")).is_ok());
        assert!(check_labels(&labels("io.docker-watcher.stage")).is_err());
        assert!(check_labels(&labels("a b")).is_err());
        assert!(check_user("1000:1000").is_ok());
        assert!(check_user("www-data").is_ok());
        assert!(check_user("root; rm").is_err());
        assert!(check_user("").is_err());
    }
}
