//! `docker-watcher apply` and `export`: configuration as code from a shell or a CI job. Apply
//! reads a stack file, collects the environment values of the `${VARIABLE}` references it
//! makes (and no others), and sends both to `POST /api/apply`; it prints the changes as a diff
//! and exits non-zero on an error, which names the file, the line and the field. Export writes
//! `GET /api/export` to a file or standard output.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::{ApplyArgs, ExportArgs, RemoteArgs};

/// The names of the `${NAME}` references in a text (any string may hold one; the server says
/// which fields accept them).
pub fn referenced_variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .context("building the HTTP client")
}

fn endpoint(remote: &RemoteArgs, path: &str) -> anyhow::Result<String> {
    let base = remote.url.trim().trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--url / DOCKER_WATCHER_URL must be an http:// or https:// URL, like http://127.0.0.1:8080");
    }
    if remote.token.trim().is_empty() {
        bail!("--token / DOCKER_WATCHER_TOKEN is empty: create one with `docker-watcher token create`");
    }
    Ok(format!("{base}{path}"))
}

/// The server's error message, or the status when the answer is not the API's error shape.
fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("the server answered {status}: {}", body.trim()))
}

/// `docker-watcher apply`: prints the diff, then what was done.
pub async fn apply(args: &ApplyArgs) -> anyhow::Result<String> {
    let (file_name, content) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the stack file from standard input")?;
        ("stdin".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let variables: BTreeMap<String, String> = referenced_variables(&content)
        .into_iter()
        .filter_map(|name| std::env::var(&name).ok().map(|value| (name, value)))
        .collect();
    let url = endpoint(&args.remote, "/api/apply")?;
    let response = client()?
        .post(&url)
        .bearer_auth(args.remote.token.trim())
        .json(&json!({
            "file_name": file_name,
            "content": content,
            "variables": variables,
            "prune": args.prune,
            "dry_run": args.dry_run,
        }))
        .send()
        .await
        .with_context(|| format!("sending the stack file to {url}"))?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{}", error_message(status, &body));
    }
    let answer: Value = serde_json::from_str(&body).context("the answer is not JSON")?;
    Ok(format_apply(&file_name, &answer))
}

/// `docker-watcher export`: the stack file, written to `--output` or returned for stdout.
pub async fn export(args: &ExportArgs) -> anyhow::Result<Option<String>> {
    let url = endpoint(&args.remote, "/api/export")?;
    let response = client()?
        .get(&url)
        .bearer_auth(args.remote.token.trim())
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let body = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{}", error_message(status, &body));
    }
    match &args.output {
        Some(path) => {
            write_file(path, &body)?;
            Ok(None)
        }
        None => Ok(Some(body)),
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The answer of `POST /api/apply` as a diff: `+` creates, `~` updates, `-` deletes, one line
/// per changed field, then the summary.
pub fn format_apply(file_name: &str, answer: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let changes = answer["changes"].as_array().unwrap_or(&empty);
    for change in changes {
        let sign = match change["action"].as_str() {
            Some("create") => '+',
            Some("delete") => '-',
            _ => '~',
        };
        let kind = change["kind"].as_str().unwrap_or("");
        let key = change["key"].as_str().unwrap_or("");
        if kind == key {
            out.push_str(&format!("{sign} {kind}\n"));
        } else {
            out.push_str(&format!("{sign} {kind} {key}\n"));
        }
        for field in change["fields"].as_array().unwrap_or(&empty) {
            let name = field["field"].as_str().unwrap_or("");
            let (from, to) = (&field["from"], &field["to"]);
            if sign == '+' {
                out.push_str(&format!("    {name} = {to}\n"));
            } else {
                out.push_str(&format!("    {name}: {from} -> {to}\n"));
            }
        }
    }
    let summary = answer["summary"].as_str().unwrap_or("");
    if !answer["changed"].as_bool().unwrap_or(false) {
        out.push_str(&format!("{file_name}: no changes; the installation matches it\n"));
    } else if answer["dry_run"].as_bool().unwrap_or(false) {
        out.push_str(&format!("dry run: would be {summary}; nothing was changed\n"));
    } else {
        out.push_str(&format!("applied {file_name}: {summary}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_references_are_collected_once_each() {
        let text = "a = \"${ONE}\"\nb = \"${ONE}\"\nc = \"${2X}\"\nd = \"${_T_2}\" # ${";
        assert_eq!(referenced_variables(text), vec!["ONE", "_T_2"]);
    }

    #[test]
    fn an_apply_answer_reads_as_a_diff() {
        let answer = json!({
            "dry_run": true, "changed": true, "summary": "1 created, 1 updated, 1 deleted",
            "changes": [
                {"action": "create", "kind": "project", "key": "shop",
                 "fields": [{"field": "image", "from": null, "to": "docker.io/library/nginx", "secret": false}]},
                {"action": "update", "kind": "settings", "key": "settings",
                 "fields": [{"field": "stale_threshold_days", "from": 7, "to": 14, "secret": false}]},
                {"action": "delete", "kind": "proxy", "key": "a.example.com", "fields": []},
            ]
        });
        assert_eq!(
            format_apply("stack.toml", &answer),
            "+ project shop\n    image = \"docker.io/library/nginx\"\n~ settings\n    stale_threshold_days: 7 -> 14\n- proxy a.example.com\ndry run: would be 1 created, 1 updated, 1 deleted; nothing was changed\n"
        );
        let nothing = json!({"dry_run": false, "changed": false, "summary": "no changes", "changes": []});
        assert_eq!(
            format_apply("stack.toml", &nothing),
            "stack.toml: no changes; the installation matches it\n"
        );
    }
}
