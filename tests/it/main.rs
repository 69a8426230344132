//! The one integration-test binary: it spawns the real application (the library's `App`, on
//! port 0, with a temporary data dir) and drives it over HTTP, against the real Docker engine
//! and registry that `scripts/test.sh` starts. One file per feature; shared helpers in
//! [`helpers`], the test environment (registries, images, commands) in [`testenv`].

mod accessories;
mod api_listener;
mod apply;
mod apply_channels;
mod auth;
mod backup;
mod browser;
mod crash;
mod deploy;
mod docker;
mod docs;
mod events;
mod failure_ui;
mod first_start;
mod heal;
mod helpers;
mod image;
mod instances;
mod logs;
mod notify;
mod notify_ui;
mod ops;
mod poll;
mod projects;
mod proxies;
mod proxy;
mod proxy_differential;
mod proxy_pool;
mod proxy_wire;
mod reference_parser;
mod registry;
mod secrets;
mod settings;
mod stages;
mod stale;
mod startup;
mod stop_first;
mod sync;
mod systemd;
mod testenv;
mod tidy;
mod ui;
mod ui_browser;
mod ui_forms;
mod ui_pages;
mod ui_state;
mod webhook;
mod webhook_ui;
mod workloads;
