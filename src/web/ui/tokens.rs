//! The caller's own API tokens, `GET /tokens` (any role): the list, a form to create one — the
//! answer is the only time the token is shown, so that page is rendered directly rather than
//! through a redirect, and it is never cached — and deletion.

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
use crate::web::auth::{CurrentUser, Viewer};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub tokens: Vec<TokenRow>,
    /// A token just created: its name and the secret, shown once.
    pub created: Option<(String, String)>,
}

impl PageTemplate for TokensPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub created: When,
    pub last_used: Option<When>,
}

pub async fn tokens_get(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    flash: FlashMessage,
) -> Response {
    render_tokens(&state, &viewer.0, flash, Forms::none(), None, StatusCode::OK).await
}

async fn render_tokens(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    forms: Forms,
    created: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let tokens = match state.store.list_tokens(current.user.id).await {
        Ok(tokens) => tokens,
        Err(e) => return error_page(e.into(), Some(current)),
    };
    let now = state.clock.now();
    let page = TokensPage {
        chrome: Chrome::new(current, "API tokens", Nav::Tokens, flash).engine(state),
        forms,
        tokens: tokens
            .iter()
            .map(|t| TokenRow {
                id: t.id,
                name: t.name.clone(),
                created: When::new(t.created_at, now),
                last_used: When::opt(t.last_used_at, now),
            })
            .collect(),
        created,
    };
    render(status, &page)
}

/// `POST /tokens`: creates a token and shows it, once.
pub async fn tokens_post(State(state): State<AppState>, Ui(viewer): Ui<Viewer>, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&json!({ "name": form.text("name") }))?;
        api::tokens::tokens_post(State(state.clone()), viewer.clone(), ApiJson(request)).await
    }
    .await;
    match result {
        Ok((status, Json(token))) => {
            let created = Some((token.name, token.token));
            render_tokens(
                &state,
                &viewer.0,
                FlashMessage(None),
                Forms::none(),
                created,
                status,
            )
            .await
        }
        Err(err) => {
            let forms = Forms::failed("new-token", &form, &err, &["name"]);
            render_tokens(&state, &viewer.0, FlashMessage(None), forms, None, err.status).await
        }
    }
}

/// `POST /tokens/{id}/delete` (confirmed): revokes one of the caller's tokens.
pub async fn token_delete_post(
    State(state): State<AppState>,
    Ui(viewer): Ui<Viewer>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &viewer.0,
            "Delete the token?",
            &format!("/tokens/{id}/delete"),
            "Whatever uses it can no longer authenticate.",
            "Delete token",
            "/tokens",
        );
    }
    match api::tokens::token_delete(State(state.clone()), viewer.clone(), IdPath(id)).await {
        Ok(_) => see_other_with("/tokens", Flash::notice("Token deleted.")),
        Err(err) => see_other_with("/tokens", Flash::error(err.message)),
    }
}
