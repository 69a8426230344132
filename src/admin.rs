//! The offline administration commands: `user add|passwd|list` and `token create`. They open the
//! store directly, so they work before the first `serve`, while it runs (SQLite in WAL mode
//! allows it) and when every admin password is lost. Secrets come in on stdin, never as
//! arguments (which `ps` and shell history would show), and a generated password or a new token
//! is printed alone on stdout, so scripts can capture it; every other message goes to stderr.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

use crate::auth::{generate_password, hash_password, new_api_token, parse_token_name};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, TokenCommand, UserCommand};
use crate::domain::event::{NewEvent, Source};
use crate::domain::user::{Password, Role, User, Username};
use crate::store::{Store, StoreError};

/// Where a command reads secrets and writes its output; the process's own streams in
/// [`run_user_command`], buffers in tests.
pub struct Console<'a> {
    pub input: &'a mut (dyn BufRead + Send),
    pub output: &'a mut (dyn Write + Send),
    pub messages: &'a mut (dyn Write + Send),
    /// Ask for input with a prompt (stdin is a terminal).
    pub interactive: bool,
}

/// Runs a `user` command on the process's stdin, stdout and stderr.
pub async fn run_user_command(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let mut input = std::io::BufReader::new(std::io::stdin());
    let (mut output, mut messages) = (std::io::stdout(), std::io::stderr());
    let interactive = std::io::stdin().is_terminal();
    let mut console = Console {
        input: &mut input,
        output: &mut output,
        messages: &mut messages,
        interactive,
    };
    user_command(config, command, &mut console).await
}

/// Runs a `token` command on the process's stdin, stdout and stderr.
pub async fn run_token_command(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let mut input = std::io::BufReader::new(std::io::stdin());
    let (mut output, mut messages) = (std::io::stdout(), std::io::stderr());
    let mut console = Console {
        input: &mut input,
        output: &mut output,
        messages: &mut messages,
        interactive: false,
    };
    token_command(config, command, &mut console).await
}

/// A `user` command with explicit streams.
pub async fn user_command(
    config: &Config,
    command: UserCommand,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            username,
            role,
            generate_password: generate,
        } => {
            let username = parse_username(&username)?;
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?;
            let (password, generated) = if generate {
                let password = generate_password();
                (
                    Password::parse(&password).map_err(|e| anyhow::anyhow!("generated password: {e}"))?,
                    true,
                )
            } else {
                (
                    read_password(console, &format!("password for '{username}'"))?,
                    false,
                )
            };
            let hash = hash_password(&password)?;
            let store = open_store(config).await?;
            let now = SystemClock.now();
            let user = store
                .insert_user(&username, &hash, role, now)
                .await
                .map_err(|e| match e {
                    StoreError::Conflict { .. } => {
                        anyhow::anyhow!("a user named '{username}' already exists")
                    }
                    other => anyhow::Error::new(other).context("adding the user"),
                })?;
            record(
                &store,
                format!("created {role} user '{}' from the command line", user.username),
                &user,
            )
            .await;
            writeln!(console.messages, "created {role} user '{}'", user.username)?;
            if generated {
                writeln!(console.messages, "its password (shown once):")?;
                writeln!(console.output, "{}", password.expose())?;
            }
            store.close().await;
            Ok(())
        }
        UserCommand::Passwd { username } => {
            let username = parse_username(&username)?;
            let store = open_existing_store(config).await?;
            let user = find_user(&store, &username).await?;
            let password = read_password(console, &format!("new password for '{}'", user.username))?;
            let hash = hash_password(&password)?;
            store
                .update_user(user.id, None, Some(&hash), SystemClock.now())
                .await
                .context("changing the password")?;
            // Whoever knew the old password may hold a session opened with it.
            let ended = store
                .delete_sessions_of_user(user.id)
                .await
                .context("ending the user's sessions")?;
            record(
                &store,
                format!(
                    "changed the password of '{}' from the command line",
                    user.username
                ),
                &user,
            )
            .await;
            writeln!(
                console.messages,
                "changed the password of '{}'; ended {ended} session(s)",
                user.username
            )?;
            store.close().await;
            Ok(())
        }
        UserCommand::List => {
            let store = open_existing_store(config).await?;
            let users = store.list_users().await.context("listing users")?;
            console.output.write_all(user_table(&users).as_bytes())?;
            store.close().await;
            Ok(())
        }
    }
}

/// A `token` command with explicit streams.
pub async fn token_command(
    config: &Config,
    command: TokenCommand,
    console: &mut Console<'_>,
) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { user, name } => {
            let username = parse_username(&user).context("--user")?;
            let name = parse_token_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let store = open_existing_store(config).await?;
            let user = find_user(&store, &username).await?;
            let (token, hash) = new_api_token();
            store
                .insert_token(user.id, &name, &hash, SystemClock.now())
                .await
                .context("creating the token")?;
            writeln!(
                console.messages,
                "created token '{name}' for '{}' (shown once):",
                user.username
            )?;
            writeln!(console.output, "{token}")?;
            store.close().await;
            Ok(())
        }
        TokenCommand::List { user } => {
            let store = open_existing_store(config).await?;
            let users = match user {
                Some(user) => vec![find_user(&store, &parse_username(&user).context("--user")?).await?],
                None => store.list_users().await.context("listing users")?,
            };
            let mut rows = Vec::new();
            for user in &users {
                for token in store.list_tokens(user.id).await.context("listing tokens")? {
                    rows.push(vec![
                        token.id.to_string(),
                        user.username.to_string(),
                        token.name,
                        crate::clock::format_time(token.created_at),
                        token
                            .last_used_at
                            .map_or_else(|| "never".to_owned(), crate::clock::format_time),
                    ]);
                }
            }
            console
                .output
                .write_all(text_table(&["ID", "USER", "NAME", "CREATED", "LAST USED"], &rows).as_bytes())?;
            store.close().await;
            Ok(())
        }
        TokenCommand::Revoke { user, id } => {
            let username = parse_username(&user).context("--user")?;
            let store = open_existing_store(config).await?;
            let user = find_user(&store, &username).await?;
            let tokens = store.list_tokens(user.id).await.context("listing tokens")?;
            let Some(token) = tokens.into_iter().find(|t| t.id == id) else {
                bail!(
                    "'{username}' has no token with id {id} (see `docker-watcher token list --user {username}`)"
                );
            };
            store
                .delete_token(user.id, id)
                .await
                .context("revoking the token")?;
            record(
                &store,
                format!(
                    "revoked API token '{}' of '{}' from the command line",
                    token.name, user.username
                ),
                &user,
            )
            .await;
            writeln!(
                console.messages,
                "revoked token {id} ('{}') of '{}'",
                token.name, user.username
            )?;
            store.close().await;
            Ok(())
        }
    }
}

fn parse_username(raw: &str) -> anyhow::Result<Username> {
    Username::parse(raw).map_err(|e| anyhow::anyhow!("username '{raw}': {e}"))
}

/// Reads a password from the first line of input. Only the line ending is removed: spaces may
/// be part of a password.
fn read_password(console: &mut Console<'_>, what: &str) -> anyhow::Result<Password> {
    if console.interactive {
        // Without a terminal library the input is echoed; say so rather than surprise.
        write!(
            console.messages,
            "{what} (input is visible; or pipe it on stdin): "
        )?;
        console.messages.flush()?;
    }
    let mut line = String::new();
    console
        .input
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!(
            "no password on stdin: pipe it in (printf '%s\\n' \"$PASSWORD\" | docker-watcher user ...) \
             or use --generate-password with `user add`"
        );
    }
    Password::parse(password).map_err(|e| anyhow::anyhow!("password: {e}"))
}

/// Opens the store of an installation that must already exist: a typo in `--data-dir` should
/// not quietly create an empty database.
async fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    let file = config.data_dir.join(Store::FILE_NAME);
    if !file.exists() {
        bail!(
            "no docker-watcher database at {}: check --data-dir (or DOCKER_WATCHER_DATA_DIR)",
            file.display()
        );
    }
    open_store(config).await
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    // The store's own errors name the file and what to do about it.
    Ok(Store::open(&config.data_dir).await?)
}

async fn find_user(store: &Store, username: &Username) -> anyhow::Result<User> {
    match store
        .find_user_by_username(username.as_str())
        .await
        .context("looking up the user")?
    {
        Some((user, _hash)) => Ok(user),
        None => bail!("no user named '{username}'"),
    }
}

/// Puts a change made outside the server in the event log, like the same change made through
/// the API. Losing it is not worth failing a command whose change is already made.
async fn record(store: &Store, message: String, user: &User) {
    let event = NewEvent::info(Source::Auth, message)
        .detail("username", user.username.as_str())
        .detail("actor", "command line")
        .recorded();
    if let Err(e) = store.insert_event(&event, SystemClock.now()).await {
        tracing::warn!(error = %e, "could not record the change in the event log");
    }
}

/// The users as an aligned text table.
fn user_table(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.username.to_string(),
                u.role.to_string(),
                crate::clock::format_time(u.created_at),
            ]
        })
        .collect();
    text_table(&["ID", "USERNAME", "ROLE", "CREATED"], &rows)
}

/// Rows under a header, each column as wide as its widest cell.
fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_token, verify_password};

    /// What a command wrote: its stdout and its stderr.
    #[derive(Debug)]
    struct Run {
        output: Vec<u8>,
        messages: Vec<u8>,
    }

    impl Run {
        fn stdout(&self) -> String {
            String::from_utf8_lossy(&self.output).into_owned()
        }
    }

    async fn user(config: &Config, command: UserCommand, stdin: &str) -> anyhow::Result<Run> {
        let mut input = stdin.as_bytes();
        let mut run = Run {
            output: Vec::new(),
            messages: Vec::new(),
        };
        let mut console = Console {
            input: &mut input,
            output: &mut run.output,
            messages: &mut run.messages,
            interactive: false,
        };
        user_command(config, command, &mut console).await.map(|()| run)
    }

    async fn token(config: &Config, command: TokenCommand) -> anyhow::Result<Run> {
        let mut input: &[u8] = b"";
        let mut run = Run {
            output: Vec::new(),
            messages: Vec::new(),
        };
        let mut console = Console {
            input: &mut input,
            output: &mut run.output,
            messages: &mut run.messages,
            interactive: false,
        };
        token_command(config, command, &mut console).await.map(|()| run)
    }

    fn add(name: &str, role: &str, generate: bool) -> UserCommand {
        UserCommand::Add {
            username: name.into(),
            role: role.into(),
            generate_password: generate,
        }
    }

    async fn stored_hash(config: &Config, name: &str) -> String {
        let store = Store::open(&config.data_dir).await.unwrap();
        let (_, hash) = store.find_user_by_username(name).await.unwrap().unwrap();
        store.close().await;
        hash
    }

    #[tokio::test]
    async fn a_user_added_with_a_password_from_stdin_can_log_in_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path().join("data"));
        let run = user(&config, add("alice", "member", false), "correct horse\r\n")
            .await
            .unwrap();
        assert_eq!(run.stdout(), "", "nothing secret to print");
        assert!(verify_password(
            &stored_hash(&config, "alice").await,
            "correct horse"
        ));

        let listed = user(&config, UserCommand::List, "").await.unwrap().stdout();
        let lines: Vec<&str> = listed.lines().collect();
        assert!(lines[0].starts_with("ID  USERNAME  ROLE    CREATED"), "{listed}");
        assert!(lines[1].starts_with("1   alice     member  20"), "{listed}");
    }

    #[tokio::test]
    async fn a_generated_password_is_printed_once_on_stdout_and_works() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        let run = user(&config, add("bob", "admin", true), "").await.unwrap();
        let password = run.stdout().trim_end().to_owned();
        assert!(password.len() >= 16, "{password:?}");
        assert!(verify_password(&stored_hash(&config, "bob").await, &password));
    }

    #[tokio::test]
    async fn bad_input_is_refused_with_a_message_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        let err = user(&config, add("alice", "member", false), "\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no password on stdin"), "{err}");
        let err = user(&config, add("alice", "member", false), "short\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("password:"), "{err}");
        let err = user(&config, add("bad name", "member", true), "")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("username 'bad name'"), "{err}");
        let err = user(&config, add("carol", "root", true), "")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--role:"), "{err}");
        user(&config, add("carol", "viewer", true), "").await.unwrap();
        let err = user(&config, add("Carol", "viewer", true), "")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(err, "a user named 'Carol' already exists");
    }

    #[tokio::test]
    async fn commands_on_a_missing_installation_say_where_they_looked() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path().join("nowhere"));
        let err = user(&config, UserCommand::List, "")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no docker-watcher database at"), "{err}");
        assert!(
            !dir.path().join("nowhere").exists(),
            "no database is created by a typo"
        );
    }

    #[tokio::test]
    async fn passwd_replaces_the_password_and_ends_the_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        user(&config, add("dave", "viewer", false), "first password\n")
            .await
            .unwrap();
        let store = Store::open(&config.data_dir).await.unwrap();
        let (dave, _) = store.find_user_by_username("dave").await.unwrap().unwrap();
        let session = crate::auth::sessions::new_session(dave.id, SystemClock.now());
        store.insert_session(&session.session).await.unwrap();

        user(
            &config,
            UserCommand::Passwd {
                username: "dave".into(),
            },
            "second password\n",
        )
        .await
        .unwrap();
        assert!(verify_password(
            &stored_hash(&config, "dave").await,
            "second password"
        ));
        assert!(
            store
                .find_session(&session.session.id_hash, SystemClock.now())
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;

        let err = user(
            &config,
            UserCommand::Passwd {
                username: "erin".into(),
            },
            "whatever123\n",
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "no user named 'erin'");
    }

    #[tokio::test]
    async fn a_created_token_is_printed_once_and_authenticates_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        user(&config, add("fay", "member", true), "").await.unwrap();
        let create = TokenCommand::Create {
            user: "fay".into(),
            name: " ci ".into(),
        };
        let printed = token(&config, create).await.unwrap().stdout();
        let printed = printed.trim_end();
        assert!(printed.starts_with("dw_"), "{printed}");

        let store = Store::open(&config.data_dir).await.unwrap();
        let (owner, record) = store
            .find_user_by_token_hash(&hash_token(printed), SystemClock.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((owner.username.as_str(), record.name.as_str()), ("fay", "ci"));
        store.close().await;

        let empty_name = TokenCommand::Create {
            user: "fay".into(),
            name: "  ".into(),
        };
        assert!(
            token(&config, empty_name)
                .await
                .unwrap_err()
                .to_string()
                .starts_with("--name:")
        );
        let nobody = TokenCommand::Create {
            user: "gil".into(),
            name: "ci".into(),
        };
        assert_eq!(
            token(&config, nobody).await.unwrap_err().to_string(),
            "no user named 'gil'"
        );
    }

    #[tokio::test]
    async fn tokens_are_listed_without_their_secret_and_a_revoked_one_stops_working() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        user(&config, add("hal", "member", true), "").await.unwrap();
        user(&config, add("ida", "viewer", true), "").await.unwrap();
        let create = |user: &str, name: &str| TokenCommand::Create {
            user: user.into(),
            name: name.into(),
        };
        let ci = token(&config, create("hal", "ci"))
            .await
            .unwrap()
            .stdout()
            .trim_end()
            .to_owned();
        token(&config, create("ida", "laptop")).await.unwrap();

        let all = token(&config, TokenCommand::List { user: None })
            .await
            .unwrap()
            .stdout();
        let lines: Vec<&str> = all.lines().collect();
        assert!(lines[0].starts_with("ID  USER  NAME    CREATED"), "{all}");
        assert!(
            lines[1].starts_with("1   hal   ci      20") && lines[1].ends_with("never"),
            "{all}"
        );
        assert!(lines[2].starts_with("2   ida   laptop"), "{all}");
        assert!(!all.contains(&ci), "a token is shown again");
        let hal = token(
            &config,
            TokenCommand::List {
                user: Some("hal".into()),
            },
        )
        .await
        .unwrap()
        .stdout();
        assert_eq!(hal.lines().count(), 2, "{hal}");

        let wrong_owner = TokenCommand::Revoke {
            user: "ida".into(),
            id: 1,
        };
        let err = token(&config, wrong_owner).await.unwrap_err().to_string();
        assert!(err.starts_with("'ida' has no token with id 1"), "{err}");
        let revoke = TokenCommand::Revoke {
            user: "hal".into(),
            id: 1,
        };
        let run = token(&config, revoke).await.unwrap();
        assert!(String::from_utf8_lossy(&run.messages).contains("revoked token 1 ('ci') of 'hal'"));
        let store = Store::open(&config.data_dir).await.unwrap();
        assert!(
            store
                .find_user_by_token_hash(&hash_token(&ci), SystemClock.now())
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}
