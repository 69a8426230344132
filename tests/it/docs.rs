//! The user documentation as a reader meets it: every page under `docs/`, served by the
//! installation at `/docs/`, renders in a real browser (a heading, no error page, its images
//! loaded), every internal link on it resolves, and nothing is loaded from another origin. The
//! API reference at `/docs/reference` shows every route of `/api/openapi.json`, and its anchors
//! exist. The Markdown sources never point outside the repository's docs; the index links every page,
//! and the pages cover every topic a user needs (concepts, each registry's webhook, …).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::browser::with_browser;
use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn every_docs_page_renders_and_every_internal_link_resolves() {
    let app = spawn_app().await;
    let base = app.base_url.clone();
    let pages = docker_watcher::web::ui::docs::page_names();
    assert!(pages.len() >= 9, "{pages:?}");
    with_browser(&app.base_url, "docs_pages", |b| async move {
        let http = reqwest::Client::new();
        let mut to_check: BTreeSet<String> = BTreeSet::new();
        for page in pages.iter().map(|p| format!("/docs/{p}")).chain(["/docs/reference".to_owned()]) {
            b.goto(&page).await;
            let title = b.text("main h1").await;
            assert!(!title.is_empty(), "{page} has no heading");
            assert_ne!(title, "Not found", "{page}");
            let images: Value = b
                .eval("return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0]);")
                .await;
            for image in images.as_array().unwrap() {
                assert_eq!(image[1], true, "{page}: the image {} does not load", image[0]);
            }
            // Only our own origin: no CDN, no web font, no script from elsewhere.
            let foreign: Value = b
                .eval("return performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith(location.origin));")
                .await;
            assert_eq!(foreign, Value::Array(vec![]), "{page} loads from elsewhere");
            let links: Value = b
                .eval("return Array.from(document.querySelectorAll('main a[href]')).map(a => a.href);")
                .await;
            for link in links.as_array().unwrap() {
                let link = link.as_str().unwrap();
                if !link.starts_with(&base) {
                    continue;
                }
                match link.split_once('#') {
                    Some((target, fragment)) if !fragment.is_empty() => {
                        if target == format!("{base}{page}") {
                            let found = b
                                .eval(&format!("return document.getElementById({fragment:?}) !== null;"))
                                .await;
                            assert_eq!(found, Value::Bool(true), "{page}: no #{fragment}");
                        } else {
                            to_check.insert(target.to_owned());
                        }
                    }
                    _ => {
                        to_check.insert(link.to_owned());
                    }
                }
            }
        }
        assert!(to_check.len() >= 10, "{to_check:?}");
        for link in &to_check {
            let response = http.get(link).send().await.expect("the link answers");
            assert_eq!(response.status(), 200, "{link} does not resolve");
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_api_reference_shows_every_route_of_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = reqwest::get(app.url("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let html = reqwest::get(app.url("/docs/reference"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let heading = format!("<code>{} {}</code>", method.to_uppercase(), path);
            assert!(html.contains(&heading), "the reference lacks {heading}");
        }
    }
    assert!(operations > 30, "{operations} operations");
    assert!(html.contains("POST /api/apply"));
    assert!(!html.contains("<script"), "the reference is plain HTML");
    app.stop().await;
}

#[test]
fn the_docs_and_the_readme_never_point_outside_the_project() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("../shared") && !text.contains("SPEC.md"),
            "{}",
            file.display()
        );
        if file.starts_with(root.join("docs")) {
            // Relative links stay inside docs/, where the installation serves them.
            for (i, _) in text.match_indices("](") {
                let target = &text[i + 2..];
                let target = &target[..target.find(')').unwrap_or(0)];
                assert!(!target.starts_with("../"), "{}: link to {target}", file.display());
            }
        }
    }
}

#[test]
fn the_index_links_every_page_and_the_pages_cover_every_topic_a_user_needs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let read =
        |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("docs/{name}: {e}"));
    let pages = docker_watcher::web::ui::docs::page_names();
    let index = read("index.md");
    for page in pages.iter().filter(|p| *p != "index.md") {
        assert!(
            index.contains(&format!("]({page})")),
            "the index does not link {page}"
        );
    }
    for page in [
        "getting-started.md",
        "install.md",
        "configuration.md",
        "configuration-as-code.md",
        "concepts.md",
        "webhooks.md",
        "tls.md",
        "stale-cleanup.md",
        "roles-and-tokens.md",
        "notifications.md",
        "backups.md",
        "high-availability.md",
        "api.md",
        "troubleshooting.md",
    ] {
        assert!(pages.iter().any(|p| p == page), "no page {page}: {pages:?}");
    }
    let concepts = read("concepts.md");
    for topic in [
        "## Projects",
        "## Stages",
        "## Tag policies",
        "## Instances",
        "## Strategies",
        "Accessories",
        "hooks",
    ] {
        assert!(concepts.contains(topic), "concepts.md says nothing under {topic}");
    }
    let webhooks = read("webhooks.md");
    for registry in [
        "### Distribution",
        "### Harbor",
        "### GitLab",
        "### GitHub Container Registry",
        "### Docker Hub",
    ] {
        assert!(webhooks.contains(registry), "webhooks.md has no {registry}");
    }
}
