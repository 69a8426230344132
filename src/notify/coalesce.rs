//! Bursts coalesce (pure): the events published within one intake window are matched against
//! every enabled channel's rule, and for each channel the matching events of the same *kind*
//! (or, for events without a kind, the same source) become ONE message. A stale scan that finds
//! 40 instances publishes 40 `stale_found` warnings at once: one message per channel, not 40.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::domain::event::{Event, EventKind, Source};
use crate::domain::notification::{Channel, OutboxMessage};

/// What events are grouped by within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Kind(EventKind),
    Source(&'static str),
}

fn group_key(event: &Event) -> GroupKey {
    match event.kind() {
        Some(kind) => GroupKey::Kind(kind),
        None => GroupKey::Source(Source::as_str(event.source)),
    }
}

/// A message to queue: the channel, the events it carries (at most
/// [`OutboxMessage::MAX_EVENTS`], in publishing order) and how many the burst had.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub channel_id: i64,
    pub events: Vec<Event>,
    pub event_count: u32,
}

/// The messages for one window's `events` (in publishing order) and the `channels` (disabled
/// ones are skipped): per channel, one message per group of matching events, groups in the
/// order their first event was published.
pub fn plan(channels: &[Channel], events: &[Arc<Event>]) -> Vec<Planned> {
    let mut planned = Vec::new();
    for channel in channels.iter().filter(|c| c.enabled) {
        // Group by key, remembering where each group's first event came, to keep the order.
        let mut groups: BTreeMap<GroupKey, (usize, Vec<&Event>)> = BTreeMap::new();
        for (position, event) in events.iter().enumerate() {
            if channel.rule.matches(event) {
                groups
                    .entry(group_key(event))
                    .or_insert_with(|| (position, Vec::new()))
                    .1
                    .push(event);
            }
        }
        let mut groups: Vec<(usize, Vec<&Event>)> = groups.into_values().collect();
        groups.sort_by_key(|(first, _)| *first);
        for (_, group) in groups {
            planned.push(Planned {
                channel_id: channel.id,
                event_count: u32::try_from(group.len()).unwrap_or(u32::MAX),
                events: group
                    .into_iter()
                    .take(OutboxMessage::MAX_EVENTS)
                    .cloned()
                    .collect(),
            });
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::event::Severity;
    use crate::domain::notification::{ChannelSettings, NotificationRule};

    fn channel(id: i64, rule: NotificationRule, enabled: bool) -> Channel {
        Channel {
            id,
            name: format!("c{id}"),
            kind: crate::domain::notification::ChannelKind::Webhook,
            enabled,
            settings: ChannelSettings::Webhook,
            secret_keys: vec!["url".into()],
            rule,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn event(n: i64, severity: Severity, source: Source, kind: Option<EventKind>) -> Arc<Event> {
        let mut details = serde_json::Map::new();
        if let Some(kind) = kind {
            details.insert("kind".into(), kind.as_str().into());
        }
        Arc::new(Event {
            id: Some(n),
            ts: Utc::now(),
            severity,
            source,
            message: format!("e{n}"),
            project_id: Some(1),
            stage_id: None,
            instance_id: None,
            details,
        })
    }

    #[test]
    fn forty_stale_instances_found_in_one_scan_make_one_message_per_channel() {
        let events: Vec<Arc<Event>> = (0..40)
            .map(|n| event(n, Severity::Warn, Source::Stale, Some(EventKind::StaleFound)))
            .collect();
        let channels = [
            channel(1, NotificationRule::default(), true),
            channel(2, NotificationRule::default(), true),
        ];
        let planned = plan(&channels, &events);
        assert_eq!(planned.len(), 2);
        assert!(
            planned
                .iter()
                .all(|p| p.event_count == 40 && p.events.len() == 40)
        );
    }

    #[test]
    fn different_kinds_in_one_window_are_separate_messages_in_publishing_order() {
        let events = vec![
            event(
                1,
                Severity::Error,
                Source::Deployer,
                Some(EventKind::DeployFailed),
            ),
            event(2, Severity::Warn, Source::Stale, Some(EventKind::StaleFound)),
            event(
                3,
                Severity::Error,
                Source::Deployer,
                Some(EventKind::DeployFailed),
            ),
            event(4, Severity::Warn, Source::Docker, None),
            event(
                5,
                Severity::Info,
                Source::Deployer,
                Some(EventKind::DeploySucceeded),
            ),
        ];
        let planned = plan(&[channel(1, NotificationRule::default(), true)], &events);
        let ids: Vec<Vec<i64>> = planned
            .iter()
            .map(|p| p.events.iter().map(|e| e.id.unwrap()).collect())
            .collect();
        assert_eq!(
            ids,
            vec![vec![1, 3], vec![2], vec![4]],
            "the info event is below the default rule"
        );
    }

    #[test]
    fn disabled_channels_and_unmatched_events_queue_nothing() {
        let events = vec![event(1, Severity::Error, Source::Deployer, None)];
        let only_stale = NotificationRule {
            kinds: vec![EventKind::StaleFound],
            ..NotificationRule::default()
        };
        assert!(
            plan(
                &[
                    channel(1, NotificationRule::default(), false),
                    channel(2, only_stale, true)
                ],
                &events
            )
            .is_empty()
        );
    }

    #[test]
    fn a_huge_burst_carries_the_first_hundred_events_and_counts_them_all() {
        let events: Vec<Arc<Event>> = (0..1000)
            .map(|n| event(n, Severity::Warn, Source::Stale, Some(EventKind::StaleFound)))
            .collect();
        let planned = plan(&[channel(1, NotificationRule::default(), true)], &events);
        assert_eq!(planned.len(), 1);
        assert_eq!((planned[0].events.len(), planned[0].event_count), (100, 1000));
    }
}
