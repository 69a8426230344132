//! The `docker-watcher` binary: parse the command line and configuration, set up logging, and
//! hand over to the library (`App` for `serve`, `admin` for the user and token commands,
//! `backup` for backup and restore, `client` for the commands that talk to a running server).

use std::process::ExitCode;

use clap::Parser;
use docker_watcher::app::{App, AppOptions};
use docker_watcher::config::{Cli, Command, Config, LogFormat, SecretEnv};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.global, SecretEnv::from_process_env()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("docker-watcher: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // The health check runs every few seconds in a container: no runtime, no logging set-up.
    if let Command::Healthcheck { url } = &cli.command {
        let url = url
            .clone()
            .unwrap_or_else(|| docker_watcher::client::health::default_url(config.listen));
        return match docker_watcher::client::health::check(&url) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("docker-watcher: unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("docker-watcher: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::CheckConfig => {
                print!("{}", config.to_redacted_toml());
                eprintln!("docker-watcher: the configuration is valid");
                Ok(())
            }
            Command::User(command) => docker_watcher::admin::run_user_command(&config, command).await,
            Command::Token(command) => docker_watcher::admin::run_token_command(&config, command).await,
            Command::Backup { file } => {
                let report = docker_watcher::backup::backup(&config, &file).await?;
                println!("backup written: {report}");
                eprintln!(
                    "The secrets in it are sealed with this installation's key: keep DOCKER_WATCHER_SECRET_KEY or {} from the data dir as well, stored apart from the backup.",
                    docker_watcher::secrets::SecretBox::KEY_FILE
                );
                Ok(())
            }
            Command::Restore { file, force } => {
                let report = docker_watcher::backup::restore(&config, &file, force).await?;
                println!("restored {report}");
                Ok(())
            }
            Command::Healthcheck { .. } => unreachable!("answered before the runtime starts"),
            Command::Apply(args) => {
                print!("{}", docker_watcher::client::stack::apply(&args).await?);
                Ok(())
            }
            Command::Export(args) => {
                if let Some(text) = docker_watcher::client::stack::export(&args).await? {
                    print!("{text}");
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docker-watcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::spawn(config, AppOptions::default()).await?;
    if let Some(password) = &app.generated_admin_password {
        // Printed once, on the first start only: the hash is all that is kept.
        println!("Created the admin user. Log in as 'admin' with password: {password}");
        println!("(set DOCKER_WATCHER_ADMIN_PASSWORD before the first start to choose it)");
    }
    println!("docker-watcher listening on http://{}", app.api_addr());
    let stop = app.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = stop.cancelled() => {}
    }
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("DOCKER_WATCHER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,bollard=warn"))
        // bollard logs request and response bodies at debug level — a container's environment,
        // secrets included. Whatever DOCKER_WATCHER_LOG asks for, it says no more than `info`.
        .add_directive("bollard=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
