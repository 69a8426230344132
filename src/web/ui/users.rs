//! Users, `GET /users` (admins): every account with its role; forms to add a user, change a
//! role or set a new password, and delete an account. The rules — the last admin stays, an admin
//! cannot delete themselves, a new password ends the user's sessions — are the API handlers'.

use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::form::{FormData, Forms, api_body};
use super::page::{Chrome, Flash, FlashMessage, Nav, PageTemplate, Ui, error_page, render, see_other_with};
use super::view::When;
use crate::web::api;
use crate::web::auth::{Admin, CurrentUser};
use crate::web::extract::ApiJson;
use crate::web::path::IdPath;
use crate::web::state::AppState;

const USER_FIELDS: &[&str] = &["username", "password", "role"];

#[derive(Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub chrome: Chrome,
    pub forms: Forms,
    pub users: Vec<UserRow>,
    pub roles: [&'static str; 3],
}

impl PageTemplate for UsersPage {
    fn chrome(&self) -> &Chrome {
        &self.chrome
    }
}

pub struct UserRow {
    pub id: i64,
    pub form_id: String,
    pub username: String,
    pub role: String,
    pub created: When,
    /// The admin looking at the page (who cannot delete themselves).
    pub is_self: bool,
}

pub async fn users_get(State(state): State<AppState>, Ui(admin): Ui<Admin>, flash: FlashMessage) -> Response {
    render_users(&state, &admin.0, flash, Forms::none(), StatusCode::OK).await
}

async fn render_users(
    state: &AppState,
    current: &CurrentUser,
    flash: FlashMessage,
    forms: Forms,
    status: StatusCode,
) -> Response {
    let users = match state.store.list_users().await {
        Ok(users) => users,
        Err(e) => return error_page(e.into(), Some(current)),
    };
    let now = state.clock.now();
    let page = UsersPage {
        chrome: Chrome::new(current, "Users", Nav::Users, flash).engine(state),
        forms,
        users: users
            .iter()
            .map(|u| UserRow {
                id: u.id,
                form_id: format!("user-{}", u.id),
                username: u.username.as_str().to_owned(),
                role: u.role.to_string(),
                created: When::new(u.created_at, now),
                is_self: u.id == current.user.id,
            })
            .collect(),
        roles: ["viewer", "member", "admin"],
    };
    render(status, &page)
}

/// `POST /users`: adds a user.
pub async fn users_post(State(state): State<AppState>, Ui(admin): Ui<Admin>, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let mut request = Map::new();
        request.insert("username".into(), Value::from(form.text("username")));
        request.insert("password".into(), Value::from(form.get("password").unwrap_or("")));
        request.insert("role".into(), Value::from(form.text("role")));
        let request = api_body(&Value::Object(request))?;
        api::users::users_post(State(state.clone()), admin.clone(), ApiJson(request)).await
    }
    .await;
    match result {
        Ok((_, Json(user))) => see_other_with(
            "/users",
            Flash::notice(format!("Added {} {}.", user.role, user.username)),
        ),
        Err(err) => {
            let forms = Forms::failed("new-user", &form, &err, USER_FIELDS);
            render_users(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /users/{id}/edit`: changes a role, and the password when one is typed.
pub async fn user_edit_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let mut request = Map::new();
        if let Some(role) = form.opt("role") {
            request.insert("role".into(), Value::from(role));
        }
        if let Some(password) = form.get("password").filter(|p| !p.is_empty()) {
            request.insert("password".into(), Value::from(password));
        }
        let request = api_body(&Value::Object(request))?;
        api::users::user_patch(State(state.clone()), admin.clone(), IdPath(id), ApiJson(request)).await
    }
    .await;
    match result {
        Ok(Json(user)) => see_other_with("/users", Flash::notice(format!("Saved {}.", user.username))),
        Err(err) => {
            let forms = Forms::failed(format!("user-{id}"), &form, &err, USER_FIELDS);
            render_users(&state, &admin.0, FlashMessage(None), forms, err.status).await
        }
    }
}

/// `POST /users/{id}/delete` (confirmed): deletes a user with their tokens and sessions.
pub async fn user_delete_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    if !FormData::parse(&body).confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            "Delete the user?",
            &format!("/users/{id}/delete"),
            "Their API tokens and sessions end at once.",
            "Delete user",
            "/users",
        );
    }
    match api::users::user_delete(State(state.clone()), admin.clone(), IdPath(id)).await {
        Ok(_) => see_other_with("/users", Flash::notice("User deleted.")),
        Err(err) => see_other_with("/users", Flash::error(err.message)),
    }
}
