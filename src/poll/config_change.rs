//! A change of what a stage's containers are made of (SPEC §3 "Workloads": the container spec,
//! its secrets) makes the stage *out of date*: its current instance was created at an older
//! `config_revision`. An auto-deploy stage then redeploys the digest it runs, with the new spec,
//! health-gated like any deploy (trigger `config`); a monitor-only stage only says so (the stage
//! page shows "configuration changed — redeploy").
//!
//! The redeploy goes through the poller's own in-flight table, so it is one more deploy of the
//! stage's lane: a push arriving meanwhile waits for it, and the latest target wins.

use super::plan::TagDigest;
use super::{Ask, Poller, Work};
use crate::domain::image_ref::Digest;
use crate::domain::instance::{InstanceStatus, Trigger};
use crate::domain::stage::Stage;
use crate::domain::tag_policy::PolicyMode;

impl Poller {
    /// Starts, without waiting for it, the redeploy of an auto-deploy stage whose current
    /// instance is out of date; answers whether one was started. Per-tag stages take the new
    /// spec with the next deploy of each tag.
    pub async fn redeploy_if_out_of_date(&self, stage: &Stage, actor: Option<&str>) -> bool {
        if !stage.auto_deploy || stage.tag_policy.mode() != PolicyMode::Single {
            return false;
        }
        let Some(current) = stage.current_instance_id else {
            return false;
        };
        let instance = match self.parts().store.get_instance(current).await {
            Ok(instance) => instance,
            Err(e) => {
                tracing::error!(error = %e, stage_id = stage.id, "could not read the current instance");
                return false;
            }
        };
        if instance.config_revision >= stage.config_revision || instance.status != InstanceStatus::Running {
            return false;
        }
        let Some(digest) = instance
            .image_digest
            .as_deref()
            .and_then(|d| Digest::parse(d).ok())
        else {
            return false;
        };
        tracing::info!(
            stage_id = stage.id,
            from = instance.config_revision,
            to = stage.config_revision,
            "configuration changed: redeploying the current digest"
        );
        let ask = Ask {
            trigger: Trigger::Config,
            actor: actor.map(str::to_owned),
            forced: true,
        };
        drop(self.start_work(
            stage.id,
            Work::Deploy(TagDigest::new(instance.image_tag, digest)),
            &ask,
        ));
        true
    }
}
