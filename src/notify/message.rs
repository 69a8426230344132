//! What a notification says, and how each channel kind wants it said — pure functions, no IO.
//! A [`Message`] is built from one event or a coalesced burst (a title, one line per event, the
//! worst severity); [`render`] turns it into the exact request a channel sends ([`Outgoing`]):
//! the JSON of a webhook (signed when it has a secret), Slack's `{"text"}`, Discord's
//! `{"content"}`, ntfy's text with `Title`/`Priority`/`Tags`, Gotify's message, or a mail.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::domain::event::{Event, Severity};
use crate::domain::notification::{ChannelSecrets, ChannelSettings, EmailSettings};

/// The header that carries a webhook body's HMAC-SHA256 signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Docker-Watcher-Signature";
/// The header that names the message (the outbox id; `test-…` for tests), so a receiver can
/// drop a duplicate after a retry whose answer was lost.
pub const DELIVERY_HEADER: &str = "X-Docker-Watcher-Delivery";

/// Lines shown in chat messages (Slack, Discord, ntfy, Gotify) before "… and N more".
const CHAT_LINES: usize = 20;
/// Discord refuses content longer than this many characters.
const DISCORD_MAX_CHARS: usize = 2000;

/// One notification: an event, a burst of events, or a test.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Names the message for receivers that de-duplicate (the outbox id, or `test-…`).
    pub delivery_id: String,
    pub title: String,
    pub severity: Severity,
    /// The events carried in full (a burst keeps at most the first hundred).
    pub events: Vec<Event>,
    /// How many events the burst had.
    pub event_count: u32,
    pub is_test: bool,
}

impl Message {
    /// The message for `events` (not empty), of a burst of `event_count`.
    pub fn from_events(delivery_id: impl Into<String>, events: Vec<Event>, event_count: u32) -> Self {
        let severity = events.iter().map(|e| e.severity).max().unwrap_or(Severity::Info);
        let count = event_count.max(u32::try_from(events.len()).unwrap_or(u32::MAX));
        let what = events
            .first()
            .map_or_else(String::new, |first| match first.kind() {
                Some(kind) => kind.label().to_owned(),
                None => format!("{} event", first.source),
            });
        let title = if count <= 1 {
            let first = events.first().map(|e| e.message.as_str()).unwrap_or_default();
            format!("docker-watcher {severity}: {what} — {}", shorten(first, 120))
        } else {
            format!("docker-watcher {severity}: {count} × {what}")
        };
        Self {
            delivery_id: delivery_id.into(),
            title,
            severity,
            events,
            event_count: count,
            is_test: false,
        }
    }

    /// The message "send test" delivers.
    pub fn test(delivery_id: impl Into<String>, channel_name: &str) -> Self {
        Self {
            delivery_id: delivery_id.into(),
            title: format!("docker-watcher test notification for channel '{channel_name}'"),
            severity: Severity::Info,
            events: Vec::new(),
            event_count: 0,
            is_test: true,
        }
    }

    /// The body text: one line per event (time, severity, message), at most `max_lines`, then
    /// how many more there were.
    pub fn text(&self, max_lines: usize) -> String {
        if self.is_test {
            return "This is a test: notifications from docker-watcher reach this channel.".to_owned();
        }
        let mut lines: Vec<String> = self
            .events
            .iter()
            .take(max_lines)
            .map(|e| {
                format!(
                    "{} [{}] {}",
                    e.ts.format("%Y-%m-%d %H:%M:%SZ"),
                    e.severity,
                    e.message
                )
            })
            .collect();
        let shown = u32::try_from(lines.len()).unwrap_or(u32::MAX);
        if self.event_count > shown {
            lines.push(format!("… and {} more", self.event_count - shown));
        }
        lines.join("\n")
    }
}

/// What a channel sends for a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A POST.
    Http {
        url: String,
        headers: Vec<(&'static str, String)>,
        content_type: &'static str,
        body: Vec<u8>,
    },
    Email {
        settings: EmailSettings,
        password: Option<String>,
        subject: String,
        body: String,
    },
}

/// Why a message cannot be rendered for a channel: its configuration lacks a secret (the store
/// was edited by hand, or the secret key changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the channel's {0} is not set")]
pub struct MissingSecret(pub &'static str);

/// The request `settings`' channel sends for `message`.
pub fn render(
    message: &Message,
    settings: &ChannelSettings,
    secrets: &ChannelSecrets,
) -> Result<Outgoing, MissingSecret> {
    let url = || {
        secrets
            .url()
            .map(|u| u.as_str().to_owned())
            .ok_or(MissingSecret("url"))
    };
    let outgoing = match settings {
        ChannelSettings::Webhook => {
            let body = webhook_body(message);
            let mut headers = vec![(DELIVERY_HEADER, message.delivery_id.clone())];
            if let Some(secret) = secrets.get("signing_secret") {
                headers.push((SIGNATURE_HEADER, signature(secret.as_bytes(), &body)));
            }
            Outgoing::Http {
                url: url()?,
                headers,
                content_type: "application/json",
                body,
            }
        }
        ChannelSettings::Slack => Outgoing::Http {
            url: url()?,
            headers: Vec::new(),
            content_type: "application/json",
            body: json!({ "text": format!("*{}*\n{}", message.title, message.text(CHAT_LINES)) })
                .to_string()
                .into_bytes(),
        },
        ChannelSettings::Discord => {
            let content = format!("**{}**\n{}", message.title, message.text(CHAT_LINES));
            Outgoing::Http {
                url: url()?,
                headers: Vec::new(),
                content_type: "application/json",
                body: json!({ "content": shorten(&content, DISCORD_MAX_CHARS) })
                    .to_string()
                    .into_bytes(),
            }
        }
        ChannelSettings::Ntfy(ntfy) => {
            let priority = ntfy.priority.unwrap_or(match message.severity {
                Severity::Error => 4,
                Severity::Warn => 3,
                Severity::Info => 2,
                Severity::Debug => 1,
            });
            let mut tags = vec![severity_tag(message.severity).to_owned()];
            tags.extend(ntfy.tags.iter().cloned());
            let mut headers = vec![
                ("Title", header_safe(&message.title)),
                ("Priority", priority.to_string()),
                ("Tags", tags.join(",")),
            ];
            if let Some(token) = secrets.get("token") {
                headers.push(("Authorization", format!("Bearer {token}")));
            }
            Outgoing::Http {
                url: url()?,
                headers,
                content_type: "text/plain; charset=utf-8",
                body: message.text(CHAT_LINES).into_bytes(),
            }
        }
        ChannelSettings::Gotify(gotify) => {
            let token = secrets.get("token").ok_or(MissingSecret("token"))?;
            let priority = gotify.priority.unwrap_or(match message.severity {
                Severity::Error => 8,
                Severity::Warn => 5,
                Severity::Info => 2,
                Severity::Debug => 0,
            });
            let mut url =
                url::Url::parse(&format!("{}/message", gotify.url)).map_err(|_| MissingSecret("url"))?;
            url.query_pairs_mut().append_pair("token", token);
            Outgoing::Http {
                url: url.to_string(),
                headers: Vec::new(),
                content_type: "application/json",
                body: json!({
                    "title": message.title,
                    "message": message.text(CHAT_LINES),
                    "priority": priority,
                })
                .to_string()
                .into_bytes(),
            }
        }
        ChannelSettings::Email(email) => Outgoing::Email {
            settings: email.clone(),
            password: secrets.get("password").map(str::to_owned),
            subject: message.title.clone(),
            body: format!(
                "{}\n\n-- \nSent by docker-watcher. Every event is in its event log.\n",
                message.text(crate::domain::notification::OutboxMessage::MAX_EVENTS)
            ),
        },
    };
    Ok(outgoing)
}

/// The JSON a webhook channel posts: the message, and its events as the API shows them.
fn webhook_body(message: &Message) -> Vec<u8> {
    json!({
        "delivery": message.delivery_id,
        "title": message.title,
        "severity": message.severity,
        "test": message.is_test,
        "count": message.event_count,
        "truncated": (message.events.len() as u64) < u64::from(message.event_count),
        "text": message.text(CHAT_LINES),
        "events": message.events,
    })
    .to_string()
    .into_bytes()
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn severity_tag(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "rotating_light",
        Severity::Warn => "warning",
        Severity::Info => "information_source",
        Severity::Debug => "mag",
    }
}

/// A header value: visible ASCII only (anything else becomes `?`), at most 250 characters.
fn header_safe(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' })
        .collect();
    shorten(&safe, 250)
}

/// `text` cut to `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::event::{EventKind, Source};
    use crate::domain::notification::{ChannelKind, GotifySettings, NtfySettings, SecretsPatch};

    fn stale(n: i64) -> Event {
        let mut details = serde_json::Map::new();
        details.insert("kind".into(), EventKind::StaleFound.as_str().into());
        Event {
            id: Some(n),
            ts: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
            severity: Severity::Warn,
            source: Source::Stale,
            message: format!("shop/prod v{n}: instance {n} is stale"),
            project_id: Some(1),
            stage_id: Some(2),
            instance_id: Some(n),
            details,
        }
    }

    fn secrets(kind: ChannelKind, pairs: &[(&str, &str)]) -> ChannelSecrets {
        let patch: SecretsPatch = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect();
        ChannelSecrets::default().patched(kind, &patch).unwrap()
    }

    #[test]
    fn a_burst_is_one_message_that_counts_its_events_and_names_their_kind() {
        let events: Vec<Event> = (1..=40).map(stale).collect();
        let message = Message::from_events("7", events, 40);
        assert_eq!(message.title, "docker-watcher warn: 40 × stale found");
        let text = message.text(20);
        assert_eq!(text.lines().count(), 21);
        assert!(text.ends_with("… and 20 more"), "{text}");
        let single = Message::from_events("8", vec![stale(1)], 1);
        assert_eq!(
            single.title,
            "docker-watcher warn: stale found — shop/prod v1: instance 1 is stale"
        );
    }

    #[test]
    fn a_signed_webhook_carries_the_hmac_of_its_exact_body() {
        let message = Message::from_events("7", vec![stale(1)], 1);
        let secrets = secrets(
            ChannelKind::Webhook,
            &[("url", "http://127.0.0.1:9/hook"), ("signing_secret", "k")],
        );
        let Outgoing::Http {
            headers, body, url, ..
        } = render(&message, &ChannelSettings::Webhook, &secrets).unwrap()
        else {
            panic!("an HTTP request")
        };
        assert_eq!(url, "http://127.0.0.1:9/hook");
        let signed = headers
            .iter()
            .find(|(h, _)| *h == SIGNATURE_HEADER)
            .expect("a signature")
            .1
            .clone();
        assert_eq!(signed, signature(b"k", &body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["events"][0]["details"]["kind"], "stale_found");
        assert_eq!(json["count"], 1);
    }

    #[test]
    fn hmac_sha256_matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_chat_kind_gets_its_own_format() {
        let message = Message::from_events("7", vec![stale(1)], 1);
        let url = [("url", "https://chat.example.com/hook")];
        let body =
            |settings: &ChannelSettings, secrets: &ChannelSecrets| match render(&message, settings, secrets)
                .unwrap()
            {
                Outgoing::Http {
                    body, headers, url, ..
                } => (String::from_utf8(body).unwrap(), headers, url),
                Outgoing::Email { .. } => panic!("an HTTP request"),
            };
        let (slack, ..) = body(&ChannelSettings::Slack, &secrets(ChannelKind::Slack, &url));
        assert!(
            serde_json::from_str::<serde_json::Value>(&slack).unwrap()["text"]
                .as_str()
                .unwrap()
                .starts_with("*docker-watcher warn")
        );
        let (discord, ..) = body(&ChannelSettings::Discord, &secrets(ChannelKind::Discord, &url));
        assert!(
            serde_json::from_str::<serde_json::Value>(&discord).unwrap()["content"]
                .as_str()
                .unwrap()
                .starts_with("**docker-watcher warn")
        );
        let (text, headers, _) = body(
            &ChannelSettings::Ntfy(NtfySettings {
                priority: None,
                tags: vec!["whale".into()],
            }),
            &secrets(
                ChannelKind::Ntfy,
                &[("url", "https://ntfy.example.com/ops"), ("token", "tk")],
            ),
        );
        assert!(text.contains("instance 1 is stale"));
        assert!(headers.contains(&("Priority", "3".to_owned())));
        assert!(headers.contains(&("Tags", "warning,whale".to_owned())));
        assert!(headers.contains(&("Authorization", "Bearer tk".to_owned())));
        let (gotify, _, url) = body(
            &ChannelSettings::Gotify(GotifySettings {
                url: "https://g.example.com".into(),
                priority: None,
            }),
            &secrets(ChannelKind::Gotify, &[("token", "a b")]),
        );
        assert_eq!(url, "https://g.example.com/message?token=a+b");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&gotify).unwrap()["priority"],
            5
        );
    }

    #[test]
    fn header_values_stay_visible_ascii_and_discord_content_stays_short() {
        assert_eq!(header_safe("a → b\n"), "a ? b?");
        let long = "x".repeat(5000);
        assert_eq!(shorten(&long, 2000).chars().count(), 2000);
    }
}
