//! The typed settings of SPEC.md §3: their keys, ranges and defaults, and how a JSON patch from
//! the API is checked against them. A patch is applied to a copy and only returned when every key
//! in it is valid, so a bad patch changes nothing.

use serde_json::{Map, Value};

use super::duration::HumanDuration;
use super::hostname::Hostname;
use super::schedule::Schedule;
use super::workload::parse_bind_root;

/// Every setting, with its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub stale_threshold_days: u32,
    /// `None`: derived from the threshold, see [`Settings::effective_stale_scan_interval`].
    pub stale_scan_interval: Option<HumanDuration>,
    pub default_poll_schedule: Schedule,
    pub event_retention_days: u32,
    pub base_domain: Option<Hostname>,
    pub deploy_health_timeout_seconds: u32,
    /// Host directories stages may bind-mount (SPEC §3 "Workloads"); empty: none. Never `/`
    /// nor the Docker socket.
    pub allowed_bind_paths: Vec<String>,
    /// How long the proxy holds a `stop_first` stage's request while its instance is replaced
    /// before it answers 503 with `Retry-After`.
    pub proxy_hold_seconds: u32,
}

/// A key that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

impl SettingError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stale_threshold_days: 7,
            stale_scan_interval: None,
            default_poll_schedule: Schedule::every(HumanDuration::from_secs(300)),
            event_retention_days: 30,
            base_domain: None,
            deploy_health_timeout_seconds: 60,
            allowed_bind_paths: Vec::new(),
            proxy_hold_seconds: 30,
        }
    }
}

impl Settings {
    /// Every key, in the order the API lists them.
    pub const KEYS: [&'static str; 8] = [
        "stale_threshold_days",
        "stale_scan_interval",
        "default_poll_schedule",
        "event_retention_days",
        "base_domain",
        "deploy_health_timeout_seconds",
        "allowed_bind_paths",
        "proxy_hold_seconds",
    ];

    /// How often the stale scanner runs: the setting, or `max(1h, threshold / 7)`.
    pub fn effective_stale_scan_interval(&self) -> std::time::Duration {
        match &self.stale_scan_interval {
            Some(interval) => interval.as_std(),
            None => {
                let threshold = u64::from(self.stale_threshold_days) * 24 * 3600;
                std::time::Duration::from_secs((threshold / 7).max(3600))
            }
        }
    }

    /// The value of one key as JSON.
    pub fn get(&self, key: &str) -> Option<Value> {
        Some(match key {
            "stale_threshold_days" => Value::from(self.stale_threshold_days),
            "stale_scan_interval" => opt_string(self.stale_scan_interval.as_ref()),
            "default_poll_schedule" => Value::from(self.default_poll_schedule.to_string()),
            "event_retention_days" => Value::from(self.event_retention_days),
            "base_domain" => opt_string(self.base_domain.as_ref()),
            "deploy_health_timeout_seconds" => Value::from(self.deploy_health_timeout_seconds),
            "allowed_bind_paths" => Value::from(self.allowed_bind_paths.clone()),
            "proxy_hold_seconds" => Value::from(self.proxy_hold_seconds),
            _ => return None,
        })
    }

    /// All settings as one JSON object, the shape of `GET /api/settings`.
    pub fn to_json(&self) -> Map<String, Value> {
        Self::KEYS
            .iter()
            .filter_map(|k| self.get(k).map(|v| ((*k).to_owned(), v)))
            .collect()
    }

    /// Sets one key from JSON, checking its type and range.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), SettingError> {
        match key {
            "stale_threshold_days" => {
                self.stale_threshold_days = int_in_range(key, value, 1, 3650)?;
            }
            "stale_scan_interval" => {
                self.stale_scan_interval = nullable_parse(key, value, HumanDuration::parse)?;
            }
            "default_poll_schedule" => {
                self.default_poll_schedule = nullable_parse(key, value, Schedule::parse)?
                    .ok_or_else(|| SettingError::new(key, "must not be null"))?;
            }
            "event_retention_days" => {
                self.event_retention_days = int_in_range(key, value, 1, 3650)?;
            }
            "base_domain" => {
                self.base_domain = nullable_parse(key, value, Hostname::parse)?;
            }
            "deploy_health_timeout_seconds" => {
                self.deploy_health_timeout_seconds = int_in_range(key, value, 1, 3600)?;
            }
            "allowed_bind_paths" => {
                self.allowed_bind_paths = path_list(key, value)?;
            }
            "proxy_hold_seconds" => {
                self.proxy_hold_seconds = int_in_range(key, value, 1, 300)?;
            }
            _ => {
                return Err(SettingError::new(
                    key,
                    format!("unknown setting; known settings are {}", Self::KEYS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Applies a JSON object patch, all or nothing: returns the new settings and the keys that
    /// changed, or the first refused key.
    pub fn patched(&self, patch: &Map<String, Value>) -> Result<(Settings, Vec<String>), SettingError> {
        let mut next = self.clone();
        for (key, value) in patch {
            next.set(key, value)?;
        }
        let mut changed: Vec<String> = patch
            .keys()
            .filter(|k| self.get(k) != next.get(k))
            .cloned()
            .collect();
        changed.sort();
        Ok((next, changed))
    }

    /// Rebuilds settings from stored key/value pairs. A stored value that no longer parses (an
    /// older, looser version wrote it) falls back to the default instead of stopping the service.
    pub fn from_stored<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a Value)>,
    ) -> (Settings, Vec<SettingError>) {
        let mut settings = Settings::default();
        let mut problems = Vec::new();
        for (key, value) in pairs {
            if let Err(e) = settings.set(key, value) {
                problems.push(e);
            }
        }
        (settings, problems)
    }
}

fn opt_string(v: Option<&impl ToString>) -> Value {
    v.map_or(Value::Null, |v| Value::from(v.to_string()))
}

fn int_in_range(key: &str, value: &Value, min: u32, max: u32) -> Result<u32, SettingError> {
    value
        .as_u64()
        .filter(|v| (u64::from(min)..=u64::from(max)).contains(v))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| SettingError::new(key, format!("must be an integer from {min} to {max}")))
}

/// A JSON array of host directories, each parsed by [`parse_bind_root`]; duplicates dropped.
fn path_list(key: &str, value: &Value) -> Result<Vec<String>, SettingError> {
    let Value::Array(items) = value else {
        return Err(SettingError::new(key, "must be an array of absolute paths"));
    };
    if items.len() > 100 {
        return Err(SettingError::new(key, "at most 100 paths"));
    }
    let mut paths = Vec::new();
    for item in items {
        let raw = item
            .as_str()
            .ok_or_else(|| SettingError::new(key, "must be an array of absolute paths"))?;
        let path = parse_bind_root(raw).map_err(|e| SettingError::new(key, e.to_string()))?;
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

fn nullable_parse<T, E: std::fmt::Display>(
    key: &str,
    value: &Value,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, SettingError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => parse(s)
            .map(Some)
            .map_err(|e| SettingError::new(key, e.to_string())),
        _ => Err(SettingError::new(key, "must be a string or null")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_are_the_ones_the_spec_names() {
        let s = Settings::default().to_json();
        assert_eq!(s["stale_threshold_days"], json!(7));
        assert_eq!(s["stale_scan_interval"], Value::Null);
        assert_eq!(s["default_poll_schedule"], json!("@every 5m"));
        assert_eq!(s["event_retention_days"], json!(30));
        assert_eq!(s["base_domain"], Value::Null);
        assert_eq!(s["deploy_health_timeout_seconds"], json!(60));
        assert_eq!(s["allowed_bind_paths"], json!([]));
        assert_eq!(s["proxy_hold_seconds"], json!(30));
    }

    #[test]
    fn the_proxy_hold_lasts_from_one_second_to_five_minutes() {
        let s = Settings::default();
        let (next, changed) = s.patched(&patch(json!({"proxy_hold_seconds": 300}))).unwrap();
        assert_eq!(
            (next.proxy_hold_seconds, changed),
            (300, vec!["proxy_hold_seconds".to_owned()])
        );
        for bad in [
            json!(0),
            json!(301),
            json!(-1),
            json!("30"),
            json!(1.5),
            Value::Null,
        ] {
            let err = s.patched(&patch(json!({"proxy_hold_seconds": bad}))).unwrap_err();
            assert_eq!(err.key, "proxy_hold_seconds");
        }
    }

    #[test]
    fn allowed_bind_paths_are_absolute_and_never_root_or_the_socket() {
        let s = Settings::default();
        let (next, _) = s
            .patched(&patch(json!({"allowed_bind_paths": ["/srv/apps", "/srv/apps"]})))
            .unwrap();
        assert_eq!(next.allowed_bind_paths, vec!["/srv/apps".to_owned()]);
        for bad in [
            json!(["/"]),
            json!(["srv"]),
            json!(["/var/run"]),
            json!("/srv"),
            json!([1]),
        ] {
            let err = s.patched(&patch(json!({"allowed_bind_paths": bad}))).unwrap_err();
            assert_eq!(err.key, "allowed_bind_paths");
        }
    }

    #[test]
    fn a_patch_with_one_bad_key_changes_nothing_and_names_the_key() {
        let s = Settings::default();
        let err = s
            .patched(&patch(
                json!({"stale_threshold_days": 3, "event_retention_days": 0}),
            ))
            .unwrap_err();
        assert_eq!(err.key, "event_retention_days");
        assert_eq!(s.stale_threshold_days, 7);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let s = Settings::default();
        assert_eq!(
            s.patched(&patch(json!({"colour": "red"}))).unwrap_err().key,
            "colour"
        );
        assert!(s.patched(&patch(json!({"stale_threshold_days": "7"}))).is_err());
        assert!(s.patched(&patch(json!({"stale_threshold_days": 7.5}))).is_err());
        assert!(s.patched(&patch(json!({"stale_threshold_days": 3651}))).is_err());
        assert!(s.patched(&patch(json!({"default_poll_schedule": null}))).is_err());
        assert!(
            s.patched(&patch(json!({"default_poll_schedule": "every now and then"})))
                .is_err()
        );
        assert!(s.patched(&patch(json!({"base_domain": "not a host"}))).is_err());
    }

    #[test]
    fn a_valid_patch_reports_what_changed() {
        let s = Settings::default();
        let (next, changed) = s
            .patched(&patch(json!({"stale_threshold_days": 14, "base_domain": "Apps.Example.com", "event_retention_days": 30})))
            .unwrap();
        assert_eq!(next.stale_threshold_days, 14);
        assert_eq!(next.base_domain.as_ref().unwrap().as_str(), "apps.example.com");
        assert_eq!(
            changed,
            vec!["base_domain".to_owned(), "stale_threshold_days".to_owned()]
        );
    }

    #[test]
    fn the_scan_interval_is_derived_from_the_threshold_when_unset() {
        let mut s = Settings::default();
        assert_eq!(s.effective_stale_scan_interval().as_secs(), 24 * 3600);
        // One day / 7 is about 3.4 h: above the one-hour floor, which only guards against a
        // future finer-grained threshold.
        s.stale_threshold_days = 1;
        assert_eq!(s.effective_stale_scan_interval().as_secs(), 86_400 / 7);
        s.stale_scan_interval = Some(HumanDuration::parse("30m").unwrap());
        assert_eq!(s.effective_stale_scan_interval().as_secs(), 1800);
    }
}
