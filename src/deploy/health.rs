//! The health gate (SPEC §3, Deploying, step 4): a new container must prove itself before the
//! stage's route switches to it. In order of preference:
//!
//! 1. the stage's `health_check.path`: HTTP GET through the published port until it answers
//!    `expected_status`, within the setting `deploy_health_timeout_seconds`; a server that
//!    answers another status on a few consecutive rounds fails at once (connection refused or
//!    no answer is a server still starting, and keeps waiting);
//! 2. else the image's own HEALTHCHECK: wait for Docker to report `healthy`, within the same
//!    timeout (`unhealthy` fails at once: Docker has already retried);
//! 3. else the container must stay up for `min_ready_seconds`.
//!
//! Whatever the check, the container is inspected on every round: one that exits, or restarts
//! (the restart policy brings a crashing container back, with a new start time), fails the gate
//! at once rather than when the timeout runs out.

use std::time::Duration;

use tokio::time::Instant;

use crate::docker::DockerError;
use crate::docker::engine::{ContainerEngine, ContainerState, HealthState};
use crate::domain::stage::HealthCheck;

/// What the gate checks and for how long.
#[derive(Debug, Clone)]
pub(crate) struct GateSpec {
    pub health_check: Option<HealthCheck>,
    pub min_ready: Duration,
    /// For the HTTP check and the image HEALTHCHECK; `min_ready` is a duration of its own.
    pub timeout: Duration,
    /// Between two rounds.
    pub interval: Duration,
    /// Consecutive non-matching statuses that fail the HTTP check before the timeout.
    pub wrong_answers: u32,
}

/// Runs the gate on a started container. `Err` carries the reason, in words for the event log.
pub(crate) async fn health_gate(
    engine: &dyn ContainerEngine,
    http: &reqwest::Client,
    container_id: &str,
    host_port: Option<u16>,
    spec: &GateSpec,
) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut first_start = None;
    let mut last_problem = String::from("no answer yet");
    let mut wrong_in_a_row = 0u32;
    loop {
        let details = match engine.inspect(container_id).await {
            Ok(details) => details,
            Err(DockerError::NotFound) => {
                return Err("the container disappeared during the health gate".into());
            }
            Err(e) => {
                // A hiccup of the engine is not the image's fault: retry until the deadline.
                last_problem = format!("cannot inspect the container: {e}");
                if Instant::now() >= deadline {
                    return Err(timed_out(spec, &last_problem));
                }
                tokio::time::sleep(spec.interval).await;
                continue;
            }
        };
        match details.state {
            ContainerState::Exited | ContainerState::Dead => {
                return Err(match details.exit_code {
                    Some(code) => format!("the container exited with code {code} during the health gate"),
                    None => "the container exited during the health gate".into(),
                });
            }
            ContainerState::Restarting => {
                return Err(match details.exit_code {
                    Some(code) => format!("the container exited with code {code} and is restarting"),
                    None => "the container exited and is restarting".into(),
                });
            }
            _ => {}
        }
        // A different start time means it exited and the restart policy started it again
        // between two rounds.
        match (&first_start, details.started_at) {
            (None, Some(at)) => first_start = Some(at),
            (Some(first), Some(at)) if *first != at => {
                return Err(match details.exit_code {
                    Some(code) if code != 0 => {
                        format!(
                            "the container exited with code {code} and was restarted during the health gate"
                        )
                    }
                    _ => "the container exited and was restarted during the health gate".into(),
                });
            }
            _ => {}
        }
        let running = details.state == ContainerState::Running;
        if let Some(check) = &spec.health_check {
            let Some(port) = host_port.or(details.host_port) else {
                return Err("the container publishes no port to check".into());
            };
            if running {
                match probe(http, port, check, deadline).await {
                    Ok(()) => return Ok(()),
                    Err(Probe::WrongStatus(problem)) => {
                        wrong_in_a_row += 1;
                        if wrong_in_a_row >= spec.wrong_answers.max(1) {
                            return Err(format!("{problem} on {wrong_in_a_row} consecutive tries"));
                        }
                        last_problem = problem;
                    }
                    Err(Probe::NoAnswer(problem)) => {
                        wrong_in_a_row = 0;
                        last_problem = problem;
                    }
                }
            }
        } else if let Some(health) = details.health {
            match health {
                HealthState::Healthy if running => return Ok(()),
                HealthState::Unhealthy => {
                    return Err("the image's HEALTHCHECK reports the container unhealthy".into());
                }
                _ => last_problem = "the image's HEALTHCHECK is still starting".into(),
            }
        } else if running && started.elapsed() >= spec.min_ready {
            return Ok(());
        }
        // Waiting for `min_ready` has its own length; the timeout then only bounds a container
        // that never gets to `running` (created, paused).
        let waits_for_health = spec.health_check.is_some() || details.health.is_some();
        if !waits_for_health && !running {
            last_problem = format!("the container is {:?}, not running", details.state).to_lowercase();
        }
        let limit = if waits_for_health {
            deadline
        } else {
            deadline + spec.min_ready
        };
        if Instant::now() >= limit {
            return Err(timed_out(spec, &last_problem));
        }
        tokio::time::sleep(spec.interval).await;
    }
}

/// Why one GET of the health path did not pass, in words.
enum Probe {
    /// The server answered, with another status than the expected one.
    WrongStatus(String),
    /// No answer: refused, timed out, broken (a server that is still starting).
    NoAnswer(String),
}

/// One GET of the health path; `Err` says what was wrong.
async fn probe(
    http: &reqwest::Client,
    port: u16,
    check: &HealthCheck,
    deadline: Instant,
) -> Result<(), Probe> {
    let url = format!("http://127.0.0.1:{port}{}", check.path);
    // Short tries, so an application that accepts but never answers does not eat the timeout in
    // one request, but never past the deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    let per_try = Duration::from_secs(2).min(left).max(Duration::from_millis(100));
    match http.get(&url).timeout(per_try).send().await {
        Ok(response) if response.status().as_u16() == check.expected_status => Ok(()),
        Ok(response) => Err(Probe::WrongStatus(format!(
            "GET {} answered {}, expected {}",
            check.path,
            response.status().as_u16(),
            check.expected_status
        ))),
        Err(e) if e.is_timeout() => Err(Probe::NoAnswer(format!(
            "GET {} did not answer within {per_try:?}",
            check.path
        ))),
        Err(e) if e.is_connect() => Err(Probe::NoAnswer(format!("GET {}: connection refused", check.path))),
        Err(e) => Err(Probe::NoAnswer(format!("GET {} failed: {e}", check.path))),
    }
}

fn timed_out(spec: &GateSpec, last_problem: &str) -> String {
    format!(
        "not healthy within {} s (deploy_health_timeout_seconds): {last_problem}",
        spec.timeout.as_secs()
    )
}
