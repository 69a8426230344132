//! Planning for per-tag stages (`glob:` / `regex:` policies, SPEC §2): every matching tag gets
//! its own instance. Pure functions over the registry's tags and the stage's instances, so the
//! rules are unit-tested without Docker:
//!
//! - a matching tag is deployed when it has never had an instance, or when its digest differs
//!   from the one its newest instance runs (a push to `pr-1` replaces `pr-1`'s instance);
//!   digests that failed before are skipped by automatic syncs;
//! - a tag whose newest instance already has the registry's digest is left alone, whatever that
//!   instance's status: an instance a user stopped, or one stopped to respect `max_instances`,
//!   is not brought back until a new digest is pushed — otherwise the cap would evict and
//!   redeploy tags in a loop, and a user could never stop a preview;
//! - a running instance whose tag is gone from the registry (or no longer matches the policy)
//!   is stopped;
//! - beyond `max_instances` running instances, the oldest are stopped.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::image_ref::Digest;
use crate::domain::instance::{Instance, InstanceStatus};
use crate::domain::tag_policy::TagPolicy;

/// What a sync of a per-tag stage does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PerTagPlan {
    /// Tags to deploy, in tag order.
    pub deploy: Vec<(String, Digest)>,
    /// Running instances whose tag is gone from the registry or no longer matches the policy.
    pub gone: Vec<i64>,
}

/// Plans a sync. `tags` are the registry's tags with their digests (any order, possibly tags the
/// policy does not match); `instances` are the stage's; `skipped` holds digests not to deploy
/// (failed before, for an automatic sync).
pub(crate) fn plan_per_tag(
    policy: &TagPolicy,
    tags: &[(String, Digest)],
    instances: &[Instance],
    skipped: &HashSet<String>,
) -> PerTagPlan {
    let wanted: BTreeMap<&str, &Digest> = tags
        .iter()
        .filter(|(tag, _)| policy.matches(tag))
        .map(|(tag, digest)| (tag.as_str(), digest))
        .collect();
    let mut newest: HashMap<&str, &Instance> = HashMap::new();
    for instance in instances {
        let entry = newest.entry(instance.image_tag.as_str()).or_insert(instance);
        if instance.id > entry.id {
            *entry = instance;
        }
    }
    let deploy = wanted
        .iter()
        .filter(|(tag, digest)| {
            let current = newest.get(*tag).and_then(|i| i.image_digest.as_deref());
            current != Some(digest.as_str()) && !skipped.contains(digest.as_str())
        })
        .map(|(tag, digest)| ((*tag).to_owned(), (*digest).clone()))
        .collect();
    let gone = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running && !wanted.contains_key(i.image_tag.as_str()))
        .map(|i| i.id)
        .collect();
    PerTagPlan { deploy, gone }
}

/// The running instances to stop so that at most `max` run: the oldest (lowest id) first.
pub(crate) fn over_capacity(instances: &[Instance], max: u32) -> Vec<i64> {
    let mut running: Vec<i64> = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .map(|i| i.id)
        .collect();
    running.sort_unstable();
    let excess = running.len().saturating_sub(max as usize);
    running.truncate(excess);
    running
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("a digest")
    }

    fn instance(id: i64, tag: &str, d: u8, status: InstanceStatus) -> Instance {
        Instance {
            id,
            project_id: 1,
            project_name: "shop".into(),
            stage_id: 1,
            stage_name: "preview".into(),
            image_tag: tag.into(),
            image_digest: Some(digest(d).to_string()),
            container_id: None,
            container_name: None,
            status,
            is_current: false,
            host_port: None,
            hostname: None,
            exit_code: None,
            created_at: Utc::now(),
            started_at: None,
            last_alive_at: None,
            stopped_at: None,
            stale_since: None,
            config_revision: 1,
        }
    }

    fn policy() -> TagPolicy {
        TagPolicy::parse("glob:pr-*").expect("a policy")
    }

    fn tags(list: &[(&str, u8)]) -> Vec<(String, Digest)> {
        list.iter().map(|(t, d)| ((*t).to_owned(), digest(*d))).collect()
    }

    #[test]
    fn new_matching_tags_are_deployed_and_others_ignored() {
        let plan = plan_per_tag(
            &policy(),
            &tags(&[("pr-2", 2), ("main", 9), ("pr-1", 1)]),
            &[],
            &HashSet::new(),
        );
        assert_eq!(plan.deploy, tags(&[("pr-1", 1), ("pr-2", 2)]));
        assert!(plan.gone.is_empty());
    }

    #[test]
    fn a_changed_digest_is_redeployed_and_an_unchanged_one_left_alone() {
        let instances = [
            instance(1, "pr-1", 1, InstanceStatus::Running),
            instance(2, "pr-2", 2, InstanceStatus::Running),
        ];
        let plan = plan_per_tag(
            &policy(),
            &tags(&[("pr-1", 1), ("pr-2", 3)]),
            &instances,
            &HashSet::new(),
        );
        assert_eq!(plan.deploy, tags(&[("pr-2", 3)]));
    }

    #[test]
    fn the_newest_instance_of_a_tag_decides() {
        // pr-1 was deployed with digest 1, then replaced by digest 2 (now running).
        let instances = [
            instance(1, "pr-1", 1, InstanceStatus::Stopped),
            instance(2, "pr-1", 2, InstanceStatus::Running),
        ];
        let plan = plan_per_tag(&policy(), &tags(&[("pr-1", 2)]), &instances, &HashSet::new());
        assert!(plan.deploy.is_empty());
    }

    #[test]
    fn a_stopped_instance_with_the_same_digest_is_not_brought_back() {
        let instances = [instance(1, "pr-1", 1, InstanceStatus::Stopped)];
        let plan = plan_per_tag(&policy(), &tags(&[("pr-1", 1)]), &instances, &HashSet::new());
        assert!(plan.deploy.is_empty());
        let plan = plan_per_tag(&policy(), &tags(&[("pr-1", 2)]), &instances, &HashSet::new());
        assert_eq!(plan.deploy, tags(&[("pr-1", 2)]));
    }

    #[test]
    fn failed_digests_are_skipped() {
        let skipped = HashSet::from([digest(2).to_string()]);
        let instances = [instance(1, "pr-1", 1, InstanceStatus::Running)];
        let plan = plan_per_tag(
            &policy(),
            &tags(&[("pr-1", 2), ("pr-3", 3)]),
            &instances,
            &skipped,
        );
        assert_eq!(plan.deploy, tags(&[("pr-3", 3)]));
    }

    #[test]
    fn running_instances_of_vanished_or_unmatched_tags_are_gone() {
        let instances = [
            instance(1, "pr-1", 1, InstanceStatus::Running),
            instance(2, "pr-2", 2, InstanceStatus::Running),
            instance(3, "pr-3", 3, InstanceStatus::Stopped),
            instance(4, "main", 4, InstanceStatus::Running),
        ];
        let plan = plan_per_tag(&policy(), &tags(&[("pr-2", 2)]), &instances, &HashSet::new());
        assert_eq!(plan.gone, vec![1, 4]);
        assert!(plan.deploy.is_empty());
    }

    #[test]
    fn the_oldest_running_instances_beyond_the_cap_are_stopped() {
        let instances = [
            instance(5, "pr-5", 5, InstanceStatus::Running),
            instance(2, "pr-2", 2, InstanceStatus::Running),
            instance(3, "pr-3", 3, InstanceStatus::Stopped),
            instance(4, "pr-4", 4, InstanceStatus::Running),
        ];
        assert_eq!(over_capacity(&instances, 1), vec![2, 4]);
        assert_eq!(over_capacity(&instances, 3), Vec::<i64>::new());
        assert_eq!(over_capacity(&instances, 0), vec![2, 4, 5]);
    }
}
