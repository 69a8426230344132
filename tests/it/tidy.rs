//! Tidy checks that keep ARCHITECTURE.md true: every source file opens with a `//!` paragraph,
//! no debugging or placeholder macros are left behind, and the module layering holds — `domain`
//! depends on nothing, the edges (`store`, `docker`, `registry`) only on `domain`, workflows never
//! on `web` or `proxy`, and nothing but `app` depends on `web` or `proxy` — and no two source
//! files import each other, directly or around a longer cycle.

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
    let workflows = [
        &services[..],
        &["poll", "deploy", "sync", "stale", "routes", "notify"],
    ]
    .concat();
    let mut web = workflows.clone();
    web.extend(["config", "web", "stack"]);
    let mut map = BTreeMap::new();
    map.insert("domain", BTreeSet::from(["domain"]));
    map.insert("clock", BTreeSet::new());
    map.insert("metrics", BTreeSet::new());
    map.insert("config", BTreeSet::from(["domain"]));
    map.insert("secrets", BTreeSet::from(["domain", "store"]));
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
    for workflow in ["poll", "deploy", "sync", "stale", "routes", "notify"] {
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
    map.insert("data_dir", BTreeSet::new());
    // Configuration as code: pure, over domain types.
    map.insert("stack", BTreeSet::from(["domain"]));
    map.insert(
        "backup",
        BTreeSet::from(["domain", "config", "store", "secrets", "data_dir"]),
    );
    // A client of the HTTP API: it knows the API's paths and JSON, never the server's code.
    map.insert("client", BTreeSet::from(["config"]));
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

/// Source text without comments, string literals and char literals, so that paths in docs
/// (`[`super::server`]`) and in strings do not count as imports.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && matches!(next, Some('#') | Some('"'))
            && (i == 0 || !chars[i - 1].is_alphanumeric())
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\''); a lifetime ('a) has no closing quote.
            i += 1;
            if chars.get(i) == Some(&'\\') {
                i += 2;
            } else {
                i += 1;
            }
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The paths of a use tree, each as its segments: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`,
/// `a::c::e`. Stops at the end of the tree (`;`, `)` and the like).
fn use_tree_paths(text: &str) -> Vec<Vec<String>> {
    fn tree(chars: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
            if chars.get(*i) == Some(&'{') {
                *i += 1;
                loop {
                    tree(chars, i, &path, out);
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    if chars.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < chars.len() && (chars[*i].is_ascii_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if *i > start {
                path.push(chars[start..*i].iter().collect());
            }
            if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            out.push(path);
            return;
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    tree(&chars, &mut i, &[], &mut out);
    out
}

/// The module a source file is, as its path from the crate root: `src/proxy/mod.rs` →
/// `["proxy"]`, `src/proxy/forward.rs` → `["proxy", "forward"]`, `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file-level import graph of the crate: for each module file, the module files it uses
/// through `crate::…`, `super::…` and `self::…` paths. A module's use of its own descendants
/// is composition (it declares them and may re-export them), not an import, and is left out;
/// so is a file's use of itself.
fn import_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = rust_files(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let here = module_of(src, file);
        let text = code_only(&std::fs::read_to_string(file).expect("readable file"));
        let inline_depth = inline_module_depths(&text);
        let mut edges = BTreeSet::new();
        for (i, _) in text.match_indices("::") {
            // Find the start of the path this `::` belongs to, and only look at paths that
            // start with `crate`, `super` or `self`.
            let before = &text[..i];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |p| p + 1);
            if before[start..].contains("::") {
                continue;
            }
            let base = match &before[start..] {
                "crate" => Vec::new(),
                "super" | "self" => here.clone(),
                _ => continue,
            };
            for path in use_tree_paths(&text[i + 2..]) {
                let mut module = base.clone();
                let mut segments = path.into_iter().peekable();
                // Inside `mod tests { … }`, the first `super` is the file's own module.
                let mut inside = inline_depth[i];
                let mut up = |module: &mut Vec<String>| match inside {
                    0 => {
                        module.pop();
                    }
                    _ => inside -= 1,
                };
                if &before[start..] == "super" {
                    up(&mut module);
                }
                while segments.peek().map(String::as_str) == Some("super") {
                    segments.next();
                    up(&mut module);
                }
                // The longest prefix of the path that is a module file.
                let mut target = module.clone();
                for segment in segments {
                    if segment == "self" {
                        continue;
                    }
                    let mut deeper = target.clone();
                    deeper.push(segment);
                    if modules.contains(&deeper) {
                        target = deeper;
                    } else {
                        break;
                    }
                }
                if target != here && !target.starts_with(&here[..]) {
                    edges.insert(target);
                }
            }
        }
        graph.insert(here, edges);
    }
    graph
}

/// For each byte of `code`, how many inline modules (`mod tests { … }`) enclose it.
fn inline_module_depths(code: &str) -> Vec<usize> {
    let mut depths = vec![0; code.len() + 1];
    let mut braces: Vec<bool> = Vec::new();
    let mut depth = 0;
    for (i, c) in code.char_indices() {
        match c {
            '{' => {
                let before = code[..i].trim_end();
                let words: Vec<&str> = before.rsplit(|c: char| c.is_whitespace()).take(2).collect();
                let is_mod = words.len() == 2
                    && words[1] == "mod"
                    && words[0].chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                braces.push(is_mod);
                depth += usize::from(is_mod);
            }
            '}' if braces.pop() == Some(true) => depth -= 1,
            _ => {}
        }
        for d in &mut depths[i..i + c.len_utf8()] {
            *d = depth;
        }
    }
    depths
}

/// The cycles of a graph, each as the modules along it (one per strongly connected group).
fn import_cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    // Tarjan's strongly connected components; groups of more than one node are cycles.
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        next: usize,
        groups: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, node: &'a Vec<String>) {
        s.index.insert(node, s.next);
        s.low.insert(node, s.next);
        s.next += 1;
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let Some((next, _)) = s.graph.get_key_value(next) else {
                continue;
            };
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[next].min(s.low[node]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.index[next].min(s.low[node]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut group = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                group.push(top.clone());
                if top == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.groups.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        groups: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.groups
}

#[test]
fn no_two_source_files_import_each_other_even_through_others() {
    let cycles = import_cycles(&import_graph(&root().join("src")));
    let described: Vec<String> = cycles
        .iter()
        .map(|group| {
            group
                .iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect::<Vec<_>>()
                .join(" ⇄ ")
        })
        .collect();
    assert!(
        described.is_empty(),
        "file-level import cycles (move the shared type to a file both can use):\n{}",
        described.join("\n")
    );
}

#[test]
fn the_import_graph_sees_super_crate_and_grouped_paths_but_not_comments_or_strings() {
    let paths = use_tree_paths("{codec::{self, Head}, server::Conn, pages};");
    assert_eq!(
        paths,
        vec![
            vec!["codec".to_owned(), "self".to_owned()],
            vec!["codec".to_owned(), "Head".to_owned()],
            vec!["server".to_owned(), "Conn".to_owned()],
            vec!["pages".to_owned()],
        ]
    );
    let code =
        code_only("let a = \"crate::web\"; // super::server\nuse super::codec; let c = '\"'; fn f<'a>() {}");
    assert!(!code.contains("web") && !code.contains("server"), "{code}");
    assert!(
        code.contains("use super::codec;") && code.contains("fn f<'a>()"),
        "{code}"
    );
    let graph = BTreeMap::from([
        (vec!["a".to_owned()], BTreeSet::from([vec!["b".to_owned()]])),
        (vec!["b".to_owned()], BTreeSet::from([vec!["c".to_owned()]])),
        (vec!["c".to_owned()], BTreeSet::from([vec!["a".to_owned()]])),
        (vec!["d".to_owned()], BTreeSet::from([vec!["a".to_owned()]])),
    ]);
    assert_eq!(
        import_cycles(&graph),
        vec![vec![
            vec!["a".to_owned()],
            vec!["b".to_owned()],
            vec!["c".to_owned()]
        ]]
    );
}

#[test]
fn two_files_that_import_each_other_are_a_cycle_and_their_tests_modules_are_not() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("proxy")).expect("a module dir");
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).expect("a file");
    write("lib.rs", "//! Root.\nmod proxy;\n");
    write(
        "proxy/mod.rs",
        "//! Parent.\nmod forward;\nmod server;\npub use server::serve;\n",
    );
    write(
        "proxy/forward.rs",
        "//! A.\nuse super::server::ClientConn;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    write(
        "proxy/server.rs",
        "//! B.\nuse super::forward::ConnectionContext;\n",
    );
    let module = |path: &[&str]| path.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        import_cycles(&import_graph(src)),
        vec![vec![module(&["proxy", "forward"]), module(&["proxy", "server"])]]
    );
    write("proxy/server.rs", "//! B.\nuse super::connection::ClientConn;\n");
    assert!(import_cycles(&import_graph(src)).is_empty());
}
