//! The accessories section of the project page (SPEC §3 "Workloads"): the list with each
//! accessory's status, image and whether it is out of date; start, stop and restart buttons and
//! an edit form for members; delete for admins; the form to add one. Its form targets:
//! `POST /projects/{id}/accessories`, `POST /accessories/{id}/edit`,
//! `POST /accessories/{id}/delete` and `POST /accessories/{id}/start|stop|restart`. Each hands
//! the form, as JSON, to the API handler that does the same for `/api`. Secret variables are
//! shown as "set" with a remove box; their values are never put into a page.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::accessory_view::edit_form_id;
use super::form::{FormData, Forms, api_body, json_number};
use super::page::{Flash, FlashMessage, Ui, error_page, see_other_with};
use super::projects::render_project;
use super::stage_form::{lines, parse_env, parse_volumes, secret_env_json};
use crate::domain::accessory::AccessoryStatus;
use crate::web::api;
use crate::web::api::workload_resources::DeleteParams;
use crate::web::auth::{Admin, Member, Viewer};
use crate::web::error::{WebError, WebResult};
use crate::web::extract::{ApiJson, ApiQuery};
use crate::web::path::IdPath;
use crate::web::state::AppState;

/// The inputs of the accessory forms, named like the API's fields so its errors land next to
/// them.
pub const ACCESSORY_FIELDS: &[&str] = &["name", "image", "port", "command", "env", "secret_env", "volumes"];

/// The id of the new-accessory form.
pub const NEW_ACCESSORY_FORM: &str = "new-accessory";

/// An accessory form as the JSON the API reads. A new one leaves blank inputs out; an edit sends
/// `null` for a blank port or command (clearing them), and `env` and `volumes` whole.
pub fn accessory_json(form: &FormData, patch: bool) -> WebResult<Value> {
    let mut body = Map::new();
    if !patch {
        body.insert("name".into(), Value::from(form.text("name")));
    }
    body.insert("image".into(), Value::from(form.text("image")));
    match form.opt("port") {
        Some(port) => {
            body.insert("port".into(), json_number(&port));
        }
        None if patch => {
            body.insert("port".into(), Value::Null);
        }
        None => {}
    }
    let command = lines(form.get("command").unwrap_or(""));
    if !command.is_empty() {
        body.insert("command".into(), Value::from(command));
    } else if patch {
        body.insert("command".into(), Value::Null);
    }
    body.insert("env".into(), parse_env("env", form.get("env").unwrap_or(""))?);
    let secrets = secret_env_json(form, "secret_env")?;
    if !secrets.is_empty() {
        body.insert("secret_env".into(), Value::Object(secrets));
    }
    body.insert(
        "volumes".into(),
        parse_volumes("volumes", form.get("volumes").unwrap_or(""))?,
    );
    Ok(Value::Object(body))
}

/// A refused form: the page again with the error next to its input; a missing project or
/// accessory is an error page.
async fn refused(
    state: &AppState,
    member: &Member,
    project_id: i64,
    form_id: String,
    form: &FormData,
    err: WebError,
) -> Response {
    if err.status == StatusCode::NOT_FOUND && err.field.is_none() {
        return error_page(err, Some(&member.0));
    }
    let forms = Forms::failed(form_id, form, &err, ACCESSORY_FIELDS);
    let viewer = Viewer(member.0.clone());
    render_project(state, &viewer, project_id, FlashMessage(None), forms, err.status).await
}

/// `POST /projects/{id}/accessories`: adds an accessory and starts it.
pub async fn project_accessories_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let result = async {
        let request = api_body(&accessory_json(&form, false)?)?;
        api::accessories::project_accessories_post(
            member.clone(),
            IdPath(id),
            State(state.clone()),
            ApiJson(request),
        )
        .await
    }
    .await;
    match result {
        Ok((_, Json(accessory))) => {
            let flash = if accessory.status == AccessoryStatus::Running.as_str() {
                Flash::notice(format!("Accessory {} added and running.", accessory.name))
            } else {
                Flash::error(format!(
                    "Accessory {} added, but it could not be started: see the events.",
                    accessory.name
                ))
            };
            see_other_with(&format!("/projects/{id}#accessories"), flash)
        }
        Err(err) => refused(&state, &member, id, NEW_ACCESSORY_FORM.to_owned(), &form, err).await,
    }
}

/// `POST /accessories/{id}/edit`: changes an accessory (it is out of date until restarted).
pub async fn accessory_edit_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let project_id = match state.store.get_accessory(id).await {
        Ok(accessory) => accessory.project_id,
        Err(_) => {
            return error_page(
                WebError::not_found(format!("no accessory with id {id}")),
                Some(&member.0),
            );
        }
    };
    let result = async {
        let request = api_body(&accessory_json(&form, true)?)?;
        api::accessories::accessory_patch(member.clone(), IdPath(id), State(state.clone()), ApiJson(request))
            .await
    }
    .await;
    match result {
        Ok(Json(accessory)) => see_other_with(
            &format!("/projects/{project_id}#accessories"),
            Flash::notice(if accessory.out_of_date {
                format!(
                    "Accessory {} saved. Restart it to apply the change.",
                    accessory.name
                )
            } else {
                format!("Accessory {} saved.", accessory.name)
            }),
        ),
        Err(err) => refused(&state, &member, project_id, edit_form_id(id), &form, err).await,
    }
}

/// `POST /accessories/{id}/delete` (admins, confirmed): deletes an accessory and its container,
/// and its volumes when `remove_volumes` is ticked.
pub async fn accessory_delete_post(
    State(state): State<AppState>,
    Ui(admin): Ui<Admin>,
    Ui(IdPath(id)): Ui<IdPath>,
    body: Bytes,
) -> Response {
    let form = FormData::parse(&body);
    let accessory = match state.store.get_accessory(id).await {
        Ok(accessory) => accessory,
        Err(_) => {
            return error_page(
                WebError::not_found(format!("no accessory with id {id}")),
                Some(&admin.0),
            );
        }
    };
    let back = format!("/projects/{}#accessories", accessory.project_id);
    if !form.confirmed() {
        return super::stages::confirmation_page(
            &admin.0,
            &format!("Delete accessory {}?", accessory.name),
            &format!("/accessories/{id}/delete"),
            "Its container is removed; its named volumes are kept unless you chose to remove them.",
            "Delete accessory",
            &back,
        );
    }
    let params = DeleteParams {
        remove_volumes: Some(form.checked("remove_volumes").to_string()),
    };
    match api::accessories::accessory_delete(
        admin.clone(),
        IdPath(id),
        State(state.clone()),
        ApiQuery(params),
    )
    .await
    {
        Ok(_) => see_other_with(
            &back,
            Flash::notice(format!("Accessory {} deleted.", accessory.name)),
        ),
        Err(err) => see_other_with(&back, Flash::error(err.message)),
    }
}

/// `POST /accessories/{id}/start|stop|restart`.
pub async fn accessory_action_post(
    State(state): State<AppState>,
    Ui(member): Ui<Member>,
    Ui(IdPath(id)): Ui<IdPath>,
    Path((_, action)): Path<(String, String)>,
) -> Response {
    let project_id = match state.store.get_accessory(id).await {
        Ok(accessory) => accessory.project_id,
        Err(_) => {
            return error_page(
                WebError::not_found(format!("no accessory with id {id}")),
                Some(&member.0),
            );
        }
    };
    let back = format!("/projects/{project_id}#accessories");
    let (path, state) = (IdPath(id), State(state));
    let result = match action.as_str() {
        "start" => api::accessories::accessory_start_post(member.clone(), path, state).await,
        "stop" => api::accessories::accessory_stop_post(member.clone(), path, state).await,
        "restart" => api::accessories::accessory_restart_post(member.clone(), path, state).await,
        other => {
            return error_page(
                WebError::not_found(format!("no accessory action '{other}'")),
                Some(&member.0),
            );
        }
    };
    match result {
        Ok(Json(accessory)) => see_other_with(
            &back,
            if accessory.status == AccessoryStatus::Failed.as_str() {
                Flash::error(format!("Accessory {} failed: see the events.", accessory.name))
            } else {
                Flash::notice(format!("Accessory {} is {}.", accessory.name, accessory.status))
            },
        ),
        Err(err) => see_other_with(&back, Flash::error(err.message)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_accessory_form_becomes_the_apis_json() {
        let form = FormData::parse(
            b"name=db&image=postgres%3A16&port=5432&command=&env=POSTGRES_DB%3Dshop\
              &secret_env=POSTGRES_PASSWORD%3Ds3cret&secret_env.remove=OLD&volumes=pgdata%3A%2Fvar%2Flib%2Fpg",
        );
        let created = accessory_json(&form, false).unwrap();
        assert_eq!(created["name"], "db");
        assert_eq!(created["port"], 5432);
        assert!(created.get("command").is_none());
        assert_eq!(created["env"], json!({"POSTGRES_DB": "shop"}));
        assert_eq!(
            created["secret_env"],
            json!({"POSTGRES_PASSWORD": "s3cret", "OLD": null})
        );
        assert_eq!(
            created["volumes"],
            json!([{"source": "pgdata", "target": "/var/lib/pg", "read_only": false}])
        );
        let patched = accessory_json(&FormData::parse(b"image=postgres%3A16&port="), true).unwrap();
        assert!(patched.get("name").is_none());
        assert_eq!(
            (&patched["port"], &patched["command"]),
            (&Value::Null, &Value::Null)
        );
        let err = accessory_json(&FormData::parse(b"volumes=nocolon"), true).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("volumes"));
    }
}
