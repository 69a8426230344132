//! The first start of an installation: a start that fails (its API port is taken) creates no
//! admin, so the password the next, successful start generates and prints is the one that
//! works; nothing is lost between the two.

use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::Config;
use docker_watcher::store::Store;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_first_start_that_fails_on_a_taken_port_creates_no_admin_and_the_next_start_prints_one_that_works()
{
    let dir = tempfile::tempdir().expect("a data dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let mut config = Config::for_data_dir(dir.path());
    config.listen = taken.local_addr().unwrap();
    let err = App::spawn(config.clone(), AppOptions::default())
        .await
        .expect_err("the API port is taken");
    assert!(format!("{err:#}").contains("binding the API listener"), "{err:#}");
    let store = Store::open(dir.path()).await.expect("the store opens");
    assert_eq!(
        store.count_users().await.unwrap(),
        0,
        "a failed start left an admin behind"
    );
    store.close().await;

    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = App::spawn(config, AppOptions::default())
        .await
        .expect("the app starts");
    let password = app
        .generated_admin_password
        .clone()
        .expect("the first successful start generates the admin's password");
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/auth/login", app.api_addr()))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}
