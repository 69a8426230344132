//! Which deploy a stage needs, decided without IO: given what one poll found in the registry
//! (the tag list and the digests of the tags the policy needs), what the stage runs now, the
//! digests whose deploy failed and when each digest was first seen, [`plan_stage`] answers with
//! one [`Decision`]. The poller gathers the inputs and carries the decision out; everything that
//! can be decided here is, so it is tested here.
//!
//! The rules, in the order they apply to a *single* stage (`tag:`, `semver:`):
//! 1. No listed tag satisfies the policy: [`Decision::NoMatchingTag`]; what runs keeps running.
//! 2. Monitor-only (`auto_deploy: false`): [`Decision::Available`]; nothing is deployed.
//! 3. The current instance runs the selected tag at the selected digest: [`Decision::UpToDate`].
//!    A new tag with the same digest (a re-tag) is a deploy, so the instance names the tag the
//!    policy picked.
//! 4. The digest's deploy failed before: [`Decision::SkipFailed`] until a newer digest appears
//!    (or a user deploys it by hand, which clears the record).
//! 5. The digest was first seen less than `min_release_age` ago: [`Decision::WaitReleaseAge`].
//! 6. Otherwise [`Decision::Deploy`].
//!
//! A *per-tag* stage (`glob:`, `regex:`) applies rules 4 and 5 to each matching tag. The result
//! is the full list of what the stage should run ([`PerTagPlan::desired`]), because the deployer
//! stops instances of tags missing from it: a tag held back by a failed or too young digest is
//! listed with the digest its instance already runs, or left out when it has none. The list is
//! only worth handing over when a tag is new or changed or an instance's tag is gone
//! ([`Decision::PerTag`]); otherwise the stage is up to date, waiting, or skipping.
//!
//! Only the tags a policy selects need a digest (a manifest `HEAD` each): [`tags_to_resolve`]
//! names them — the one followed tag, the highest matching version, or every matching tag.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::domain::duration::HumanDuration;
use crate::domain::image_ref::Digest;
use crate::domain::tag_policy::{PolicyMode, TagPolicy};

/// A tag and the digest it pointed at when it was polled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagDigest {
    pub tag: String,
    pub digest: Digest,
}

impl TagDigest {
    pub fn new(tag: impl Into<String>, digest: Digest) -> Self {
        Self {
            tag: tag.into(),
            digest,
        }
    }
}

/// What a single stage runs now: its current instance's tag and digest (the digest is unknown
/// for an instance recorded without one, which never counts as up to date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentInstance {
    pub tag: String,
    pub digest: Option<Digest>,
}

/// The newest instance of one tag of a per-tag stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInstance {
    pub digest: Option<Digest>,
    /// Pending, deploying or running: an instance the deployer would stop if its tag went away.
    pub active: bool,
}

/// Everything [`plan_stage`] decides from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    pub policy: &'a TagPolicy,
    pub auto_deploy: bool,
    pub min_release_age: Option<HumanDuration>,
    /// The repository's tags, minus any that vanished between the listing and their `HEAD`.
    pub tags: &'a [String],
    /// The digests of the tags [`tags_to_resolve`] named (others may be present too).
    pub digests: &'a BTreeMap<String, Digest>,
    /// Single stages: the current instance, if any.
    pub current: Option<&'a CurrentInstance>,
    /// Per-tag stages: the newest instance of each tag.
    pub per_tag: &'a BTreeMap<String, TagInstance>,
    /// Digests whose deploy failed on this stage.
    pub failed: &'a BTreeSet<Digest>,
    /// When this stage first saw each digest; a digest missing here is seen for the first time
    /// now.
    pub first_seen: &'a BTreeMap<Digest, DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Why a per-tag stage keeps a tag at its current digest (or does not start it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    Failed,
    YoungerThanReleaseAge { until: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub target: TagDigest,
    pub reason: HoldReason,
}

/// The work a per-tag stage needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerTagPlan {
    /// Every tag the stage should run, with the digest to run, sorted by tag: what the deployer
    /// syncs the stage to.
    pub desired: Vec<TagDigest>,
    /// The tags among `desired` that are new or whose digest changed.
    pub deploy: Vec<TagDigest>,
    /// Tags with an active instance that no longer match a listed tag.
    pub gone: Vec<String>,
    /// Tags kept back, and why.
    pub held: Vec<Held>,
}

impl PerTagPlan {
    /// Whether handing `desired` to the deployer would change anything.
    pub fn needs_sync(&self) -> bool {
        !self.deploy.is_empty() || !self.gone.is_empty()
    }
}

/// What a poll of one stage leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No listed tag satisfies the policy (or the repository has no tags yet).
    NoMatchingTag,
    /// The stage runs what the policy selects.
    UpToDate,
    /// Deploy this tag at this digest (single stages).
    Deploy(TagDigest),
    /// Sync a per-tag stage to [`PerTagPlan::desired`].
    PerTag(PerTagPlan),
    /// Monitor-only: record the tag as available and deploy nothing. `is_update` when the stage
    /// does not already run it.
    Available { target: TagDigest, is_update: bool },
    /// The digest is deployed once it has been seen for `min_release_age`, at `until`.
    WaitReleaseAge { target: TagDigest, until: DateTime<Utc> },
    /// The digest's deploy failed before; automatic deploys skip it.
    SkipFailed(TagDigest),
}

impl Decision {
    /// The decision's name in the API (`deploy`, `up_to_date`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoMatchingTag => "no_matching_tag",
            Self::UpToDate => "up_to_date",
            Self::Deploy(_) => "deploy",
            Self::PerTag(_) => "per_tag",
            Self::Available { .. } => "available",
            Self::WaitReleaseAge { .. } => "wait_release_age",
            Self::SkipFailed(_) => "skip_failed",
        }
    }
}

/// A stage's decision and the tag it selected: the followed or highest matching tag of a single
/// stage; for a per-tag stage, the matching tag whose digest appeared last (what `available_tag`
/// shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    pub selected: Option<TagDigest>,
    pub decision: Decision,
}

/// The tags whose digests a policy needs from `tags`: for `tag:` the followed tag if listed, for
/// `semver:` the highest matching version, for `glob:`/`regex:` every matching tag (sorted).
pub fn tags_to_resolve<'a>(policy: &TagPolicy, tags: &'a [String]) -> Vec<&'a str> {
    policy.select_all(tags)
}

/// Decides what a stage needs; see the module documentation for the rules.
pub fn plan_stage(input: &PlanInput<'_>) -> StagePlan {
    match input.policy.mode() {
        PolicyMode::Single => plan_single(input),
        PolicyMode::PerTag => plan_per_tag(input),
    }
}

fn plan_single(input: &PlanInput<'_>) -> StagePlan {
    let Some(target) = input
        .policy
        .select_single(input.tags)
        .and_then(|tag| resolved(input, tag))
    else {
        return StagePlan {
            selected: None,
            decision: Decision::NoMatchingTag,
        };
    };
    let runs_target = input
        .current
        .is_some_and(|c| c.tag == target.tag && c.digest.as_ref() == Some(&target.digest));
    let decision = if !input.auto_deploy {
        let runs_digest = input
            .current
            .is_some_and(|c| c.digest.as_ref() == Some(&target.digest));
        Decision::Available {
            target: target.clone(),
            is_update: !runs_digest,
        }
    } else if runs_target {
        Decision::UpToDate
    } else {
        match hold_reason(input, &target.digest) {
            Some(HoldReason::Failed) => Decision::SkipFailed(target.clone()),
            Some(HoldReason::YoungerThanReleaseAge { until }) => Decision::WaitReleaseAge {
                target: target.clone(),
                until,
            },
            None => Decision::Deploy(target.clone()),
        }
    };
    StagePlan {
        selected: Some(target),
        decision,
    }
}

fn plan_per_tag(input: &PlanInput<'_>) -> StagePlan {
    let matching: Vec<TagDigest> = tags_to_resolve(input.policy, input.tags)
        .into_iter()
        .filter_map(|tag| resolved(input, tag))
        .collect();
    let selected = newest(input, &matching);
    if !input.auto_deploy {
        let decision = match &selected {
            None => Decision::NoMatchingTag,
            Some(target) => Decision::Available {
                target: target.clone(),
                is_update: input
                    .per_tag
                    .get(&target.tag)
                    .is_none_or(|i| i.digest.as_ref() != Some(&target.digest)),
            },
        };
        return StagePlan { selected, decision };
    }

    let mut plan = PerTagPlan::default();
    for target in &matching {
        let instance = input.per_tag.get(&target.tag);
        let running = instance.and_then(|i| i.digest.as_ref());
        if running == Some(&target.digest) {
            plan.desired.push(target.clone());
            continue;
        }
        match hold_reason(input, &target.digest) {
            Some(reason) => {
                if let Some(running) = running {
                    plan.desired.push(TagDigest::new(&target.tag, running.clone()));
                }
                plan.held.push(Held {
                    target: target.clone(),
                    reason,
                });
            }
            None => {
                plan.desired.push(target.clone());
                plan.deploy.push(target.clone());
            }
        }
    }
    let listed: BTreeSet<&str> = matching.iter().map(|t| t.tag.as_str()).collect();
    plan.gone = input
        .per_tag
        .iter()
        .filter(|(tag, instance)| instance.active && !listed.contains(tag.as_str()))
        .map(|(tag, _)| tag.clone())
        .collect();

    let decision = if plan.needs_sync() {
        Decision::PerTag(plan)
    } else if let Some((target, until)) = plan
        .held
        .iter()
        .filter_map(|h| match h.reason {
            HoldReason::YoungerThanReleaseAge { until } => Some((&h.target, until)),
            HoldReason::Failed => None,
        })
        .min_by_key(|(_, until)| *until)
    {
        Decision::WaitReleaseAge {
            target: target.clone(),
            until,
        }
    } else if let Some(held) = plan.held.first() {
        Decision::SkipFailed(held.target.clone())
    } else if matching.is_empty() {
        Decision::NoMatchingTag
    } else {
        Decision::UpToDate
    };
    StagePlan { selected, decision }
}

/// The tag with its digest, when the digest was resolved.
fn resolved(input: &PlanInput<'_>, tag: &str) -> Option<TagDigest> {
    input
        .digests
        .get(tag)
        .map(|digest| TagDigest::new(tag, digest.clone()))
}

fn first_seen(input: &PlanInput<'_>, digest: &Digest) -> DateTime<Utc> {
    input.first_seen.get(digest).copied().unwrap_or(input.now)
}

/// Why an automatic deploy of `digest` must wait, if it must.
fn hold_reason(input: &PlanInput<'_>, digest: &Digest) -> Option<HoldReason> {
    if input.failed.contains(digest) {
        return Some(HoldReason::Failed);
    }
    let age = input.min_release_age?;
    let until = first_seen(input, digest).checked_add_signed(age.as_chrono())?;
    (until > input.now).then_some(HoldReason::YoungerThanReleaseAge { until })
}

/// The target whose digest this stage saw last; ties go to the greater tag, so the choice is
/// stable from one poll to the next.
fn newest(input: &PlanInput<'_>, targets: &[TagDigest]) -> Option<TagDigest> {
    targets
        .iter()
        .max_by(|a, b| {
            first_seen(input, &a.digest)
                .cmp(&first_seen(input, &b.digest))
                .then_with(|| a.tag.cmp(&b.tag))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("a valid digest")
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time")
    }

    /// Owns the inputs so each test states only what differs.
    struct Case {
        policy: TagPolicy,
        auto_deploy: bool,
        min_release_age: Option<HumanDuration>,
        tags: Vec<String>,
        digests: BTreeMap<String, Digest>,
        current: Option<CurrentInstance>,
        per_tag: BTreeMap<String, TagInstance>,
        failed: BTreeSet<Digest>,
        first_seen: BTreeMap<Digest, DateTime<Utc>>,
        now: DateTime<Utc>,
    }

    impl Case {
        /// A policy over `tags`, each tag `(name, digest number)` resolved.
        fn new(policy: &str, tags: &[(&str, u8)]) -> Self {
            Self {
                policy: TagPolicy::parse(policy).expect("a valid policy"),
                auto_deploy: true,
                min_release_age: None,
                tags: tags.iter().map(|(t, _)| (*t).to_owned()).collect(),
                digests: tags.iter().map(|(t, d)| ((*t).to_owned(), digest(*d))).collect(),
                current: None,
                per_tag: BTreeMap::new(),
                failed: BTreeSet::new(),
                first_seen: BTreeMap::new(),
                now: t0(),
            }
        }

        fn monitor_only(mut self) -> Self {
            self.auto_deploy = false;
            self
        }

        fn running(mut self, tag: &str, d: u8) -> Self {
            self.current = Some(CurrentInstance {
                tag: tag.to_owned(),
                digest: Some(digest(d)),
            });
            self
        }

        fn instance(mut self, tag: &str, d: u8, active: bool) -> Self {
            self.per_tag.insert(
                tag.to_owned(),
                TagInstance {
                    digest: Some(digest(d)),
                    active,
                },
            );
            self
        }

        fn failed(mut self, d: u8) -> Self {
            self.failed.insert(digest(d));
            self
        }

        fn release_age(mut self, age: &str) -> Self {
            self.min_release_age = Some(HumanDuration::parse(age).expect("a valid duration"));
            self
        }

        fn seen(mut self, d: u8, secs_ago: i64) -> Self {
            self.first_seen
                .insert(digest(d), t0() - TimeDelta::seconds(secs_ago));
            self
        }

        fn plan(&self) -> StagePlan {
            plan_stage(&PlanInput {
                policy: &self.policy,
                auto_deploy: self.auto_deploy,
                min_release_age: self.min_release_age,
                tags: &self.tags,
                digests: &self.digests,
                current: self.current.as_ref(),
                per_tag: &self.per_tag,
                failed: &self.failed,
                first_seen: &self.first_seen,
                now: self.now,
            })
        }

        fn decision(&self) -> Decision {
            self.plan().decision
        }
    }

    fn target(tag: &str, d: u8) -> TagDigest {
        TagDigest::new(tag, digest(d))
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn a_followed_tag_needs_one_digest_and_semver_only_the_selected_one() {
        let listed = tags(&["v1", "v2", "latest", "1.0.0", "1.2.0", "2.0.0", "1.10.0"]);
        let policy = |p: &str| TagPolicy::parse(p).expect("a valid policy");
        assert_eq!(tags_to_resolve(&policy("tag:v1"), &listed), vec!["v1"]);
        assert!(tags_to_resolve(&policy("tag:v3"), &listed).is_empty());
        assert_eq!(tags_to_resolve(&policy("semver:^1"), &listed), vec!["1.10.0"]);
        assert!(tags_to_resolve(&policy("semver:^3"), &listed).is_empty());
    }

    #[test]
    fn glob_and_regex_policies_need_every_matching_tag_once() {
        let listed = tags(&["pr-2", "main", "pr-1", "pr-x", "pr-1"]);
        let glob = TagPolicy::parse("glob:pr-*").expect("a valid policy");
        assert_eq!(tags_to_resolve(&glob, &listed), vec!["pr-1", "pr-2", "pr-x"]);
        let regex = TagPolicy::parse(r"regex:pr-\d+").expect("a valid policy");
        assert_eq!(tags_to_resolve(&regex, &listed), vec!["pr-1", "pr-2"]);
    }

    #[test]
    fn a_new_stage_deploys_the_followed_tag() {
        let plan = Case::new("tag:v1", &[("v1", 1), ("v2", 2)]).plan();
        assert_eq!(plan.selected, Some(target("v1", 1)));
        assert_eq!(plan.decision, Decision::Deploy(target("v1", 1)));
    }

    #[test]
    fn a_stage_running_the_selected_digest_is_up_to_date() {
        assert_eq!(
            Case::new("tag:v1", &[("v1", 1)]).running("v1", 1).decision(),
            Decision::UpToDate
        );
    }

    #[test]
    fn a_new_digest_under_the_followed_tag_is_deployed() {
        assert_eq!(
            Case::new("tag:v1", &[("v1", 2)]).running("v1", 1).decision(),
            Decision::Deploy(target("v1", 2))
        );
    }

    #[test]
    fn an_instance_without_a_digest_is_never_up_to_date() {
        let mut case = Case::new("tag:v1", &[("v1", 1)]);
        case.current = Some(CurrentInstance {
            tag: "v1".into(),
            digest: None,
        });
        assert_eq!(case.decision(), Decision::Deploy(target("v1", 1)));
    }

    #[test]
    fn semver_deploys_the_highest_matching_version() {
        let case = Case::new(
            "semver:^1",
            &[("1.0.0", 1), ("1.2.0", 2), ("2.0.0", 3), ("1.10.0", 4)],
        )
        .running("1.2.0", 2);
        assert_eq!(case.decision(), Decision::Deploy(target("1.10.0", 4)));
    }

    #[test]
    fn a_retag_of_the_running_digest_is_deployed_under_the_new_tag() {
        let case = Case::new("semver:^1", &[("1.2.0", 2), ("1.3.0", 2)]).running("1.2.0", 2);
        assert_eq!(case.decision(), Decision::Deploy(target("1.3.0", 2)));
    }

    #[test]
    fn no_matching_tag_decides_nothing_and_selects_nothing() {
        let case = Case::new("tag:v9", &[("v1", 1)]).running("v1", 1);
        assert_eq!(
            case.plan(),
            StagePlan {
                selected: None,
                decision: Decision::NoMatchingTag
            }
        );
        assert_eq!(Case::new("semver:^2", &[]).decision(), Decision::NoMatchingTag);
    }

    #[test]
    fn a_selected_tag_without_a_resolved_digest_counts_as_absent() {
        let mut case = Case::new("tag:v1", &[("v1", 1)]);
        case.digests.clear();
        assert_eq!(case.decision(), Decision::NoMatchingTag);
    }

    #[test]
    fn a_failed_digest_is_skipped_until_a_newer_one_appears() {
        let case = Case::new("tag:v1", &[("v1", 2)]).running("v1", 1).failed(2);
        assert_eq!(case.decision(), Decision::SkipFailed(target("v1", 2)));
        let newer = Case::new("tag:v1", &[("v1", 3)]).running("v1", 1).failed(2);
        assert_eq!(newer.decision(), Decision::Deploy(target("v1", 3)));
    }

    #[test]
    fn a_failed_digest_that_runs_anyway_is_up_to_date_not_skipped() {
        let case = Case::new("tag:v1", &[("v1", 1)]).running("v1", 1).failed(1);
        assert_eq!(case.decision(), Decision::UpToDate);
    }

    #[test]
    fn a_young_digest_waits_for_the_release_age() {
        let case = Case::new("tag:v1", &[("v1", 2)])
            .running("v1", 1)
            .release_age("10m")
            .seen(2, 60);
        assert_eq!(
            case.decision(),
            Decision::WaitReleaseAge {
                target: target("v1", 2),
                until: t0() + TimeDelta::seconds(540),
            }
        );
    }

    #[test]
    fn a_digest_seen_for_the_release_age_is_deployed() {
        for secs_ago in [600, 3600] {
            let case = Case::new("tag:v1", &[("v1", 2)])
                .release_age("10m")
                .seen(2, secs_ago);
            assert_eq!(case.decision(), Decision::Deploy(target("v1", 2)), "{secs_ago}");
        }
    }

    #[test]
    fn a_digest_never_seen_before_waits_the_whole_release_age() {
        let case = Case::new("tag:v1", &[("v1", 2)]).release_age("3s");
        assert_eq!(
            case.decision(),
            Decision::WaitReleaseAge {
                target: target("v1", 2),
                until: t0() + TimeDelta::seconds(3),
            }
        );
    }

    #[test]
    fn a_failed_digest_is_reported_as_failed_even_while_young() {
        let case = Case::new("tag:v1", &[("v1", 2)]).release_age("1h").failed(2);
        assert_eq!(case.decision(), Decision::SkipFailed(target("v1", 2)));
    }

    #[test]
    fn a_monitor_only_stage_reports_what_is_available_and_deploys_nothing() {
        let fresh = Case::new("tag:v1", &[("v1", 1)]).monitor_only();
        assert_eq!(
            fresh.plan(),
            StagePlan {
                selected: Some(target("v1", 1)),
                decision: Decision::Available {
                    target: target("v1", 1),
                    is_update: true
                }
            }
        );
        let current = Case::new("tag:v1", &[("v1", 1)]).monitor_only().running("v1", 1);
        assert_eq!(
            current.decision(),
            Decision::Available {
                target: target("v1", 1),
                is_update: false
            }
        );
    }

    #[test]
    fn a_monitor_only_stage_ignores_failures_and_release_age() {
        let case = Case::new("tag:v1", &[("v1", 2)])
            .monitor_only()
            .failed(2)
            .release_age("1d");
        assert!(matches!(case.decision(), Decision::Available { .. }));
    }

    #[test]
    fn per_tag_stages_deploy_every_new_matching_tag() {
        let plan = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 2), ("main", 3)]).decision();
        let Decision::PerTag(plan) = plan else {
            panic!("expected a per-tag plan, got {plan:?}")
        };
        assert_eq!(plan.desired, vec![target("pr-1", 1), target("pr-2", 2)]);
        assert_eq!(plan.deploy, plan.desired);
        assert!(plan.gone.is_empty() && plan.held.is_empty());
    }

    #[test]
    fn per_tag_stages_redeploy_only_the_changed_tags() {
        let case = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 5)])
            .instance("pr-1", 1, true)
            .instance("pr-2", 2, true);
        let Decision::PerTag(plan) = case.decision() else {
            panic!("expected a per-tag plan")
        };
        assert_eq!(plan.desired, vec![target("pr-1", 1), target("pr-2", 5)]);
        assert_eq!(plan.deploy, vec![target("pr-2", 5)]);
    }

    #[test]
    fn per_tag_stages_with_nothing_new_are_up_to_date() {
        let case = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 2)])
            .instance("pr-1", 1, true)
            .instance("pr-2", 2, false);
        assert_eq!(case.decision(), Decision::UpToDate);
    }

    #[test]
    fn per_tag_instances_whose_tag_left_the_registry_are_gone() {
        let case = Case::new("glob:pr-*", &[("pr-1", 1)])
            .instance("pr-1", 1, true)
            .instance("pr-2", 2, true)
            .instance("pr-3", 3, false);
        let Decision::PerTag(plan) = case.decision() else {
            panic!("expected a per-tag plan")
        };
        assert_eq!(plan.desired, vec![target("pr-1", 1)]);
        assert!(plan.deploy.is_empty());
        assert_eq!(plan.gone, vec!["pr-2".to_owned()]);
    }

    #[test]
    fn a_per_tag_stage_whose_last_tag_left_still_syncs_to_stop_it() {
        let case = Case::new("glob:pr-*", &[("main", 1)]).instance("pr-1", 1, true);
        let Decision::PerTag(plan) = case.decision() else {
            panic!("expected a per-tag plan")
        };
        assert!(plan.desired.is_empty());
        assert_eq!(plan.gone, vec!["pr-1".to_owned()]);
        assert_eq!(
            Case::new("glob:pr-*", &[("main", 1)]).decision(),
            Decision::NoMatchingTag
        );
    }

    #[test]
    fn per_tag_holds_keep_the_running_digest_and_start_nothing_new() {
        let case = Case::new("glob:pr-*", &[("pr-1", 11), ("pr-2", 12), ("pr-3", 3)])
            .instance("pr-1", 1, true)
            .failed(11)
            .failed(12);
        let Decision::PerTag(plan) = case.decision() else {
            panic!("expected a per-tag plan")
        };
        // pr-1 stays at its running digest; pr-2 has no instance, so it is not started.
        assert_eq!(plan.desired, vec![target("pr-1", 1), target("pr-3", 3)]);
        assert_eq!(plan.deploy, vec![target("pr-3", 3)]);
        assert_eq!(
            plan.held,
            vec![
                Held {
                    target: target("pr-1", 11),
                    reason: HoldReason::Failed
                },
                Held {
                    target: target("pr-2", 12),
                    reason: HoldReason::Failed
                },
            ]
        );
    }

    #[test]
    fn a_per_tag_stage_with_only_held_tags_waits_for_the_earliest_or_skips() {
        let young = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 2)])
            .release_age("10m")
            .seen(1, 60)
            .seen(2, 300)
            .failed(1);
        assert_eq!(
            young.decision(),
            Decision::WaitReleaseAge {
                target: target("pr-2", 2),
                until: t0() + TimeDelta::seconds(300),
            }
        );
        let failed = Case::new("glob:pr-*", &[("pr-1", 1)]).failed(1);
        assert_eq!(failed.decision(), Decision::SkipFailed(target("pr-1", 1)));
    }

    #[test]
    fn a_per_tag_stage_selects_the_tag_seen_last() {
        let case = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 2), ("pr-3", 3)])
            .seen(1, 10)
            .seen(2, 100)
            .seen(3, 50);
        assert_eq!(case.plan().selected, Some(target("pr-1", 1)));
        // Never seen before means seen now: the newest of all.
        let mut unseen = case;
        unseen.first_seen.remove(&digest(3));
        assert_eq!(unseen.plan().selected, Some(target("pr-3", 3)));
    }

    #[test]
    fn a_monitor_only_per_tag_stage_reports_the_newest_tag_as_available() {
        let case = Case::new("glob:pr-*", &[("pr-1", 1), ("pr-2", 2)])
            .monitor_only()
            .seen(1, 10)
            .seen(2, 100)
            .instance("pr-1", 1, true);
        assert_eq!(
            case.decision(),
            Decision::Available {
                target: target("pr-1", 1),
                is_update: false
            }
        );
        let none = Case::new("glob:pr-*", &[("main", 1)]).monitor_only();
        assert_eq!(none.decision(), Decision::NoMatchingTag);
    }

    #[test]
    fn decisions_have_stable_api_names() {
        let names: Vec<&str> = [
            Decision::NoMatchingTag,
            Decision::UpToDate,
            Decision::Deploy(target("a", 1)),
            Decision::PerTag(PerTagPlan::default()),
            Decision::Available {
                target: target("a", 1),
                is_update: true,
            },
            Decision::WaitReleaseAge {
                target: target("a", 1),
                until: t0(),
            },
            Decision::SkipFailed(target("a", 1)),
        ]
        .iter()
        .map(Decision::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "no_matching_tag",
                "up_to_date",
                "deploy",
                "per_tag",
                "available",
                "wait_release_age",
                "skip_failed"
            ]
        );
    }
}
