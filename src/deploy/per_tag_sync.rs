//! Per-tag stages brought in line with the registry: new and changed tags deployed one by one,
//! instances of tags gone from the registry stopped, the oldest beyond `max_instances` stopped.
//! Which is which is decided by the pure `per_tag` plan; this file carries it out under the
//! stage's lock.

use std::collections::HashSet;

use anyhow::Context;
use tracing::Instrument;

use super::per_tag::plan_per_tag;
use super::{ConflictReason, DeployResult, Deployer};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{Instance, Trigger};
use crate::domain::tag_policy::PolicyMode;

impl Deployer {
    /// Brings a per-tag stage in line with the registry: `tags` are every tag of the repository
    /// with its digest (those the policy does not match are ignored). New and changed tags are
    /// deployed one by one; instances of tags gone from the registry are stopped (their routes
    /// removed); beyond `max_instances`, the oldest running instances are stopped. Automatic
    /// syncs skip digests that failed before. A failed deploy of one tag does not stop the
    /// others; the first error that is not a deploy failure is returned at the end.
    pub async fn sync_per_tag(
        &self,
        stage_id: i64,
        tags: Vec<(String, Digest)>,
        trigger: Trigger,
    ) -> DeployResult<()> {
        let span = tracing::info_span!("sync_per_tag", stage_id, trigger = %trigger);
        async move {
            let _guard = self.inner.locks.lock(stage_id).await;
            let (stage, _) = self.stage_and_project(stage_id).await?;
            if stage.tag_policy.mode() != PolicyMode::PerTag {
                return Err(ConflictReason::NotPerTag {
                    stage: stage.name.to_string(),
                    policy: stage.tag_policy.to_string(),
                }
                .into());
            }
            let instances = self.stage_instances(stage.id).await?;
            let mut skipped = HashSet::new();
            if trigger != Trigger::Manual {
                for (_, digest) in &tags {
                    if self
                        .deps()
                        .store
                        .is_failed_digest(stage.id, digest.as_str())
                        .await
                        .context("reading failed digests")?
                    {
                        skipped.insert(digest.to_string());
                    }
                }
            }
            let plan = plan_per_tag(&stage.tag_policy, &tags, &instances, &skipped);
            let gone: Vec<Instance> = instances
                .into_iter()
                .filter(|i| plan.gone.contains(&i.id))
                .collect();
            for instance in &gone {
                self.publish_info(
                    instance,
                    format!(
                        "stopped instance {} of stage {}: tag {} is gone from the registry",
                        instance.id, stage.name, instance.image_tag
                    ),
                    None,
                )
                .await;
            }
            self.retire_unrouted(&gone, "its tag is gone from the registry")
                .await?;
            let mut first_error = None;
            for (tag, digest) in &plan.deploy {
                // Each deploy reads the stage afresh: the previous one may have changed it.
                let result = async {
                    let (stage, project) = self.stage_and_project(stage_id).await?;
                    self.deploy_locked(&stage, &project, tag, digest, trigger, None)
                        .await
                }
                .instrument(tracing::info_span!(
                    "deploy",
                    tag = %tag,
                    digest = %digest,
                    deployment_id = tracing::field::Empty,
                ))
                .await;
                if let Err(e) = result {
                    tracing::error!(error = format!("{e:#}"), tag, "per-tag deploy failed");
                    first_error.get_or_insert(e);
                }
            }
            self.enforce_capacity(&stage).await?;
            first_error.map_or(Ok(()), Err)
        }
        .instrument(span)
        .await
    }
}
