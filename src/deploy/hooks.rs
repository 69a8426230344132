//! Deploy hooks (SPEC §3 "Workloads"): a stage's `pre_deploy` command runs in a one-off
//! container of the **new** image, with the stage's env, secrets, volumes and networks, before
//! the new instance is created — a migration. A non-zero exit or a timeout fails the deploy
//! (the old instance keeps serving); `post_deploy` runs the same way after the switch, and its
//! failure is only a `warn` event. Either way the last 64 KiB of the output, secret values
//! masked, are kept on the deployment.
//!
//! A hook container is named `dw-{project}-{stage}-{instance}-{hook}` and labelled as this
//! installation's, but carries no instance label: Docker sync must not read its exit as the
//! instance's. It is removed when the hook is done, whatever happened.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use super::Deployer;
use super::attempt::Attempt;
use crate::docker::engine::{ContainerState, CreateContainer, labels};
use crate::domain::event::{NewEvent, Source};
use crate::domain::workload::{Hook, RestartPolicy, output_tail};
use crate::secrets::SecretMask;

/// How often a running hook is looked at.
const HOOK_POLL: Duration = Duration::from_millis(200);
/// How many lines of a hook's output are read back (then cut to its last 64 KiB).
const HOOK_LOG_LINES: u32 = 10_000;
/// How much of the output an error message quotes; the deployment keeps all of the tail.
const QUOTED_OUTPUT: usize = 2000;

/// How a hook ended when it did not succeed.
pub(super) struct HookFailure {
    pub(super) message: String,
}

impl Deployer {
    /// Runs `pre_deploy` when the stage has one; `Err` with the reason the deploy fails.
    pub(super) async fn pre_deploy_hook(
        &self,
        attempt: &Attempt,
        spec: &CreateContainer,
        secret_env: &BTreeMap<String, String>,
    ) -> Result<(), HookFailure> {
        let Some(hook) = attempt.stage.hooks.pre_deploy.clone() else {
            return Ok(());
        };
        self.run_hook(attempt, spec, secret_env, "pre_deploy", &hook)
            .await
    }

    /// Runs `post_deploy` when the stage has one, after the switch: a failure is a `warn`
    /// event, the deploy stands.
    pub(super) async fn post_deploy_hook(&self, attempt: &Attempt) {
        let Some(hook) = attempt.stage.hooks.post_deploy.clone() else {
            return;
        };
        let image = format!("{}@{}", attempt.project.image.name(), attempt.digest);
        let secret_env = match self.secret_env(&attempt.stage).await {
            Ok(secret_env) => secret_env,
            Err(e) => {
                self.hook_warning(attempt, format!("post_deploy hook not run: {e:#}"))
                    .await;
                return;
            }
        };
        let spec = self.container_spec(attempt, image, &secret_env);
        if let Err(failure) = self
            .run_hook(attempt, &spec, &secret_env, "post_deploy", &hook)
            .await
        {
            self.hook_warning(attempt, failure.message).await;
        }
    }

    async fn hook_warning(&self, attempt: &Attempt, message: String) {
        self.deps()
            .bus
            .publish(
                NewEvent::warn(Source::Deployer, message)
                    .project(attempt.project.id)
                    .stage(attempt.stage.id)
                    .instance(attempt.instance_id)
                    .detail("deployment_id", attempt.deployment.id)
                    .detail("hook", "post_deploy"),
            )
            .await;
    }

    /// One hook, from create to remove; its output is appended to the deployment's.
    async fn run_hook(
        &self,
        attempt: &Attempt,
        instance_spec: &CreateContainer,
        secret_env: &BTreeMap<String, String>,
        kind: &'static str,
        hook: &Hook,
    ) -> Result<(), HookFailure> {
        let mut spec = instance_spec.clone();
        spec.name = format!("{}-{}", instance_spec.name, kind.replace('_', "-"));
        spec.command = Some(hook.command.clone());
        spec.labels.remove(labels::INSTANCE);
        spec.labels.insert(labels::HOOK.to_owned(), kind.to_owned());
        spec.restart_policy = RestartPolicy::No;
        // On the project's network, but not under the stage's name: it is not the stage.
        if let Some(network) = spec.network.as_mut() {
            network.aliases.clear();
        }
        tracing::info!(hook = kind, "running the {kind} hook");
        let run = self
            .run_container(&spec, Duration::from_secs(u64::from(hook.timeout_seconds)))
            .await;
        let mask = SecretMask::new(secret_env.values().cloned());
        let (outcome, output) = match run {
            Ok((outcome, output)) => (outcome, mask.apply(&output).into_owned()),
            Err(e) => (
                Err(format!("could not run the {kind} hook: {e:#}")),
                String::new(),
            ),
        };
        let section = format!("--- {kind} ---\n{output}");
        self.record_hook_output(attempt, &section).await;
        outcome.map_err(|why| {
            let quoted = quote_end(&output);
            HookFailure {
                message: if quoted.is_empty() {
                    format!("the {kind} hook {why}")
                } else {
                    format!("the {kind} hook {why}; its output ends with:\n{quoted}")
                },
            }
        })
    }

    /// Creates, starts and waits for a container, then reads its output and removes it.
    /// `Ok((Err(why), output))` when it ran but failed (non-zero exit, timeout).
    async fn run_container(
        &self,
        spec: &CreateContainer,
        timeout: Duration,
    ) -> anyhow::Result<(Result<(), String>, String)> {
        let engine = &self.deps().engine;
        let id = engine
            .create(spec)
            .await
            .with_context(|| format!("creating the container {}", spec.name))?;
        let outcome = async {
            engine
                .start(&id)
                .await
                .with_context(|| format!("starting the container {}", spec.name))?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let details = engine.inspect(&id).await.context("inspecting the hook")?;
                if matches!(details.state, ContainerState::Exited | ContainerState::Dead) {
                    return Ok(match details.exit_code {
                        Some(0) => Ok(()),
                        Some(code) => Err(format!("exited with status {code}")),
                        None => Err("ended without an exit status".to_owned()),
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Err(format!("did not finish within {} s", timeout.as_secs())));
                }
                tokio::time::sleep(HOOK_POLL).await;
            }
        }
        .await;
        let output = match engine.logs(&id, HOOK_LOG_LINES).await {
            Ok(lines) => {
                let text: String = lines.into_iter().map(|l| l.text + "\n").collect();
                output_tail(&text).to_owned()
            }
            Err(e) => format!("(the output could not be read: {e})"),
        };
        if let Err(e) = engine.remove(&id).await {
            tracing::warn!(error = %e, container = %spec.name, "could not remove the hook's container");
        }
        outcome.map(|outcome| (outcome, output))
    }

    async fn record_hook_output(&self, attempt: &Attempt, section: &str) {
        if let Err(e) = self
            .deps()
            .store
            .append_hook_output(attempt.deployment.id, section)
            .await
        {
            tracing::error!(error = %e, "could not record the hook's output");
        }
    }
}

/// The end of a hook's output, for an error message.
fn quote_end(output: &str) -> &str {
    let output = output.trim_end();
    if output.len() <= QUOTED_OUTPUT {
        return output;
    }
    let mut start = output.len() - QUOTED_OUTPUT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    &output[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_quotes_only_the_end_of_the_output() {
        let output = format!("{}\nlast line\n", "x".repeat(5000));
        let quoted = quote_end(&output);
        assert!(quoted.len() <= QUOTED_OUTPUT);
        assert!(quoted.ends_with("last line"));
        assert_eq!(quote_end("short\n"), "short");
    }
}
