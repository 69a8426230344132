//! Users, API tokens and login sessions (`users`, `api_tokens`, `sessions`).
//!
//! Secrets never reach this module in the clear: passwords arrive as argon2 hashes, tokens and
//! session ids as SHA-256 hashes, so a copy of the database gives nobody a way in. Usernames are
//! unique without regard to case (`Alice` and `alice` are one user), by the column's collation.
//! Deleting a user deletes its tokens and sessions with it (`ON DELETE CASCADE`).

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::FromRow;

use crate::domain::user::{ApiToken, Role, Session, User, Username};

use super::{
    Store, StoreError, StoreResult, is_foreign_key_violation, parse_col, parse_opt_ts, parse_ts, ts,
    unique_to_conflict,
};

const USERS: &str = "users";
const TOKENS: &str = "api_tokens";
const SESSIONS: &str = "sessions";

/// How stale a token's `last_used_at` may get before a request refreshes it. Every API request
/// authenticates, so writing on each one would turn reads into writes and queue them on SQLite's
/// single writer; to the minute is all an "unused since" display needs.
const TOKEN_LAST_USED_RESOLUTION: TimeDelta = TimeDelta::minutes(1);

#[derive(FromRow)]
struct UserRow {
    id: i64,
    username: String,
    role: String,
    created_at: String,
    updated_at: String,
}

impl UserRow {
    fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: self.id,
            username: Username::parse(&self.username).map_err(|e| StoreError::Corrupt {
                table: USERS,
                message: format!("'{}': {e}", self.username),
            })?,
            role: parse_col(USERS, &self.role)?,
            created_at: parse_ts(USERS, &self.created_at)?,
            updated_at: parse_ts(USERS, &self.updated_at)?,
        })
    }
}

#[derive(FromRow)]
struct TokenRow {
    id: i64,
    user_id: i64,
    name: String,
    created_at: String,
    last_used_at: Option<String>,
}

impl TokenRow {
    fn into_token(self) -> StoreResult<ApiToken> {
        Ok(ApiToken {
            id: self.id,
            user_id: self.user_id,
            name: self.name,
            created_at: parse_ts(TOKENS, &self.created_at)?,
            last_used_at: parse_opt_ts(TOKENS, self.last_used_at.as_deref())?,
        })
    }
}

#[derive(FromRow)]
struct SessionRow {
    id_hash: String,
    user_id: i64,
    csrf_token: String,
    created_at: String,
    expires_at: String,
}

impl SessionRow {
    fn into_session(self) -> StoreResult<Session> {
        Ok(Session {
            id_hash: self.id_hash,
            user_id: self.user_id,
            csrf_token: self.csrf_token,
            created_at: parse_ts(SESSIONS, &self.created_at)?,
            expires_at: parse_ts(SESSIONS, &self.expires_at)?,
        })
    }
}

/// A row of a join: the credential's columns plus its user's, prefixed `u_`.
#[derive(FromRow)]
struct WithUser<T> {
    #[sqlx(flatten)]
    record: T,
    u_id: i64,
    u_username: String,
    u_role: String,
    u_created_at: String,
    u_updated_at: String,
}

impl<T> WithUser<T> {
    fn split(self) -> StoreResult<(T, User)> {
        let user = UserRow {
            id: self.u_id,
            username: self.u_username,
            role: self.u_role,
            created_at: self.u_created_at,
            updated_at: self.u_updated_at,
        }
        .into_user()?;
        Ok((self.record, user))
    }
}

/// Column lists as macros, so queries are `concat!`-ed into `&'static str` at compile time.
macro_rules! user_columns {
    () => {
        "id, username, role, created_at, updated_at"
    };
}

/// The guard of a change that could take an admin away, on the row being changed: it is not an
/// admin, or it is not the last one.
macro_rules! another_admin_remains {
    () => {
        "(role <> 'admin' OR (SELECT count(*) FROM users WHERE role = 'admin') > 1)"
    };
}

macro_rules! joined_user_columns {
    () => {
        "u.id AS u_id, u.username AS u_username, u.role AS u_role, u.created_at AS u_created_at, \
         u.updated_at AS u_updated_at"
    };
}

impl Store {
    pub async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn count_admins(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Creates a user; a username taken in any letter case is a conflict on `username`.
    pub async fn insert_user(
        &self,
        username: &Username,
        password_hash: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (username, password_hash, role, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             RETURNING id, username, role, created_at, updated_at",
        )
        .bind(username.as_str())
        .bind(password_hash)
        .bind(role.as_str())
        .bind(ts(now))
        .bind(ts(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| unique_to_conflict(e, "username", format!("the username '{username}' is already taken")))?;
        row.into_user()
    }

    pub async fn get_user(&self, id: i64) -> StoreResult<User> {
        let row: Option<UserRow> =
            sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        row.ok_or(StoreError::NotFound)?.into_user()
    }

    /// The user with this name (in any letter case) and its password hash, for a login.
    pub async fn find_user_by_username(&self, username: &str) -> StoreResult<Option<(User, String)>> {
        let row: Option<(i64, String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, username, role, created_at, updated_at, password_hash FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.map(|(id, username, role, created_at, updated_at, hash)| {
            Ok((
                UserRow {
                    id,
                    username,
                    role,
                    created_at,
                    updated_at,
                }
                .into_user()?,
                hash,
            ))
        })
        .transpose()
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> =
            sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users ORDER BY id"))
                .fetch_all(self.pool())
                .await?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    /// Changes a user's role and/or password hash; `None` leaves that one as it is. Taking the role
    /// `admin` away from the last admin is refused, and `Ok(None)` says so: the count of admins is
    /// read by the same statement that writes, so two admins demoting each other at once cannot
    /// both pass (SQLite runs one writing statement at a time, and a statement that writes takes
    /// the write lock before it reads). `NotFound` when there is no such user.
    pub async fn update_user(
        &self,
        id: i64,
        role: Option<Role>,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "UPDATE users SET role = coalesce(?1, role), password_hash = coalesce(?2, password_hash), updated_at = ?3 \
             WHERE id = ?4 AND (?1 IS NULL OR ?1 = 'admin' OR ",
            another_admin_remains!(),
            ") RETURNING ",
            user_columns!()
        ))
        .bind(role.map(Role::as_str))
        .bind(password_hash)
        .bind(ts(now))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some(row.into_user()?)),
            // Refused, or there is no such user: `get_user` tells which.
            None => self.get_user(id).await.map(|_| None),
        }
    }

    /// Deletes a user with its tokens and sessions. Deleting the last admin is refused, and
    /// `Ok(false)` says so; the guard is in the deleting statement, as in
    /// [`Store::update_user`]. `NotFound` when there is no such user.
    pub async fn delete_user(&self, id: i64) -> StoreResult<bool> {
        let done = sqlx::query(concat!(
            "DELETE FROM users WHERE id = ? AND ",
            another_admin_remains!()
        ))
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        self.get_user(id).await.map(|_| false)
    }

    /// Records a token (by its hash) for a user; `NotFound` when the user does not exist.
    pub async fn insert_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<ApiToken> {
        let row: TokenRow = sqlx::query_as(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?) \
             RETURNING id, user_id, name, created_at, last_used_at",
        )
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(ts(now))
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound
            } else {
                // A hash collision of two random tokens does not happen; a retried insert of the
                // same token does, and must not create a second row.
                unique_to_conflict(e, "token", "this token is already registered")
            }
        })?;
        row.into_token()
    }

    /// A user's tokens, oldest first.
    pub async fn list_tokens(&self, user_id: i64) -> StoreResult<Vec<ApiToken>> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, user_id, name, created_at, last_used_at FROM api_tokens WHERE user_id = ? ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    /// Deletes a token of this user; another user's token is `NotFound`, not a way to probe ids.
    pub async fn delete_token(&self, user_id: i64, token_id: i64) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = ? AND user_id = ?")
            .bind(token_id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The user a token hash belongs to, with the token. Refreshes `last_used_at` when it is
    /// unset or older than a minute (see [`TOKEN_LAST_USED_RESOLUTION`]), so a burst of requests
    /// costs one write, not one per request.
    pub async fn find_user_by_token_hash(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(User, ApiToken)>> {
        let row: Option<WithUser<TokenRow>> = sqlx::query_as(concat!(
            "SELECT t.id, t.user_id, t.name, t.created_at, t.last_used_at, ",
            joined_user_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (token, user) = row.split()?;
        let mut token = token.into_token()?;
        if token
            .last_used_at
            .is_none_or(|last| now - last >= TOKEN_LAST_USED_RESOLUTION)
        {
            sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
                .bind(ts(now))
                .bind(token.id)
                .execute(self.pool())
                .await?;
            token.last_used_at = Some(now);
        }
        Ok(Some((user, token)))
    }

    /// Records a login session; `NotFound` when its user does not exist.
    pub async fn insert_session(&self, session: &Session) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&session.id_hash)
            .bind(session.user_id)
            .bind(&session.csrf_token)
            .bind(ts(session.created_at))
            .bind(ts(session.expires_at))
            .execute(self.pool())
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound
                } else {
                    unique_to_conflict(e, "session", "this session is already registered")
                }
            })?;
        Ok(())
    }

    /// The live session with this id hash and its user; an expired session is `None`, whether or
    /// not [`Store::prune_sessions`] has removed it yet.
    pub async fn find_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Session, User)>> {
        let row: Option<WithUser<SessionRow>> = sqlx::query_as(concat!(
            "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at, s.expires_at, ",
            joined_user_columns!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ? AND s.expires_at > ?"
        ))
        .bind(id_hash)
        .bind(ts(now))
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (session, user) = row.split()?;
        Ok(Some((session.into_session()?, user)))
    }

    /// Ends a session (logout). Ending one that is already gone is not an error.
    pub async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (password change, demotion); returns how many ended.
    pub async fn delete_sessions_of_user(&self, user_id: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes expired sessions; returns how many.
    pub async fn prune_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(ts(now))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, temp_store};
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    fn session(id_hash: &str, user_id: i64, expires_at: DateTime<Utc>) -> Session {
        Session {
            id_hash: id_hash.into(),
            user_id,
            csrf_token: "csrf".into(),
            created_at: at(0),
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_user_is_stored_and_found_by_name_in_any_case() {
        let (store, _dir) = temp_store().await;
        assert_eq!(store.count_users().await.unwrap(), 0);
        let alice = store
            .insert_user(&name("Alice"), "hash", Role::Admin, at(0))
            .await
            .unwrap();
        assert_eq!(alice.username.as_str(), "Alice");
        assert_eq!(alice.created_at, at(0));
        let (found, hash) = store.find_user_by_username("alice").await.unwrap().unwrap();
        assert_eq!((found, hash.as_str()), (alice.clone(), "hash"));
        assert_eq!(store.get_user(alice.id).await.unwrap(), alice);
        assert!(store.find_user_by_username("bob").await.unwrap().is_none());
        assert_eq!(store.count_users().await.unwrap(), 1);
        assert_eq!(store.count_admins().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_username_taken_in_another_case_is_a_conflict_on_username() {
        let (store, _dir) = temp_store().await;
        store
            .insert_user(&name("alice"), "h", Role::Viewer, at(0))
            .await
            .unwrap();
        let err = store
            .insert_user(&name("ALICE"), "h", Role::Viewer, at(0))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    field: "username",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn updating_a_user_changes_only_what_is_given() {
        let (store, _dir) = temp_store().await;
        let bob = store
            .insert_user(&name("bob"), "old", Role::Viewer, at(0))
            .await
            .unwrap();
        let promoted = store
            .update_user(bob.id, Some(Role::Member), None, at(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (promoted.role, promoted.updated_at, promoted.created_at),
            (Role::Member, at(5), at(0))
        );
        assert_eq!(
            store.find_user_by_username("bob").await.unwrap().unwrap().1,
            "old"
        );
        store.update_user(bob.id, None, Some("new"), at(6)).await.unwrap();
        let (user, hash) = store.find_user_by_username("bob").await.unwrap().unwrap();
        assert_eq!((user.role, hash.as_str()), (Role::Member, "new"));
        assert!(matches!(
            store.update_user(999, None, None, at(0)).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn users_are_listed_by_id_and_deleting_a_missing_one_is_not_found() {
        let (store, _dir) = temp_store().await;
        let b = store
            .insert_user(&name("b"), "h", Role::Viewer, at(0))
            .await
            .unwrap();
        let a = store
            .insert_user(&name("a"), "h", Role::Admin, at(0))
            .await
            .unwrap();
        let ids: Vec<i64> = store.list_users().await.unwrap().iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![b.id, a.id]);
        assert!(store.delete_user(b.id).await.unwrap());
        assert!(matches!(store.delete_user(b.id).await, Err(StoreError::NotFound)));
        assert!(matches!(store.get_user(b.id).await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn a_token_finds_its_user_and_records_its_use_at_most_once_a_minute() {
        let (store, _dir) = temp_store().await;
        let carol = store
            .insert_user(&name("carol"), "h", Role::Member, at(0))
            .await
            .unwrap();
        let token = store
            .insert_token(carol.id, "ci", "tokenhash", at(0))
            .await
            .unwrap();
        assert_eq!(token.last_used_at, None);
        let (user, used) = store
            .find_user_by_token_hash("tokenhash", at(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((user.id, used.last_used_at), (carol.id, Some(at(10))));
        let (_, again) = store
            .find_user_by_token_hash("tokenhash", at(40))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.last_used_at,
            Some(at(10)),
            "within a minute nothing is written"
        );
        let (_, later) = store
            .find_user_by_token_hash("tokenhash", at(70))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(later.last_used_at, Some(at(70)));
        assert_eq!(
            store.list_tokens(carol.id).await.unwrap()[0].last_used_at,
            Some(at(70))
        );
        assert!(
            store
                .find_user_by_token_hash("other", at(0))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_token_can_only_be_deleted_by_its_owner() {
        let (store, _dir) = temp_store().await;
        let dan = store
            .insert_user(&name("dan"), "h", Role::Member, at(0))
            .await
            .unwrap();
        let eve = store
            .insert_user(&name("eve"), "h", Role::Member, at(0))
            .await
            .unwrap();
        let token = store.insert_token(dan.id, "laptop", "h1", at(0)).await.unwrap();
        assert!(matches!(
            store.delete_token(eve.id, token.id).await,
            Err(StoreError::NotFound)
        ));
        store.delete_token(dan.id, token.id).await.unwrap();
        assert!(store.list_tokens(dan.id).await.unwrap().is_empty());
        assert!(matches!(
            store.insert_token(999, "x", "h2", at(0)).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn an_expired_session_is_not_found_and_is_pruned() {
        let (store, _dir) = temp_store().await;
        let fay = store
            .insert_user(&name("fay"), "h", Role::Viewer, at(0))
            .await
            .unwrap();
        store
            .insert_session(&session("live", fay.id, at(3600)))
            .await
            .unwrap();
        store
            .insert_session(&session("old", fay.id, at(60)))
            .await
            .unwrap();
        let (found, user) = store.find_session("live", at(120)).await.unwrap().unwrap();
        assert_eq!(
            (found.csrf_token.as_str(), found.expires_at, user.id),
            ("csrf", at(3600), fay.id)
        );
        assert!(store.find_session("old", at(120)).await.unwrap().is_none());
        assert_eq!(store.prune_sessions(at(120)).await.unwrap(), 1);
        store.delete_session("live").await.unwrap();
        store.delete_session("live").await.unwrap();
        assert!(store.find_session("live", at(120)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn deleting_a_user_ends_its_sessions_and_revokes_its_tokens() {
        let (store, _dir) = temp_store().await;
        let gus = store
            .insert_user(&name("gus"), "h", Role::Viewer, at(0))
            .await
            .unwrap();
        store
            .insert_session(&session("s1", gus.id, at(3600)))
            .await
            .unwrap();
        store
            .insert_session(&session("s2", gus.id, at(3600)))
            .await
            .unwrap();
        store.insert_token(gus.id, "t", "th", at(0)).await.unwrap();
        assert_eq!(store.delete_sessions_of_user(gus.id).await.unwrap(), 2);
        store
            .insert_session(&session("s3", gus.id, at(3600)))
            .await
            .unwrap();
        assert!(store.delete_user(gus.id).await.unwrap());
        assert!(store.find_session("s3", at(0)).await.unwrap().is_none());
        assert!(
            store
                .find_user_by_token_hash("th", at(0))
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store.insert_session(&session("s4", gus.id, at(1))).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn the_last_admin_can_be_neither_demoted_nor_deleted_but_one_of_two_can() {
        let (store, _dir) = temp_store().await;
        let root = store
            .insert_user(&name("root"), "h", Role::Admin, at(0))
            .await
            .unwrap();
        let viewer = store
            .insert_user(&name("vic"), "h", Role::Viewer, at(0))
            .await
            .unwrap();
        assert_eq!(
            store
                .update_user(root.id, Some(Role::Member), None, at(1))
                .await
                .unwrap(),
            None
        );
        assert!(!store.delete_user(root.id).await.unwrap());
        let unchanged = store.get_user(root.id).await.unwrap();
        assert_eq!((unchanged.role, unchanged.updated_at), (Role::Admin, at(0)));
        // What takes no admin away passes: the admin's own password, another user's role.
        let rehashed = store
            .update_user(root.id, Some(Role::Admin), Some("h2"), at(2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((rehashed.role, rehashed.updated_at), (Role::Admin, at(2)));
        store
            .update_user(viewer.id, Some(Role::Member), None, at(2))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            store.update_user(999, Some(Role::Viewer), None, at(2)).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.delete_user(999).await, Err(StoreError::NotFound)));

        // With a second admin, the first may be demoted; then the second is the last one.
        let ada = store
            .insert_user(&name("ada"), "h", Role::Admin, at(3))
            .await
            .unwrap();
        let demoted = store
            .update_user(root.id, Some(Role::Viewer), None, at(4))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(demoted.role, Role::Viewer);
        assert!(!store.delete_user(ada.id).await.unwrap());
        assert_eq!(
            store
                .update_user(ada.id, Some(Role::Viewer), None, at(5))
                .await
                .unwrap(),
            None
        );
        // And with two admins again, one may be deleted.
        store
            .update_user(root.id, Some(Role::Admin), None, at(6))
            .await
            .unwrap()
            .unwrap();
        assert!(store.delete_user(ada.id).await.unwrap());
        assert_eq!(store.count_admins().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn of_two_admins_taken_away_at_once_one_remains() {
        let (store, dir) = temp_store().await;
        // A second handle with its own connection pool on the same database, as a second
        // server task or process would have.
        let other = Store::open(dir.path()).await.unwrap();
        for round in 0..20 {
            let a = store
                .insert_user(&name(&format!("a{round}")), "h", Role::Admin, at(0))
                .await
                .unwrap();
            let b = store
                .insert_user(&name(&format!("b{round}")), "h", Role::Admin, at(0))
                .await
                .unwrap();
            // Demotions, then a demotion racing a deletion.
            let (first, second) = if round % 2 == 0 {
                let (x, y) = tokio::join!(
                    store.update_user(a.id, Some(Role::Member), None, at(1)),
                    other.update_user(b.id, Some(Role::Member), None, at(1)),
                );
                (x.unwrap().is_some(), y.unwrap().is_some())
            } else {
                let (x, y) = tokio::join!(
                    store.update_user(a.id, Some(Role::Member), None, at(1)),
                    other.delete_user(b.id),
                );
                (x.unwrap().is_some(), y.unwrap())
            };
            assert!(first ^ second, "round {round}: exactly one change passes");
            assert_eq!(store.count_admins().await.unwrap(), 1, "round {round}");
            // Leave no admin behind for the next round: demote the survivor's pair away.
            let survivor = if first { b.id } else { a.id };
            sqlx::query("UPDATE users SET role = 'viewer' WHERE id = ?")
                .bind(survivor)
                .execute(store.pool())
                .await
                .unwrap();
        }
    }
}
