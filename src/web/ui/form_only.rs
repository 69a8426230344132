//! The page for an address that only takes a form's submission (`/stages/5/edit`,
//! `/instances/7/stop`), opened directly — from the history, a bookmark, a pasted link. The
//! answer stays `405 Method Not Allowed` with its `Allow` header, as HTTP asks, but as a page
//! that says what happened and links to the page holding the form, not a bare status.

use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, ErrorPage, FlashMessage, Nav, render};
use crate::web::auth::CurrentUser;

/// The page that holds the forms posting to `path`, and how to name it.
pub fn form_home(path: &str) -> (String, &'static str) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["projects", id, _, ..] if id.parse::<i64>().is_ok() => {
            (format!("/projects/{id}"), "the project's page")
        }
        ["stages", id, _, ..] if id.parse::<i64>().is_ok() => (format!("/stages/{id}"), "the stage's page"),
        ["stale", ..] => ("/stale".to_owned(), "the stale containers page"),
        ["proxies", ..] => ("/proxies".to_owned(), "the proxies page"),
        ["settings", ..] => ("/settings".to_owned(), "the settings page"),
        ["users", ..] => ("/users".to_owned(), "the users page"),
        ["tokens", ..] => ("/tokens".to_owned(), "the tokens page"),
        ["notifications", ..] => ("/notifications".to_owned(), "the notifications page"),
        _ => ("/".to_owned(), "the dashboard"),
    }
}

/// The `405` page for `path` (the router adds the route's `Allow` header to it).
pub fn form_only_page(path: &str, current: Option<&CurrentUser>) -> Response {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    let reason = status
        .canonical_reason()
        .unwrap_or("Method Not Allowed")
        .to_owned();
    let title = format!("{} {reason}", status.as_u16());
    let chrome = match current {
        Some(current) => Chrome::new(current, title, Nav::None, FlashMessage(None)),
        None => Chrome::anonymous(title),
    };
    let (back_href, back_label) = form_home(path);
    let page = ErrorPage {
        chrome,
        status: status.as_u16(),
        reason,
        message: format!(
            "{path} is where a form sends what you submit; it is not a page to open. Use the form on {back_label}."
        ),
        back_href,
        back_label: back_label.to_owned(),
    };
    render(status, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_address_leads_back_to_the_page_holding_the_form() {
        assert_eq!(form_home("/stages/5/edit").0, "/stages/5");
        assert_eq!(form_home("/projects/2/stages").0, "/projects/2");
        assert_eq!(form_home("/proxies/3/enabled").0, "/proxies");
        assert_eq!(form_home("/notifications/channels/4/test").0, "/notifications");
        assert_eq!(form_home("/instances/7/stop"), ("/".to_owned(), "the dashboard"));
        assert_eq!(form_home("/projects").0, "/");
        assert_eq!(form_home("/stages/x/edit").0, "/");
    }
}
