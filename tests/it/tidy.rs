//! Tidy checks that keep ARCHITECTURE.md true: every source file opens with a `//!` paragraph,
//! no debugging or placeholder macros are left behind, and the module layering holds — `domain`
//! depends on nothing, the edges (`store`, `docker`, `registry`) only on `domain`, workflows never
//! on `web` or `proxy`, and nothing but `app` depends on `web` or `proxy`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_source_file_opens_with_a_module_doc_paragraph() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "benches"] {
        let dir = root().join(dir);
        if !dir.exists() {
            continue;
        }
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).expect("readable file");
            let first = text.lines().next().unwrap_or("");
            if !first.starts_with("//!") || first.trim() == "//!" || first.contains("(being written)") {
                missing.push(file.strip_prefix(root()).unwrap_or(&file).display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! paragraph: {missing:#?}"
    );
}

#[test]
fn no_debugging_or_placeholder_macros_are_left_in_src() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).expect("readable file");
        for (n, line) in text.lines().enumerate() {
            for needle in ["dbg!(", "todo!(", "unimplemented!(", "println!(\"debug"] {
                if line.contains(needle) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// What each top-level module may use of the crate. Anything not listed is forbidden.
fn allowed_dependencies() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let edges = ["domain"];
    let services = [
        "domain",
        "clock",
        "metrics",
        "store",
        "docker",
        "registry",
        "events",
        "settings",
        "scheduler",
        "secrets",
        "auth",
    ];
    let workflows = [&services[..], &["poll", "deploy", "sync", "stale", "routes"]].concat();
    let mut web = workflows.clone();
    web.extend(["config", "web"]);
    let mut map = BTreeMap::new();
    map.insert("domain", BTreeSet::from(["domain"]));
    map.insert("clock", BTreeSet::new());
    map.insert("metrics", BTreeSet::new());
    map.insert("config", BTreeSet::from(["domain"]));
    map.insert("secrets", BTreeSet::from(["domain"]));
    map.insert("auth", BTreeSet::from(["domain", "clock", "store"]));
    for edge in ["store", "docker", "registry"] {
        map.insert(edge, BTreeSet::from_iter(edges));
    }
    map.insert("scheduler", BTreeSet::from(["domain", "clock"]));
    map.insert(
        "events",
        BTreeSet::from(["domain", "clock", "metrics", "store", "scheduler", "settings"]),
    );
    map.insert("settings", BTreeSet::from(["domain", "clock", "store"]));
    for workflow in ["poll", "deploy", "sync", "stale", "routes"] {
        map.insert(workflow, BTreeSet::from_iter(workflows.iter().copied()));
    }
    map.insert("web", BTreeSet::from_iter(web.iter().copied()));
    map.insert(
        "proxy",
        BTreeSet::from(["domain", "clock", "metrics", "events", "routes"]),
    );
    map.insert(
        "admin",
        BTreeSet::from(["domain", "config", "store", "auth", "clock"]),
    );
    map
}

/// The crate modules a file refers to as `crate::x`.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.insert(name);
        }
        // `use crate::{a, b}` groups.
        if rest.starts_with('{') {
            let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        }
    }
    refs
}

#[test]
fn the_module_layering_of_the_architecture_holds() {
    let allowed = allowed_dependencies();
    let src = root().join("src");
    let mut violations = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .unwrap_or_default();
        if matches!(top.as_str(), "lib" | "main" | "app") {
            continue;
        }
        let Some(allowed_here) = allowed.get(top.as_str()) else {
            violations.push(format!(
                "{}: module `{top}` is not in the layering table of tests/it/tidy.rs",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable file");
        for used in crate_references(&text) {
            if used != top && !allowed_here.contains(used.as_str()) {
                violations.push(format!(
                    "{}: `{top}` must not depend on `{used}`",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_crate_reference_scanner_sees_groups_and_paths() {
    let refs = crate_references("use crate::{domain::x, store};\nlet a = crate::web::error::WebError;");
    assert_eq!(
        refs,
        BTreeSet::from(["domain".to_owned(), "store".to_owned(), "web".to_owned()])
    );
}
