//! The user documentation, served by the installation itself at `/docs/`: the Markdown pages
//! of `docs/` (embedded in the binary, rendered to HTML with pulldown-cmark, their images
//! beside them) and `/docs/reference`, the OpenAPI document of `/api/openapi.json` as a
//! readable page. Everything is rendered on the server from what the binary carries: no
//! script, no stylesheet or font from anywhere else. Public, like `/api/openapi.json`.
//!
//! Links between pages are relative (`install.md`), so they work the same in a source tree and
//! here; `tests/it/docs.rs` follows every one of them in a browser.

use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

#[derive(rust_embed::RustEmbed)]
#[folder = "docs/"]
struct DocsFiles;

#[derive(Template)]
#[template(path = "docs.html")]
struct DocsPage {
    title: String,
    body: String,
}

fn page(title: String, body: String) -> Response {
    match (DocsPage { title, body }).render() {
        Ok(html) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(e) => crate::web::error::WebError::internal(e).into_response(),
    }
}

fn not_found(path: &str) -> Response {
    let body = format!(
        "<h1>Not found</h1><p>There is no documentation page {}. Start at <a href=\"/docs/index.md\">the index</a>.</p>",
        escape(path)
    );
    let mut response = page("Not found".to_owned(), body);
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// `GET /docs` and `/docs/`: the index.
pub async fn docs_index_get() -> Redirect {
    Redirect::to("/docs/index.md")
}

/// `GET /docs/{*path}`: a page rendered from Markdown, or a file beside the pages (images).
pub async fn docs_file_get(Path(path): Path<String>) -> Response {
    if path.split('/').any(|part| part == "..") {
        return not_found(&path);
    }
    let Some(file) = DocsFiles::get(&path) else {
        return not_found(&path);
    };
    if path.ends_with(".md") {
        let markdown = String::from_utf8_lossy(&file.data);
        let title = markdown
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or("docker-watcher")
            .trim()
            .to_owned();
        return page(title, markdown_to_html(&markdown, true));
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype())
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    (
        [
            (header::CONTENT_TYPE, mime),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

/// The names of the Markdown pages (for tests and the index).
pub fn page_names() -> Vec<String> {
    let mut names: Vec<String> = DocsFiles::iter()
        .filter(|name| name.ends_with(".md"))
        .map(|name| name.into_owned())
        .collect();
    names.sort();
    names
}

/// Markdown to HTML. The pages of `docs/` may hold HTML; other text (the OpenAPI document's
/// descriptions) has any HTML in it shown as text.
fn markdown_to_html(markdown: &str, allow_html: bool) -> String {
    use pulldown_cmark::{Event, Options, Parser, html};
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_HEADING_ATTRIBUTES;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) if !allow_html => Event::Text(raw),
        other => other,
    });
    let mut out = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut out, events);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /docs/reference`: every route of the OpenAPI document — method, path, summary,
/// description, parameters, request body, responses — then every schema, as HTML.
pub async fn docs_reference_get(Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    let json = serde_json::to_value(&*doc).unwrap_or(Value::Null);
    page("API reference".to_owned(), reference_html(&json))
}

fn schema_name(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", schema_name(items));
    }
    match schema["type"].as_str() {
        Some(kind) => escape(kind),
        None => "object".to_owned(),
    }
}

fn reference_html(doc: &Value) -> String {
    let mut out = String::new();
    let info = &doc["info"];
    let _ = write!(
        out,
        "<h1>API reference</h1><p>{} {} — the machine-readable form is <a href=\"/api/openapi.json\"><code>/api/openapi.json</code></a>. Authentication, errors and examples: <a href=\"/docs/api.md\">the API</a>.</p>",
        escape(info["title"].as_str().unwrap_or("docker-watcher")),
        escape(info["version"].as_str().unwrap_or("")),
    );
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    out.push_str("<nav aria-label=\"Routes\"><ul class=\"routes\">");
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap_or(&empty) {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><code>{} {}</code></a></li>",
                anchor(method, path),
                escape(&method.to_uppercase()),
                escape(path)
            );
        }
    }
    out.push_str("</ul></nav>");
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap_or(&empty) {
            let _ = write!(
                out,
                "<section class=\"operation\" id=\"{}\"><h2><code>{} {}</code></h2>",
                anchor(method, path),
                escape(&method.to_uppercase()),
                escape(path)
            );
            for key in ["summary", "description"] {
                if let Some(text) = operation[key].as_str() {
                    let _ = write!(out, "{}", markdown_to_html(text, false));
                }
            }
            if let Some(params) = operation["parameters"].as_array().filter(|p| !p.is_empty()) {
                out.push_str("<h3>Parameters</h3><table><thead><tr><th>name</th><th>in</th><th>required</th><th>description</th></tr></thead><tbody>");
                for param in params {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(param["name"].as_str().unwrap_or("")),
                        escape(param["in"].as_str().unwrap_or("")),
                        if param["required"].as_bool().unwrap_or(false) {
                            "yes"
                        } else {
                            "no"
                        },
                        escape(param["description"].as_str().unwrap_or("")),
                    );
                }
                out.push_str("</tbody></table>");
            }
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                out.push_str("<h3>Request body</h3><ul>");
                for (media, body) in content {
                    let _ = write!(
                        out,
                        "<li><code>{}</code>: {}</li>",
                        escape(media),
                        schema_name(&body["schema"])
                    );
                }
                out.push_str("</ul>");
            }
            if let Some(responses) = operation["responses"].as_object() {
                out.push_str("<h3>Responses</h3><table><thead><tr><th>status</th><th>description</th><th>body</th></tr></thead><tbody>");
                for (status, response) in responses {
                    let body = response["content"]
                        .as_object()
                        .and_then(|c| c.values().next())
                        .map(|c| schema_name(&c["schema"]))
                        .unwrap_or_default();
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(status),
                        escape(response["description"].as_str().unwrap_or("")),
                        body
                    );
                }
                out.push_str("</tbody></table>");
            }
            out.push_str("</section>");
        }
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        out.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(
                out,
                "<section class=\"schema\" id=\"schema-{0}\"><h3>{0}</h3><pre><code>{1}</code></pre></section>",
                escape(name),
                escape(&pretty)
            );
        }
    }
    out
}

fn anchor(method: &str, path: &str) -> String {
    let slug: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{method}{slug}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_embedded_and_renders_its_title() {
        let names = page_names();
        assert!(names.contains(&"index.md".to_owned()), "{names:?}");
        let html = markdown_to_html("# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", true);
        assert!(
            html.contains("<h1>Title</h1>") && html.contains("<table>"),
            "{html}"
        );
    }

    #[test]
    fn the_reference_lists_routes_with_escaped_text() {
        let doc = serde_json::json!({
            "info": {"title": "t", "version": "1"},
            "paths": {"/api/x/{id}": {"get": {"summary": "Gets <x>.", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}}}}}},
            "components": {"schemas": {"X": {"type": "object"}}}
        });
        let html = reference_html(&doc);
        assert!(html.contains("id=\"get-api-x--id-\""), "{html}");
        assert!(html.contains("Gets &lt;x&gt;."), "{html}");
        assert!(html.contains("<a href=\"#schema-X\">X</a>"), "{html}");
    }
}
