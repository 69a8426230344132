//! Authentication and users over HTTP: login (cookie attributes, wrong credentials, the warn
//! event, rate limiting), sessions and CSRF, logout, `me`, API tokens, user management with its
//! validation and last-admin rules, and which role may call which of these endpoints.

use std::time::Duration;

use chrono::TimeDelta;
use docker_watcher::domain::event::{Severity, Source};
use reqwest::StatusCode;
use reqwest::header::{RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_PASSWORD, ApiClient, Auth, TestApp, WEBHOOK_TOKEN, assert_field_error, spawn_app,
};

/// A login without a cookie store: the raw answer, to look at its headers.
async fn login_response(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request")
}

/// Logs in and returns the session cookie's value and the CSRF token.
async fn login_cookie(app: &TestApp, username: &str, password: &str) -> (String, String) {
    let response = login_response(app, username, password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie_of(&response).expect("a session cookie");
    let value = cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("dw_session="))
        .expect("dw_session=value")
        .to_owned();
    let body: Value = response.json().await.expect("a JSON body");
    (value, body["csrf_token"].as_str().expect("csrf_token").to_owned())
}

fn session_cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("dw_session="))
        .map(str::to_owned)
}

/// A request authenticated by a cookie set by hand (no cookie store, no CSRF header).
fn with_cookie(app: &TestApp, method: reqwest::Method, path: &str, cookie: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, app.url(path))
        .header("cookie", format!("dw_session={cookie}"))
}

fn token_client(app: &TestApp, token: &str) -> ApiClient {
    ApiClient::new(&app.base_url, Auth::Token(token.to_owned()))
}

#[tokio::test]
async fn logging_in_answers_the_user_and_a_csrf_token_and_sets_an_http_only_session_cookie() {
    let app = spawn_app().await;
    let response = login_response(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie_of(&response).expect("a dw_session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP gets no Secure cookie: {cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["username"], "admin");
    assert_eq!(body["user"]["role"], "admin");
    assert!(body["user"]["id"].is_i64(), "{body}");
    assert_eq!(body["csrf_token"].as_str().map(str::len), Some(64), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn usernames_log_in_in_any_letter_case() {
    let app = spawn_app().await;
    let response = login_response(&app, "ADMIN", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_are_the_same_401_and_each_is_a_warn_event() {
    let app = spawn_app().await;
    let mut events = app.app().state().bus.subscribe(false);
    let anonymous = app.anonymous();

    let (status, wrong_password) = anonymous
        .post(
            "/api/auth/login",
            json!({"username": "admin", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password["error"]["code"], "unauthorized");
    let (status, unknown_user) = anonymous
        .post(
            "/api/auth/login",
            json!({"username": "nobody", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown_user, wrong_password,
        "nothing tells which usernames exist"
    );

    for username in ["admin", "nobody"] {
        let event = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let event = events.recv().await.expect("the bus is open");
                if event.source == Source::Auth && event.severity == Severity::Warn {
                    return event;
                }
            }
        })
        .await
        .expect("a warn event for the failed login");
        assert!(event.id.is_some(), "warn events are persisted");
        assert_eq!(event.message, format!("failed login for '{username}'"));
        assert_eq!(event.details["username"], username);
        assert_eq!(event.details["client"], "127.0.0.1");
        let serialized = serde_json::to_string(&*event).unwrap();
        assert!(
            !serialized.contains("not-the-password"),
            "the password leaked: {serialized}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_login_body_with_a_missing_or_mistyped_field_is_a_400_naming_it() {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    let (status, body) = anonymous
        .post("/api/auth/login", json!({"username": "admin"}))
        .await;
    assert_field_error(status, &body, "password");
    let (status, body) = anonymous
        .post("/api/auth/login", json!({"username": 7, "password": "x"}))
        .await;
    assert_field_error(status, &body, "username");
    let (status, body) = anonymous
        .post(
            "/api/auth/login",
            json!({"username": "admin", "password": "x", "remember": true}),
        )
        .await;
    assert_field_error(status, &body, "remember");
    app.stop().await;
}

#[tokio::test]
async fn too_many_failed_logins_from_one_address_for_one_user_are_refused_with_429_even_with_the_right_password()
 {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    for attempt in 0..docker_watcher::auth::rate_limit::MAX_FAILURES {
        let guess = format!("guess-{attempt}");
        let (status, _) = anonymous
            .post("/api/auth/login", json!({"username": "admin", "password": guess}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let response = login_response(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    app.stop().await;
}

/// A login from a given loopback address (all of 127.0.0.0/8 reaches the listener).
async fn login_from(app: &TestApp, from: &str, username: &str, password: &str) -> StatusCode {
    reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login request")
        .status()
}

#[tokio::test]
async fn failures_from_one_address_never_keep_the_owner_out_from_a_clean_address_they_only_slow_it_down() {
    use docker_watcher::auth::rate_limit::{MAX_FAILURES, username_delay};
    let app = spawn_app().await;
    for attempt in 0..MAX_FAILURES {
        let status = login_from(&app, "127.0.0.1", "admin", &format!("guess-{attempt}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // The guessing address is refused for this user, even with the right password...
    assert_eq!(
        login_from(&app, "127.0.0.1", "admin", ADMIN_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...while the owner, from another address, gets in — after the username's delay.
    let started = std::time::Instant::now();
    assert_eq!(
        login_from(&app, "127.0.0.2", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    let delay = username_delay(MAX_FAILURES);
    assert!(delay > Duration::ZERO);
    assert!(started.elapsed() >= delay, "{:?} < {delay:?}", started.elapsed());
    // The success forgave the username: the next login is not slowed down.
    let started = std::time::Instant::now();
    assert_eq!(
        login_from(&app, "127.0.0.3", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    assert!(started.elapsed() < delay, "{:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn an_address_guessing_many_usernames_is_refused_for_every_username_and_others_are_not() {
    use docker_watcher::auth::rate_limit::MAX_ADDRESS_FAILURES;
    let app = spawn_app().await;
    for attempt in 0..MAX_ADDRESS_FAILURES {
        let status = login_from(&app, "127.0.0.4", &format!("user{attempt}"), "wrong-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    assert_eq!(
        login_from(&app, "127.0.0.4", "admin", ADMIN_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from(&app, "127.0.0.5", "admin", ADMIN_PASSWORD).await,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn unsafe_requests_with_the_session_cookie_need_the_csrf_token() {
    let app = spawn_app().await;
    let session = app.login("admin", ADMIN_PASSWORD).await;

    let (status, body) = session
        .without_csrf()
        .post("/api/tokens", json!({"name": "no csrf"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let wrong = ApiClient {
        auth: Auth::Session { csrf: "0".repeat(64) },
        ..session.clone()
    };
    let (status, _) = wrong.post("/api/tokens", json!({"name": "wrong csrf"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = session.without_csrf().get("/api/tokens").await;
    assert_eq!(status, StatusCode::OK, "safe requests need no CSRF token");
    let (status, body) = session.post("/api/tokens", json!({"name": "with csrf"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, listed) = session.get("/api/tokens").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "only the request with the token did anything"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_api_token_needs_no_csrf_token() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, body) = admin.post("/api/tokens", json!({"name": "second"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn logging_out_ends_the_session_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (cookie, csrf) = login_cookie(&app, "admin", ADMIN_PASSWORD).await;

    let response = with_cookie(&app, reqwest::Method::POST, "/api/auth/logout", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "logout is an unsafe request too"
    );

    let response = with_cookie(&app, reqwest::Method::POST, "/api/auth/logout", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = session_cookie_of(&response).expect("the cookie is cleared");
    assert!(
        cleared.starts_with("dw_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // The old cookie value is dead on the server, not just forgotten by the browser.
    let response = with_cookie(&app, reqwest::Method::GET, "/api/auth/me", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn logging_out_with_an_api_token_leaves_the_token_valid() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, _) = admin.post("/api/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn me_answers_the_caller_with_the_csrf_token_of_a_session_and_null_for_a_token() {
    let app = spawn_app().await;
    let session = app.login("admin", ADMIN_PASSWORD).await;
    let (status, me) = session.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["user"]["role"], "admin");
    let Auth::Session { csrf } = &session.auth else {
        unreachable!("login gives a session")
    };
    assert_eq!(me["csrf_token"], csrf.as_str());

    let viewer = app.user_with_role("vera", "viewer").await;
    let (status, me) = viewer.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["username"], "vera");
    assert_eq!(me["user"]["role"], "viewer");
    assert_eq!(me["csrf_token"], Value::Null);

    let (status, body) = app.anonymous().get("/api/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn a_session_expires_after_seven_days() {
    let app = spawn_app().await;
    let session = app.login("admin", ADMIN_PASSWORD).await;
    app.clock.advance(TimeDelta::days(7) - TimeDelta::minutes(1));
    assert_eq!(session.get("/api/auth/me").await.0, StatusCode::OK);
    app.clock.advance(TimeDelta::minutes(2));
    let (status, body) = session.get("/api/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_token_is_shown_once_listed_without_its_secret_used_and_revoked() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, created) = admin.post("/api/tokens", json!({"name": "  deploy bot  "})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "deploy bot");
    let token = created["token"].as_str().expect("the token").to_owned();
    assert!(token.starts_with("dw_") && token.len() == 67, "{token}");
    assert!(
        created["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{created}"
    );
    let id = created["id"].as_i64().expect("an id");

    let bot = token_client(&app, &token);
    let (status, me) = bot.get("/api/auth/me").await;
    assert_eq!(
        (status, &me["user"]["username"]),
        (StatusCode::OK, &json!("admin"))
    );

    let (_, listed) = admin.get("/api/tokens").await;
    let items = listed["items"].as_array().expect("items");
    let listed_bot = items
        .iter()
        .find(|t| t["id"] == id)
        .expect("the new token is listed");
    assert_eq!(listed_bot["name"], "deploy bot");
    assert!(
        listed_bot["last_used_at"].is_string(),
        "its use is recorded: {listed_bot}"
    );
    assert!(
        listed_bot.get("token").is_none(),
        "the secret is never listed: {listed_bot}"
    );
    assert!(!listed.to_string().contains(&token));

    let (status, _) = admin.delete(&format!("/api/tokens/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = bot.get("/api/auth/me").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token is refused: {body}"
    );
    let (status, _) = admin.delete(&format!("/api/tokens/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_made_up_token_is_refused() {
    let app = spawn_app().await;
    let (status, body) = token_client(&app, &format!("dw_{}", "0".repeat(64)))
        .get("/api/tokens")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn each_user_sees_and_revokes_only_their_own_tokens() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let member = app.user_with_role("mia", "member").await;
    let (_, mine) = member.get("/api/tokens").await;
    let member_token_id = mine["items"][0]["id"].as_i64().expect("mia's token");
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1), "{mine}");

    let (_, theirs) = admin.get("/api/tokens").await;
    assert!(
        theirs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != member_token_id),
        "{theirs}"
    );
    let (status, _) = admin.delete(&format!("/api/tokens/{member_token_id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another user's token is not yours to revoke"
    );
    assert_eq!(member.get("/api/tokens").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_token_name_must_be_1_to_100_characters() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for body in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(101)}),
        json!({}),
        json!({"name": 5}),
    ] {
        let (status, answer) = admin.post("/api/tokens", body).await;
        assert_field_error(status, &answer, "name");
    }
    let (status, answer) = admin
        .post("/api/tokens", json!({"name": "ok", "scope": "all"}))
        .await;
    assert_field_error(status, &answer, "scope");
    let (status, answer) = admin.delete("/api/tokens/abc").await;
    assert_field_error(status, &answer, "id");
    app.stop().await;
}

#[tokio::test]
async fn an_admin_creates_lists_changes_and_deletes_users() {
    let app = spawn_app().await;
    let admin = app.admin().await;

    let (status, created) = admin
        .post(
            "/api/users",
            json!({"username": "bob", "password": "bob-password", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["username"], "bob");
    assert_eq!(created["role"], "member");
    assert!(
        created["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{created}"
    );
    assert!(
        created.get("password").is_none() && created.get("password_hash").is_none(),
        "{created}"
    );
    let id = created["id"].as_i64().expect("an id");

    let (status, listed) = admin.get("/api/users").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    for field in ["id", "username", "role", "created_at", "updated_at"] {
        assert!(listed["items"][1].get(field).is_some(), "{field} in {listed}");
    }

    let (status, changed) = admin
        .patch(&format!("/api/users/{id}"), json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["role"], "viewer");

    let (status, defaulted) = admin
        .post(
            "/api/users",
            json!({"username": "cleo", "password": "cleo-password"}),
        )
        .await;
    assert_eq!(
        (status, &defaulted["role"]),
        (StatusCode::CREATED, &json!("viewer")),
        "viewer is the default role"
    );

    let bob = app.login("bob", "bob-password").await;
    let (status, _) = admin.delete(&format!("/api/users/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = bob.get("/api/auth/me").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deleted user's session ends with it"
    );
    let (status, _) = admin.delete(&format!("/api/users/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn every_invalid_user_field_is_a_400_naming_it() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cases = [
        (
            json!({"username": "bad name", "password": "long-enough", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "", "password": "long-enough", "role": "viewer"}),
            "username",
        ),
        (json!({"password": "long-enough", "role": "viewer"}), "username"),
        (
            json!({"username": "dan", "password": "short", "role": "viewer"}),
            "password",
        ),
        (
            json!({"username": "dan", "password": 12345678, "role": "viewer"}),
            "password",
        ),
        (
            json!({"username": "dan", "password": "long-enough", "role": "root"}),
            "role",
        ),
        (
            json!({"username": "dan", "password": "long-enough", "role": "viewer", "email": "d@x"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = admin.post("/api/users", body).await;
        assert_field_error(status, &answer, field);
    }
    let (_, listed) = admin.get("/api/users").await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "nothing was created: {listed}"
    );

    let (_, me) = admin.get("/api/auth/me").await;
    let admin_id = me["user"]["id"].as_i64().unwrap();
    let path = format!("/api/users/{admin_id}");
    for (body, field) in [
        (json!({"role": "boss"}), "role"),
        (json!({"password": "short"}), "password"),
        (json!({"username": "renamed"}), "username"),
    ] {
        let (status, answer) = admin.patch(&path, body).await;
        assert_field_error(status, &answer, field);
    }
    for bad_id in ["abc", "0", "-1", "1.5"] {
        let (status, answer) = admin
            .patch(&format!("/api/users/{bad_id}"), json!({"role": "viewer"}))
            .await;
        assert_field_error(status, &answer, "id");
        let (status, answer) = admin.delete(&format!("/api/users/{bad_id}")).await;
        assert_field_error(status, &answer, "id");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_taken_username_in_any_letter_case_is_a_409_on_username() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let user = json!({"username": "Erin", "password": "erin-password", "role": "viewer"});
    assert_eq!(admin.post("/api/users", user).await.0, StatusCode::CREATED);
    let (status, body) = admin
        .post(
            "/api/users",
            json!({"username": "erin", "password": "erin-password", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "username");
    app.stop().await;
}

#[tokio::test]
async fn unknown_user_ids_are_404() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, body) = admin.patch("/api/users/9999", json!({"role": "member"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{body}"
    );
    let (status, _) = admin.delete("/api/users/9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_last_admin_can_be_neither_demoted_nor_deleted_and_no_admin_deletes_themselves() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (_, me) = admin.get("/api/auth/me").await;
    let admin_id = me["user"]["id"].as_i64().unwrap();

    let (status, body) = admin
        .patch(&format!("/api/users/{admin_id}"), json!({"role": "member"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("last admin"),
        "{body}"
    );
    let (status, body) = admin.delete(&format!("/api/users/{admin_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your own account"),
        "{body}"
    );

    // With a second admin, the first may step down; then the second is the last one.
    let (status, second) = admin
        .post(
            "/api/users",
            json!({"username": "ada", "password": "ada-password", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["id"].as_i64().unwrap();
    let (status, demoted) = admin
        .patch(&format!("/api/users/{admin_id}"), json!({"role": "member"}))
        .await;
    assert_eq!(
        (status, &demoted["role"]),
        (StatusCode::OK, &json!("member")),
        "{demoted}"
    );

    let ada = app.login("ada", "ada-password").await;
    let (status, body) = ada
        .patch(&format!("/api/users/{second_id}"), json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = ada.delete(&format!("/api/users/{second_id}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, listed) = ada.get("/api/users").await;
    let admins = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin")
        .count();
    assert_eq!(admins, 1, "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn changing_a_password_ends_that_users_sessions_and_only_the_new_one_logs_in() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (_, created) = admin
        .post(
            "/api/users",
            json!({"username": "fred", "password": "old-password", "role": "member"}),
        )
        .await;
    let id = created["id"].as_i64().unwrap();
    let fred = app.login("fred", "old-password").await;
    assert_eq!(fred.get("/api/auth/me").await.0, StatusCode::OK);

    let (status, body) = admin
        .patch(&format!("/api/users/{id}"), json!({"password": "new-password"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "member", "the role is left alone");
    assert_eq!(fred.get("/api/auth/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login_response(&app, "fred", "old-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.login("fred", "new-password").await;
    app.stop().await;
}

#[tokio::test]
async fn without_credentials_the_user_token_and_hook_endpoints_are_401() {
    let app = spawn_app().await;
    let anonymous = app.anonymous();
    let requests = [
        anonymous.get("/api/users").await,
        anonymous
            .post(
                "/api/users",
                json!({"username": "x", "password": "xxxxxxxx", "role": "admin"}),
            )
            .await,
        anonymous.patch("/api/users/1", json!({"role": "viewer"})).await,
        anonymous.delete("/api/users/1").await,
        anonymous.get("/api/tokens").await,
        anonymous.post("/api/tokens", json!({"name": "x"})).await,
        anonymous.delete("/api/tokens/1").await,
        anonymous.get("/api/hooks/registry/token").await,
        anonymous.post("/api/auth/logout", json!({})).await,
    ];
    for (status, body) in requests {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    app.stop().await;
}

#[tokio::test]
async fn viewers_and_members_are_403_on_admin_endpoints_but_manage_their_own_tokens() {
    let app = spawn_app().await;
    for (name, role) in [("val", "viewer"), ("max", "member")] {
        let client = app.user_with_role(name, role).await;
        let requests = [
            client.get("/api/users").await,
            client
                .post(
                    "/api/users",
                    json!({"username": "x", "password": "xxxxxxxx", "role": "admin"}),
                )
                .await,
            client.patch("/api/users/1", json!({"role": "viewer"})).await,
            client.delete("/api/users/1").await,
            client.get("/api/hooks/registry/token").await,
        ];
        for (status, body) in requests {
            assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        let (status, created) = client.post("/api/tokens", json!({"name": "own"})).await;
        assert_eq!(status, StatusCode::CREATED, "{role}: {created}");
        let id = created["id"].as_i64().unwrap();
        assert_eq!(client.get("/api/tokens").await.0, StatusCode::OK);
        assert_eq!(
            client.delete(&format!("/api/tokens/{id}")).await.0,
            StatusCode::NO_CONTENT
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_admin_reads_the_webhook_token() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (status, body) = admin.get("/api/hooks/registry/token").await;
    assert_eq!(status, StatusCode::OK);
    let host = app.base_url.trim_start_matches("http://");
    assert_eq!(
        body,
        json!({
            "token": WEBHOOK_TOKEN,
            "url": format!("http://{host}/api/hooks/registry?token={WEBHOOK_TOKEN}"),
            "configured_by_env": true,
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_auth_user_token_and_hook_routes() {
    let app = spawn_app().await;
    let (status, doc) = app.anonymous().get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/auth/login", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/me", "get"),
        ("/api/users", "get"),
        ("/api/users", "post"),
        ("/api/users/{id}", "patch"),
        ("/api/users/{id}", "delete"),
        ("/api/tokens", "get"),
        ("/api/tokens", "post"),
        ("/api/tokens/{id}", "delete"),
        ("/api/hooks/registry/token", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert!(
        doc["paths"]["/api/auth/login"]["post"].get("security").is_none(),
        "login needs no credentials"
    );
    assert!(doc["paths"]["/api/users"]["get"]["security"].is_array());
    app.stop().await;
}
