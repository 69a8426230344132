//! Display values built once, in Rust, for the templates: times as "5 min ago" with the exact
//! UTC time beside them, short digests, status badges, and the rows of instances and
//! deployments several pages show, and the links to the hostnames the reverse proxy routes
//! ([`ProxyLinks`]). Templates stay free of logic beyond loops and conditions.

use chrono::{DateTime, Utc};

use crate::domain::hostname::Hostname;
use crate::domain::instance::{Deployment, DeploymentStatus, FailedDigest, Instance, InstanceStatus};

/// Where the reverse proxy answers, so the UI's links to the hostnames it routes reach it: the
/// port of its plain listener, and its HTTPS listener with the names its certificates are for.
/// A link carries the listener's port unless it is the scheme's default
/// (`http://shop.example.com:8000/`), because the proxy rarely listens on 80 itself. It is
/// `https://` when a certificate covers the name — a name without one would meet a certificate
/// warning — and for every name when plain HTTP is redirected to HTTPS anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLinks {
    http_port: u16,
    https: Option<HttpsLinks>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpsLinks {
    port: u16,
    /// The names certificates were configured for; `*.example.com` covers one label, as the
    /// listener's choice by SNI does.
    certificate_names: Vec<Hostname>,
    redirect_http: bool,
}

impl ProxyLinks {
    /// A proxy with only its plain-HTTP listener, on `http_port`.
    pub fn http(http_port: u16) -> Self {
        Self {
            http_port,
            https: None,
        }
    }

    /// Adds the HTTPS listener on `port`, its certificates' hostnames (or `*.` wildcards, which
    /// the configuration has validated; a name that does not parse covers nothing), and whether
    /// plain HTTP is redirected to it.
    pub fn with_https<S: AsRef<str>>(
        self,
        port: u16,
        certificate_names: impl IntoIterator<Item = S>,
        redirect_http: bool,
    ) -> Self {
        Self {
            https: Some(HttpsLinks {
                port,
                certificate_names: certificate_names
                    .into_iter()
                    .filter_map(|name| Hostname::parse_wildcard(name.as_ref()).ok())
                    .collect(),
                redirect_http,
            }),
            ..self
        }
    }

    /// The link to `hostname` through the proxy: `http://shop.example.com:8000/`.
    pub fn href(&self, hostname: &str) -> String {
        let (scheme, port, default_port) = match &self.https {
            Some(https) if https.redirect_http || https.covers(hostname) => ("https", https.port, 443),
            _ => ("http", self.http_port, 80),
        };
        if port == default_port {
            format!("{scheme}://{hostname}/")
        } else {
            format!("{scheme}://{hostname}:{port}/")
        }
    }
}

impl HttpsLinks {
    fn covers(&self, hostname: &str) -> bool {
        Hostname::parse(hostname)
            .is_ok_and(|host| self.certificate_names.iter().any(|name| name.matches(&host)))
    }
}

/// A point in time as pages show it.
#[derive(Debug, Clone)]
pub struct When {
    /// RFC 3339, for `<time datetime>`.
    pub iso: String,
    /// `2026-01-02 03:04:05 UTC`, for the tooltip.
    pub utc: String,
    /// `5 min ago`.
    pub ago: String,
}

impl When {
    pub fn new(t: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            iso: crate::clock::format_time(t),
            utc: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ago: ago(t, now),
        }
    }

    pub fn opt(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Self> {
        t.map(|t| Self::new(t, now))
    }
}

/// How long ago `t` was, roughly, in words.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (future, secs) = (secs < 0, secs.unsigned_abs());
    let amount = match secs {
        0..=9 => return "just now".to_owned(),
        10..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => {
            let days = secs / 86_400;
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        }
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The first 12 hex digits of a digest (`sha256:4f53c1…` → `4f53c1…`), as `docker images` shows.
pub fn short_digest(digest: Option<&str>) -> String {
    let Some(digest) = digest else {
        return String::new();
    };
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// The badge class of an instance status: what it means for someone glancing at the page.
pub fn instance_status_class(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Running => "ok",
        InstanceStatus::Pending | InstanceStatus::Deploying | InstanceStatus::Removing => "busy",
        InstanceStatus::Stopped => "idle",
        InstanceStatus::Failed => "bad",
        InstanceStatus::Missing => "warn",
    }
}

pub fn deployment_status_class(status: DeploymentStatus) -> &'static str {
    match status {
        DeploymentStatus::Running => "busy",
        DeploymentStatus::Succeeded => "ok",
        DeploymentStatus::Failed => "bad",
    }
}

/// An instance row.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub id: i64,
    pub project_id: i64,
    pub project_name: String,
    pub stage_id: i64,
    pub stage_name: String,
    pub tag: String,
    pub digest: String,
    pub digest_short: String,
    pub status: String,
    pub status_class: &'static str,
    /// Since when it has this status.
    pub since: When,
    /// Whether it is its stage's current instance (per-tag: a running one).
    pub is_current: bool,
    /// Whether it serves its stage's traffic now: current and running. A stopped current
    /// instance serves nothing, and the page must not say otherwise.
    pub is_serving: bool,
    pub hostname: Option<String>,
    /// The link to the hostname through the reverse proxy.
    pub href: Option<String>,
    pub container_name: String,
    pub host_port: Option<u16>,
    pub exit_code: Option<i64>,
    pub can_stop: bool,
    pub can_start: bool,
    pub can_restart: bool,
    pub can_remove: bool,
}

impl InstanceView {
    /// `stage_hostname`: the hostname its stage routes (single stages), shown for the current
    /// instance; per-tag instances have their own. `links` makes the hostname a link.
    pub fn new(
        i: &Instance,
        per_tag: bool,
        stage_hostname: Option<&str>,
        links: &ProxyLinks,
        now: DateTime<Utc>,
    ) -> Self {
        let since = match i.status {
            InstanceStatus::Running => i.started_at.or(i.last_alive_at),
            InstanceStatus::Stopped | InstanceStatus::Failed | InstanceStatus::Missing => {
                i.stopped_at.or(i.last_alive_at)
            }
            _ => None,
        }
        .unwrap_or(i.created_at);
        let is_current = i.is_current || (per_tag && i.status == InstanceStatus::Running);
        let hostname = i.hostname.clone().or_else(|| {
            (is_current && !per_tag)
                .then(|| stage_hostname.map(str::to_owned))
                .flatten()
        });
        let status = i.status;
        Self {
            id: i.id,
            project_id: i.project_id,
            project_name: i.project_name.clone(),
            stage_id: i.stage_id,
            stage_name: i.stage_name.clone(),
            tag: i.image_tag.clone(),
            digest: i.image_digest.clone().unwrap_or_default(),
            digest_short: short_digest(i.image_digest.as_deref()),
            status: status.to_string(),
            status_class: instance_status_class(status),
            since: When::new(since, now),
            is_current,
            is_serving: is_current && status == InstanceStatus::Running,
            href: hostname.as_deref().map(|h| links.href(h)),
            hostname,
            container_name: i.container_name.clone().unwrap_or_default(),
            host_port: i.host_port,
            exit_code: i.exit_code,
            can_stop: status == InstanceStatus::Running,
            can_start: matches!(status, InstanceStatus::Stopped | InstanceStatus::Failed),
            can_restart: matches!(status, InstanceStatus::Running | InstanceStatus::Stopped),
            // Removing the running instance a stage routes to is refused: stop it first.
            can_remove: match status {
                InstanceStatus::Removing | InstanceStatus::Deploying | InstanceStatus::Pending => false,
                InstanceStatus::Running => !is_current,
                _ => true,
            },
        }
    }
}

/// A deployment row.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub id: i64,
    pub stage_id: i64,
    pub instance_id: Option<i64>,
    pub tag: String,
    /// The whole digest, shown on hover; empty when unknown.
    pub digest: String,
    pub digest_short: String,
    pub trigger: String,
    pub status: String,
    pub status_class: &'static str,
    pub error: Option<String>,
    pub actor: String,
    pub started: When,
    /// `12.3 s`; empty while running.
    pub duration: String,
}

impl DeploymentView {
    pub fn new(d: &Deployment, now: DateTime<Utc>) -> Self {
        let duration = d.finished_at.map_or_else(String::new, |end| {
            let ms = (end - d.started_at).num_milliseconds().max(0);
            format!("{:.1} s", ms as f64 / 1000.0)
        });
        Self {
            id: d.id,
            stage_id: d.stage_id,
            instance_id: d.instance_id,
            tag: d.image_tag.clone(),
            digest: d.image_digest.clone().unwrap_or_default(),
            digest_short: short_digest(d.image_digest.as_deref()),
            trigger: d.trigger.to_string(),
            status: d.status.to_string(),
            status_class: deployment_status_class(d.status),
            error: d.error.clone(),
            actor: d.actor.clone().unwrap_or_default(),
            started: When::new(d.started_at, now),
            duration,
        }
    }
}

/// A digest automatic deploys skip on a stage, with why, for the stage page's retry action.
pub struct BlockedDigestView {
    pub tag: String,
    pub digest: String,
    pub digest_short: String,
    pub error: String,
    pub failed: When,
}

impl BlockedDigestView {
    pub fn new(failed: &FailedDigest, now: DateTime<Utc>) -> Self {
        Self {
            tag: failed.image_tag.clone(),
            digest: failed.digest.clone(),
            digest_short: failed.digest.get(..19).unwrap_or(&failed.digest).to_owned(),
            error: failed.error.clone(),
            failed: When::new(failed.failed_at, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn times_read_as_rough_durations() {
        let now = Utc::now();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - TimeDelta::seconds(42), now), "42 s ago");
        assert_eq!(ago(now - TimeDelta::minutes(5), now), "5 min ago");
        assert_eq!(ago(now - TimeDelta::hours(3), now), "3 h ago");
        assert_eq!(ago(now - TimeDelta::days(1), now), "1 day ago");
        assert_eq!(ago(now - TimeDelta::days(9), now), "9 days ago");
        assert_eq!(ago(now + TimeDelta::minutes(2), now), "in 2 min");
    }

    #[test]
    fn hostname_links_carry_the_proxy_port_unless_it_is_the_default() {
        assert_eq!(
            ProxyLinks::http(80).href("shop.example.test"),
            "http://shop.example.test/"
        );
        assert_eq!(
            ProxyLinks::http(8000).href("shop.example.test"),
            "http://shop.example.test:8000/"
        );
    }

    #[test]
    fn hostname_links_use_https_when_a_certificate_covers_the_name_or_http_redirects() {
        let links =
            ProxyLinks::http(8000).with_https(443, ["Secure.Example.Test", "*.wild.example.test"], false);
        assert_eq!(links.href("secure.example.test"), "https://secure.example.test/");
        assert_eq!(
            links.href("app.wild.example.test"),
            "https://app.wild.example.test/"
        );
        // A wildcard covers one label, as the listener's SNI choice does.
        assert_eq!(
            links.href("a.b.wild.example.test"),
            "http://a.b.wild.example.test:8000/"
        );
        assert_eq!(links.href("wild.example.test"), "http://wild.example.test:8000/");
        assert_eq!(
            links.href("plain.example.test"),
            "http://plain.example.test:8000/"
        );

        let redirecting = ProxyLinks::http(80).with_https(8443, ["secure.example.test"], true);
        assert_eq!(
            redirecting.href("plain.example.test"),
            "https://plain.example.test:8443/"
        );
    }

    #[test]
    fn digests_are_shortened_like_docker_does() {
        let digest = format!("sha256:{}", "4f53c1".repeat(11));
        assert_eq!(short_digest(Some(&digest)), "4f53c14f53c1");
        assert_eq!(short_digest(None), "");
    }
}
