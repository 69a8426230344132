//! Cleanup of stale instances (SPEC §3): one at a time (members) or every listed one (admins).
//!
//! One cleanup is: claim the instance — status `removing`, in one conditional statement that
//! only succeeds while it is still stale, still has the status it was judged on and nobody
//! claimed it first ([`crate::store::Store::begin_stale_removal`]) — then stop its container
//! with the grace period, remove the container, remove its image when no other container uses
//! it, delete the row (which frees its hostname) and publish a recorded `info`. A container
//! already gone from Docker is not an error. A failure before the row is deleted puts the
//! previous status back, publishes an `error` and is reported; the stale mark stays, so nobody
//! is warned twice.
//!
//! What is never touched: instances already `removing` (another cleanup owns them), running
//! instances (the rule excludes them, and a container found running after all is marked alive
//! instead of removed), and any container that is not recorded on one of this installation's
//! stale instances — the container is checked for this installation's label before it is
//! stopped. A bulk cleanup works from the stale list only.

use futures::StreamExt;

use super::rule::{self, StaleRule};
use super::{StaleItem, StaleScanner, describe, is_listed};
use crate::docker::DockerError;
use crate::docker::engine::{ContainerState, labels};
use crate::domain::event::{EventKind, NewEvent, Source};
use crate::domain::instance::{Instance, InstanceStatus};
use crate::store::StoreError;

/// Why a cleanup did not remove an instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanupError {
    #[error("no instance with id {0}")]
    NotFound(i64),
    /// Not (or no longer) stale: running, alive within the threshold, or not marked by a scan
    /// yet. Nothing changed.
    #[error("{0}")]
    NotStale(String),
    /// Another cleanup is removing it. Nothing changed.
    #[error("instance {0} is already being removed")]
    Removing(i64),
    /// The Docker engine could not be reached; the instance has its previous status back.
    #[error("{0}")]
    Unavailable(String),
    /// The cleanup failed and was undone as far as possible: the instance has its previous
    /// status back (or `missing`, when its container was already removed).
    #[error("{0}")]
    Failed(String),
}

/// What a bulk cleanup did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkCleanup {
    pub removed: Vec<i64>,
    /// Left alone: being removed by another cleanup, or no longer stale when its turn came.
    pub skipped: Vec<i64>,
    /// Tried and failed, with the reason; they keep their previous status.
    pub failed: Vec<(i64, String)>,
}

/// What became of an instance's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerFate {
    /// The instance never had one.
    None,
    Removed,
    /// Already gone from Docker.
    AlreadyGone,
}

impl ContainerFate {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Removed => "removed",
            Self::AlreadyGone => "already gone",
        }
    }
}

/// What became of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ImageFate {
    /// Unknown: the container was gone before it could be inspected.
    Unknown,
    Removed(String),
    /// Another container still uses it (or another name refers to it): kept.
    InUse(String),
    /// Removing it failed; the cleanup goes on (the container is already gone).
    Failed(String, String),
}

/// Why removing the container failed.
struct RemovalFailure {
    message: String,
    unavailable: bool,
    /// The container turned out to be running: the instance is alive, not stale.
    running: bool,
}

impl RemovalFailure {
    fn docker(what: &str, error: DockerError) -> Self {
        Self {
            message: format!("{what}: {error}"),
            unavailable: error.is_unavailable(),
            running: false,
        }
    }
}

impl StaleScanner {
    /// Removes one stale instance (see the module doc) and returns it as it was listed.
    pub async fn cleanup(&self, id: i64, actor: Option<&str>) -> Result<StaleItem, CleanupError> {
        let outcome = self.cleanup_one(id, actor).await;
        if outcome.is_ok() {
            self.rebuild_routes().await;
        }
        outcome
    }

    /// Removes every listed stale instance, a few at a time; instances being removed are
    /// skipped. With `dry_run`, removes nothing and reports what it would remove and skip.
    pub async fn cleanup_all(&self, dry_run: bool, actor: Option<&str>) -> anyhow::Result<BulkCleanup> {
        let list = self.list().await?;
        let (busy, candidates): (Vec<StaleItem>, Vec<StaleItem>) = list
            .items
            .into_iter()
            .partition(|item| item.instance.status == InstanceStatus::Removing);
        let mut report = BulkCleanup {
            skipped: busy.iter().map(|item| item.instance.id).collect(),
            ..Default::default()
        };
        if dry_run {
            report.removed = candidates.iter().map(|item| item.instance.id).collect();
        } else {
            let concurrency = self.inner.options.cleanup_concurrency.max(1);
            let outcomes: Vec<(i64, Result<StaleItem, CleanupError>)> = futures::stream::iter(candidates)
                .map(|item| async move {
                    let id = item.instance.id;
                    (id, self.cleanup_one(id, actor).await)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            for (id, outcome) in outcomes {
                match outcome {
                    Ok(_) => report.removed.push(id),
                    Err(
                        CleanupError::NotFound(_) | CleanupError::NotStale(_) | CleanupError::Removing(_),
                    ) => report.skipped.push(id),
                    Err(CleanupError::Unavailable(e) | CleanupError::Failed(e)) => {
                        report.failed.push((id, e))
                    }
                }
            }
            if !report.removed.is_empty() {
                self.rebuild_routes().await;
            }
        }
        report.removed.sort_unstable();
        report.skipped.sort_unstable();
        report.failed.sort();
        Ok(report)
    }

    async fn rebuild_routes(&self) {
        if let Err(e) = self.deps().routes.rebuild().await {
            tracing::error!(error = %e, "could not rebuild the route table after a cleanup");
        }
    }

    async fn cleanup_one(&self, id: i64, actor: Option<&str>) -> Result<StaleItem, CleanupError> {
        let rule = self.rule();
        let item = self.claim(id, rule).await?;
        let instance = &item.instance;
        let previous = instance.status;
        let deps = self.deps();
        let (container, image) = match self.remove_container(instance).await {
            Ok(done) => done,
            Err(failure) if failure.running => {
                // Alive after all (started behind our back, and sync has not told yet): record
                // it, which also takes the stale mark off.
                self.put_back(id, InstanceStatus::Running).await;
                return Err(CleanupError::NotStale(format!(
                    "instance {id}'s container is running; it is not stale"
                )));
            }
            Err(failure) => {
                self.put_back(id, previous).await;
                let message = format!("{} (instance {id} is {previous} again)", failure.message);
                self.publish_failure(instance, &message, actor).await;
                return Err(if failure.unavailable {
                    CleanupError::Unavailable(message)
                } else {
                    CleanupError::Failed(message)
                });
            }
        };
        if let Err(e) = deps.store.delete_instance(id).await {
            // The container is gone: the truthful status is `missing`, not the previous one.
            let status = match container {
                ContainerFate::None => previous,
                ContainerFate::Removed | ContainerFate::AlreadyGone => InstanceStatus::Missing,
            };
            self.put_back(id, status).await;
            let message = format!("deleting instance {id} failed: {e} (it is {status} now)");
            self.publish_failure(instance, &message, actor).await;
            return Err(CleanupError::Failed(message));
        }
        deps.metrics.stale_instances.dec();
        self.publish_removed(&item, container, &image, actor).await;
        Ok(item)
    }

    /// Judges the instance and claims it (status `removing`) in one conditional write.
    async fn claim(&self, id: i64, rule: StaleRule) -> Result<StaleItem, CleanupError> {
        let deps = self.deps();
        let now = deps.clock.now();
        let instance = self.read(id).await?;
        if instance.status == InstanceStatus::Removing {
            return Err(CleanupError::Removing(id));
        }
        if !is_listed(&instance, rule, now) {
            return Err(CleanupError::NotStale(not_stale_reason(&instance, rule, now)));
        }
        let claimed = deps
            .store
            .begin_stale_removal(id, instance.status, rule.cutoff(now))
            .await
            .map_err(|e| CleanupError::Failed(format!("claiming instance {id}: {e}")))?;
        if !claimed {
            // Someone got there first, or it changed since it was read: say what it is now.
            let now_instance = self.read(id).await?;
            return Err(if now_instance.status == InstanceStatus::Removing {
                CleanupError::Removing(id)
            } else {
                CleanupError::NotStale(format!(
                    "instance {id} changed while its cleanup began: {}",
                    not_stale_reason(&now_instance, rule, now)
                ))
            });
        }
        Ok(StaleItem {
            days_stale: rule::days_stale(&instance, now),
            instance,
        })
    }

    async fn read(&self, id: i64) -> Result<Instance, CleanupError> {
        match self.deps().store.get_instance(id).await {
            Ok(instance) => Ok(instance),
            Err(StoreError::NotFound) => Err(CleanupError::NotFound(id)),
            Err(e) => Err(CleanupError::Failed(format!("reading instance {id}: {e}"))),
        }
    }

    /// Inspects, stops and removes the instance's container, then its image if unused.
    async fn remove_container(
        &self,
        instance: &Instance,
    ) -> Result<(ContainerFate, ImageFate), RemovalFailure> {
        let Some(container_id) = instance.container_id.as_deref() else {
            return Ok((ContainerFate::None, ImageFate::Unknown));
        };
        let deps = self.deps();
        let engine = &deps.engine;
        let details = match engine.inspect(container_id).await {
            Ok(details) => details,
            Err(DockerError::NotFound) => return Ok((ContainerFate::AlreadyGone, ImageFate::Unknown)),
            Err(e) => return Err(RemovalFailure::docker("inspecting the container", e)),
        };
        // Belt and braces: the id was recorded by this installation, but a container that does
        // not carry its label is someone else's and is never touched.
        if details.labels.get(labels::INSTALLATION).map(String::as_str) != Some(&*deps.installation_id) {
            return Err(RemovalFailure {
                message: format!(
                    "container {container_id} does not carry this installation's label; it was left alone"
                ),
                unavailable: false,
                running: false,
            });
        }
        if details.state == ContainerState::Running {
            return Err(RemovalFailure {
                message: format!("container {container_id} is running"),
                unavailable: false,
                running: true,
            });
        }
        let mut fate = ContainerFate::Removed;
        match engine.stop(container_id, self.inner.options.stop_grace).await {
            Ok(()) => {}
            Err(DockerError::NotFound) => fate = ContainerFate::AlreadyGone,
            Err(e) => return Err(RemovalFailure::docker("stopping the container", e)),
        }
        if fate == ContainerFate::Removed {
            match engine.remove(container_id).await {
                Ok(()) => {}
                Err(DockerError::NotFound) => fate = ContainerFate::AlreadyGone,
                Err(e) => return Err(RemovalFailure::docker("removing the container", e)),
            }
        }
        let image_id = details.image_id;
        let image = if image_id.is_empty() {
            ImageFate::Unknown
        } else {
            match engine.remove_image_if_unused(&image_id).await {
                Ok(true) => ImageFate::Removed(image_id),
                Ok(false) => ImageFate::InUse(image_id),
                Err(e) => {
                    tracing::warn!(error = %e, image = %image_id, "could not remove a stale instance's image");
                    ImageFate::Failed(image_id, e.to_string())
                }
            }
        };
        Ok((fate, image))
    }

    /// Moves a claimed instance from `removing` to `status` (its previous one, or `running`).
    async fn put_back(&self, id: i64, status: InstanceStatus) {
        let deps = self.deps();
        if let Err(e) = deps
            .store
            .update_instance_status_if(id, InstanceStatus::Removing, status, None, deps.clock.now())
            .await
        {
            tracing::error!(error = %e, instance = id, "could not put back the status of an instance whose cleanup failed");
        }
    }

    async fn publish_failure(&self, instance: &Instance, message: &str, actor: Option<&str>) {
        let mut event = NewEvent::error(
            Source::Stale,
            format!("cleanup of stale {} failed: {message}", describe(instance)),
        )
        .kind(EventKind::Cleanup)
        .project(instance.project_id)
        .stage(instance.stage_id)
        .instance(instance.id)
        .detail("error", message);
        if let Some(actor) = actor {
            event = event.detail("actor", actor);
        }
        if let Some(container) = &instance.container_id {
            event = event.detail("container_id", container.as_str());
        }
        self.deps().bus.publish(event).await;
    }

    async fn publish_removed(
        &self,
        item: &StaleItem,
        container: ContainerFate,
        image: &ImageFate,
        actor: Option<&str>,
    ) {
        let instance = &item.instance;
        let what = match container {
            ContainerFate::None => "it had no container".to_owned(),
            ContainerFate::Removed => format!(
                "container {} removed",
                instance.container_name.as_deref().unwrap_or("?")
            ),
            ContainerFate::AlreadyGone => "its container was already gone from Docker".to_owned(),
        };
        let (image_status, image_id) = match image {
            ImageFate::Unknown => ("unknown", None),
            ImageFate::Removed(id) => ("removed", Some(id)),
            ImageFate::InUse(id) => ("kept: in use", Some(id)),
            ImageFate::Failed(id, _) => ("kept: removal failed", Some(id)),
        };
        let mut event = NewEvent::info(
            Source::Stale,
            format!(
                "removed stale {} after {} days ({what}; image {image_status})",
                describe(instance),
                item.days_stale
            ),
        )
        .kind(EventKind::Cleanup)
        .recorded()
        .project(instance.project_id)
        .stage(instance.stage_id)
        .instance(instance.id)
        .detail("project", instance.project_name.as_str())
        .detail("stage", instance.stage_name.as_str())
        .detail("image_tag", instance.image_tag.as_str())
        .detail("days_stale", item.days_stale)
        .detail("container", container.as_str())
        .detail("image", image_status);
        if let Some(id) = image_id {
            event = event.detail("image_id", id.as_str());
        }
        if let ImageFate::Failed(_, error) = image {
            event = event.detail("image_error", error.as_str());
        }
        if let Some(container) = &instance.container_id {
            event = event.detail("container_id", container.as_str());
        }
        if let Some(actor) = actor {
            event = event.detail("actor", actor);
        }
        self.deps().bus.publish(event).await;
    }
}

/// Why an instance cannot be cleaned up as stale, in words a user can act on.
fn not_stale_reason(instance: &Instance, rule: StaleRule, now: chrono::DateTime<chrono::Utc>) -> String {
    let id = instance.id;
    let days = rule::days_stale(instance, now);
    let threshold = rule.threshold_days();
    match instance.status {
        InstanceStatus::Running | InstanceStatus::Pending | InstanceStatus::Deploying => {
            format!("instance {id} is {}", instance.status)
        }
        InstanceStatus::Removing => format!("instance {id} is being removed"),
        _ if !rule.is_stale(instance, now) => {
            format!("instance {id} was last alive {days} days ago; the threshold is {threshold} days")
        }
        _ => format!("instance {id} has not been marked stale by a scan yet; run a scan first"),
    }
}
