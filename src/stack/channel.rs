//! A notification channel as a stack file holds it, both ways: the canonical fields of a
//! channel's [`Resource`] (`kind`, `enabled`, `settings`, `rule`) from a file's entry and from
//! a stored channel, so the diff compares like with like. The one difference from the API is
//! the rule's projects: a file names them (`projects = ["shop"]`), because ids belong to one
//! installation and a file moves between them; the web layer maps names to ids and back.
//!
//! Secrets (`secrets.url`, `secrets.signing_secret`, `secrets.token`, `secrets.password`) are
//! the resource's secrets, named `secrets.KEY`, so an export writes them as
//! `${NAME_SECRETS_URL}` references under the channel's `secrets` table.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Kind, Resource};
use crate::domain::ParseError;
use crate::domain::event::{EventKind, Severity, Source};
use crate::domain::name::Name;
use crate::domain::notification::{
    Channel, ChannelFieldError, ChannelKind, ChannelSecrets, ChannelSettings, NotificationRule, SecretsPatch,
    parse_channel_name,
};

/// The prefix of a channel's secrets among its resource's secrets: `secrets.url`.
pub const SECRETS_PREFIX: &str = "secrets.";

/// A rule as a file writes it: like the API's, with project names for ids. Absent lists mean
/// "any", an absent severity `warn`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    #[serde(default)]
    pub min_severity: Option<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl RuleEntry {
    /// The rule in canonical form (lists sorted as the API stores them), or the field below
    /// `rule` that does not parse.
    pub fn canonical(&self) -> Result<Value, ChannelFieldError> {
        fn field(name: &'static str) -> impl Fn(ParseError) -> ChannelFieldError {
            move |e| ChannelFieldError::new(format!("rule.{name}"), e.0)
        }
        let min_severity = match self.min_severity.as_deref().map(str::trim) {
            Some(raw) if !raw.is_empty() => raw.parse::<Severity>().map_err(field("min_severity"))?,
            _ => Severity::Warn,
        };
        let sources = self
            .sources
            .iter()
            .map(|s| s.trim().parse::<Source>())
            .collect::<Result<_, _>>()
            .map_err(field("sources"))?;
        let kinds = self
            .kinds
            .iter()
            .map(|k| k.trim().parse::<EventKind>())
            .collect::<Result<_, _>>()
            .map_err(field("kinds"))?;
        let projects = self
            .projects
            .iter()
            .map(|p| Name::parse(p).map(|name| name.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(field("projects"))?;
        let rule = NotificationRule {
            min_severity,
            sources,
            project_ids: Vec::new(),
            kinds,
        };
        Ok(rule_value(&rule, projects))
    }
}

/// A rule's canonical form: its severity, sources and kinds as the API names them, and the
/// names of its projects, sorted.
pub fn rule_value(rule: &NotificationRule, projects: Vec<String>) -> Value {
    let rule = rule.clone().normalized();
    let projects: BTreeSet<String> = projects.into_iter().collect();
    json!({
        "min_severity": rule.min_severity.as_str(),
        "sources": rule.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "projects": projects,
        "kinds": rule.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
    })
}

/// The project names of a canonical rule.
pub fn rule_projects(rule: &Value) -> Vec<String> {
    rule.get("projects")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The channel's name, as the file's key must write it.
pub fn channel_name(key: &str) -> Result<String, ParseError> {
    let name = parse_channel_name(key)?;
    if name != key {
        return Err(ParseError::new(format!(
            "write the name as \"{name}\" (without spaces around it)"
        )));
    }
    Ok(name)
}

/// A file's channel: its kind, settings and rule parsed into canonical fields, and `secrets`
/// (the environment's values of its `${VARIABLE}` references) checked against the kind. Every
/// error names the field below the channel (`kind`, `settings.tls`, `secrets.url`, `rule.kinds`).
pub fn file_resource(
    name: &str,
    kind: &str,
    enabled: bool,
    settings: &Value,
    secrets: &SecretsPatch,
    rule: &RuleEntry,
) -> Result<Resource, ChannelFieldError> {
    let kind = kind
        .trim()
        .parse::<ChannelKind>()
        .map_err(|e| ChannelFieldError::new("kind", e.0))?;
    let settings = ChannelSettings::parse(kind, settings)?;
    let checked = ChannelSecrets::default().patched(kind, secrets).map_err(|e| {
        let missing = !secrets.contains_key(e.field.trim_start_matches(SECRETS_PREFIX));
        if missing {
            ChannelFieldError::new(
                e.field.clone(),
                format!("{}: write it as \"${{VARIABLE}}\"", e.message),
            )
        } else {
            e
        }
    })?;
    let mut resource = Resource::new(Kind::Channel, vec![name.to_owned()]);
    resource.fields.insert("kind".into(), json!(kind.as_str()));
    resource.fields.insert("enabled".into(), json!(enabled));
    resource.fields.insert("settings".into(), settings.to_json());
    resource.fields.insert("rule".into(), rule.canonical()?);
    for key in secrets.keys() {
        let value = checked.get(key).map(str::to_owned);
        resource.secrets.insert(format!("{SECRETS_PREFIX}{key}"), value);
    }
    Ok(resource)
}

/// A stored channel as a resource: `projects` are the names of its rule's project ids (an id
/// no project has any more is left out), `secrets` its opened secrets.
pub fn stored_resource(channel: &Channel, projects: Vec<String>, secrets: &ChannelSecrets) -> Resource {
    let mut resource = Resource::new(Kind::Channel, vec![channel.name.clone()]);
    resource
        .fields
        .insert("kind".into(), json!(channel.kind.as_str()));
    resource.fields.insert("enabled".into(), json!(channel.enabled));
    resource
        .fields
        .insert("settings".into(), channel.settings.to_json());
    resource
        .fields
        .insert("rule".into(), rule_value(&channel.rule, projects));
    for key in secrets.keys() {
        let value = secrets.get(&key).map(str::to_owned);
        resource.secrets.insert(format!("{SECRETS_PREFIX}{key}"), value);
    }
    resource
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_the_same_however_it_is_written() {
        let written = RuleEntry {
            min_severity: Some("error".into()),
            sources: vec!["stale".into(), "deployer".into(), "stale".into()],
            projects: vec!["web".into(), "shop".into()],
            kinds: vec!["stale_found".into(), "deploy_failed".into()],
        };
        let stored = NotificationRule {
            min_severity: Severity::Error,
            sources: vec![Source::Deployer, Source::Stale],
            project_ids: vec![3, 1],
            kinds: vec![EventKind::DeployFailed, EventKind::StaleFound],
        };
        let from_file = written.canonical().unwrap();
        assert_eq!(from_file, rule_value(&stored, vec!["shop".into(), "web".into()]));
        assert_eq!(from_file["projects"], json!(["shop", "web"]));
        assert_eq!(rule_projects(&from_file), vec!["shop", "web"]);
        assert_eq!(
            RuleEntry::default().canonical().unwrap(),
            json!({"min_severity": "warn", "sources": [], "projects": [], "kinds": []})
        );
    }

    #[test]
    fn a_bad_rule_names_the_field_below_it() {
        let bad = |entry: RuleEntry| entry.canonical().unwrap_err().field;
        assert_eq!(
            bad(RuleEntry {
                min_severity: Some("fatal".into()),
                ..RuleEntry::default()
            }),
            "rule.min_severity"
        );
        assert_eq!(
            bad(RuleEntry {
                kinds: vec!["deploy_exploded".into()],
                ..RuleEntry::default()
            }),
            "rule.kinds"
        );
        assert_eq!(
            bad(RuleEntry {
                projects: vec!["Not A Name".into()],
                ..RuleEntry::default()
            }),
            "rule.projects"
        );
    }

    #[test]
    fn a_channel_needs_its_kinds_required_secrets_and_no_others() {
        let url = SecretsPatch::from([(
            "url".to_owned(),
            Some(" https://hooks.example.com/T/B ".to_owned()),
        )]);
        let slack = file_resource("ops", "slack", true, &Value::Null, &url, &RuleEntry::default()).unwrap();
        assert_eq!(slack.fields["settings"], json!({}));
        assert_eq!(
            slack.secrets["secrets.url"].as_deref(),
            Some("https://hooks.example.com/T/B"),
            "trimmed as the API stores it"
        );
        let missing = file_resource(
            "ops",
            "slack",
            true,
            &Value::Null,
            &SecretsPatch::new(),
            &RuleEntry::default(),
        )
        .unwrap_err();
        assert_eq!(missing.field, "secrets.url");
        assert!(missing.message.contains("${VARIABLE}"), "{}", missing.message);
        let unknown = file_resource(
            "ops",
            "gotify",
            true,
            &json!({"url": "https://g.example.com"}),
            &url,
            &RuleEntry::default(),
        )
        .unwrap_err();
        assert_eq!(unknown.field, "secrets.url");
        let kind =
            file_resource("ops", "pager", true, &Value::Null, &url, &RuleEntry::default()).unwrap_err();
        assert_eq!(kind.field, "kind");
        assert!(channel_name(" ops").is_err());
        assert_eq!(channel_name("ops alerts").unwrap(), "ops alerts");
    }
}
