//! Standalone proxies, `GET /proxies`: hostname → upstream URL routes not tied to a container.
//! Everyone sees the list; admins create, edit, enable or disable, and delete them (the API's
//! handlers take `Admin`, so the server refuses anyone else whatever the page shows).

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::form::{FormData, Forms, api_body};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render, see_other_with};
use super::view::When;
use crate::web::api;
use crate::web::auth::{Admin, CurrentUser, Viewer};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

const PROXY_FIELDS: &[&str] = &["name", "hostname", "target_url", "preserve_host", "enabled"];

#[derive(Template)]
#[template(path = "proxies.html")]
pub struct ProxiesPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub proxies: Vec<ProxyRow>,
}

impl PageTemplate for ProxiesPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct ProxyRow {
    pub id: i64,
    /// The id of its edit form.
    pub form_id: String,
    pub name: String,
    pub hostname: String,
    /// The hostname's link through the reverse proxy, while the proxy routes it (enabled).
    pub href: Option<String>,
    pub target_url: String,
    pub preserve_host: bool,
    pub enabled: bool,
    pub updated: When,
}

pub async fn proxies_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
) -> Response {
    render_proxies(&state, &viewer.0, flash, Forms::none(), StatusCode::OK).await
}

async fn render_proxies(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let proxies = match state.store.list_proxies().await {
        Ok(proxies) => proxies,
        Err(e) => return error_page(e.into(), Some(current)),
    };
    let now = state.clock.now();
    let page = ProxiesPage {
        chrome: Chrome::new(current, "Standalone proxies", Nav::Proxies, flash).engine(state),
        forms,
        proxies: proxies
            .iter()
            .map(|p| ProxyRow {
                id: p.id,
                form_id: format!("proxy-{}", p.id),
                name: p.name.clone(),
                hostname: p.hostname.to_string(),
                href: p.enabled.then(|| state.proxy_links.href(p.hostname.as_str())),
                target_url: p.target_url.to_string(),
                preserve_host: p.preserve_host,
                enabled: p.enabled,
                updated: When::new(p.updated_at, now),
            })
            .collect(),
    };
    render(status, &page)
}

/// `POST /proxies`: creates a proxy.
pub async fn proxies_post(State(state): State<AppState>, Ui(admin): Ui<Admin>, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&json!({
            "name": form.text("name"),
            "hostname": form.text("hostname"),
            "target_url": form.text("target_url"),
            "preserve_host": form.checked("preserve_host"),
            "enabled": form.checked("enabled"),
        }))?;
        api::proxies::proxies_post(admin.clone(), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok((_, Json(proxy))) => see_other_with(
            "/proxies",
            Flash::notice(format!(
                "Proxy {} → {} created.",
                proxy.hostname, proxy.target_url
            )),
        ),
        Err(err) => {
            let forms = Forms::failed("new-proxy", &form, &err, PROXY_FIELDS);
            render_proxies(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /proxies/{id}/edit`: changes a proxy's name, hostname, target and host header.
pub async fn proxy_edit_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&json!({
            "name": form.text("name"),
            "hostname": form.text("hostname"),
            "target_url": form.text("target_url"),
            "preserve_host": form.checked("preserve_host"),
        }))?;
        api::proxies::proxy_patch(admin.clone(), IdPath(id), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok(Json(proxy)) => see_other_with(
            "/proxies",
            Flash::notice(format!("Proxy {} saved.", proxy.hostname)),
        ),
        Err(err) => {
            let forms = Forms::failed(format!("proxy-{id}"), &form, &err, PROXY_FIELDS);
            render_proxies(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /proxies/{id}/enabled`: enables (`enabled=true`) or disables a proxy.
pub async fn proxy_enabled_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let enabled = FormData::parse(&body).checked("enabled");
    let result = async {
        let request = api_body(&json!({ "enabled": enabled }))?;
        api::proxies::proxy_patch(admin.clone(), IdPath(id), State(state.clone()), ApiJson(request)).await
    }
    .await;
    match result {
        Ok(Json(proxy)) => see_other_with(
            "/proxies",
            Flash::notice(format!(
                "Proxy {} {}.",
                proxy.hostname,
                if proxy.enabled { "enabled" } else { "disabled" }
            )),
        ),
        Err(err) => see_other_with("/proxies", Flash::error(err.message)),
    }
}

/// `POST /proxies/{id}/delete` (confirmed): deletes a proxy.
pub async fn proxy_delete_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            "Delete the proxy?",
            &format!("/proxies/{id}/delete"),
            "Its hostname stops being routed at once.",
            "Delete proxy",
            "/proxies",
        );
    }
    match api::proxies::proxy_delete(admin.clone(), IdPath(id), State(state.clone())).await {
        Ok(_) => see_other_with("/proxies", Flash::notice("Proxy deleted.")),
        Err(err) => see_other_with("/proxies", Flash::error(err.message)),
    }
}
