//! Signing in: Login (a password), CompleteLogin (the challenge of a two-factor login and a
//! code), and the one tail both finish with: a session and its tokens.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    App,
    change::Change,
    lockout::{account_locked, network_allows},
    tokens::{self, ip_not_allowed},
    two_factor::{SecondFactor, invalid_code},
};
use crate::{
    model::{
        ClientInfo, Error, Login, NewActivity, Result, SessionId, SessionRecord, TenantRef, User,
        UserStatus,
    },
    store::{self, Touched},
};

/// Purpose of the mailed-token table rows that carry login challenges.
pub const PURPOSE_LOGIN_CHALLENGE: &str = "login_challenge";

/// Tokens handed out at login and refresh.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    pub session_id: SessionId,
    pub user: User,
    /// The account requires two-factor authentication and the user has not enrolled: the
    /// tokens work only for enrolling until they do.
    pub two_factor_enrollment_required: bool,
}

/// What a right password leads to.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// A session.
    Session(SessionTokens),
    /// Two-factor authentication is on: [`App::complete_login`] finishes with a code.
    SecondFactorRequired(Challenge),
}

/// The challenge of the password step of a two-factor login.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

fn invalid_credentials() -> Error {
    Error::unauthenticated(
        "INVALID_CREDENTIALS",
        "the account, login or password is wrong",
    )
}

fn invalid_challenge() -> Error {
    Error::unauthenticated(
        "INVALID_CHALLENGE",
        "the login challenge is invalid, used or expired: log in again",
    )
}

impl App {
    /// Verifies credentials and opens a session, or, for a user with two-factor authentication
    /// on, issues the challenge that [`App::complete_login`] finishes. Unknown accounts, unknown
    /// users and wrong passwords get the same answer after the same amount of hashing work, and
    /// lock the same way after as many failures.
    pub async fn login(
        &self,
        tenant: &TenantRef,
        login: &Login,
        password: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome> {
        let db = self.store.db();
        let account = store::tenants::find(db, tenant).await?;
        let found = match &account {
            Some(account) => store::users::find_by_login(db, account, login)
                .await?
                .map(|credentials| (account, credentials)),
            None => None,
        };
        let stored_hash = found.as_ref().and_then(|(_, c)| c.password_hash.as_deref());
        let verification = self.passwords.verify(password, stored_hash).await?;
        let Some((account, credentials)) = found else {
            let now = self.clock.now();
            let locked = self.guard.unknown_locked(tenant, login, now)
                || self.guard.fail_unknown(
                    tenant,
                    login,
                    now,
                    self.policies.lockout_threshold,
                    self.policies.lockout_cooldown,
                );
            return Err(if locked {
                account_locked()
            } else {
                invalid_credentials()
            });
        };
        let generation = credentials.token_generation;
        let mut user = credentials.user;
        // A locked user is refused whatever the password, so that guessing gets nowhere.
        if self.is_locked(&user).await? {
            return Err(account_locked());
        }
        if user.status == UserStatus::Locked {
            // The cool-down has passed: is_locked lifted the lock.
            user.status = UserStatus::Active;
        }
        if !verification.matches {
            self.record(
                db,
                NewActivity::on_user(user.tenant_id, None, "auth.login_failed", user.id, client),
            )
            .await?;
            return Err(if self.count_failure(&user, client).await? {
                account_locked()
            } else {
                invalid_credentials()
            });
        }
        match user.status {
            UserStatus::Active | UserStatus::Locked => {}
            UserStatus::PendingConfirmation => {
                return Err(Error::precondition(
                    "ACCOUNT_PENDING_CONFIRMATION",
                    "the account is not activated yet: follow the link in the activation email",
                ));
            }
            UserStatus::Inactive => {
                return Err(Error::precondition(
                    "ACCOUNT_INACTIVE",
                    "the account has been deactivated",
                ));
            }
        }
        if !network_allows(&user, client) {
            self.record(
                db,
                NewActivity::on_user(
                    user.tenant_id,
                    None,
                    "auth.login_refused_network",
                    user.id,
                    client,
                ),
            )
            .await?;
            return Err(ip_not_allowed());
        }
        let flags = store::lockouts::sign_in_flags(db, user.tenant_id, user.id).await?;
        if flags.failures {
            store::lockouts::clear(db, user.tenant_id, user.id).await?;
        }
        let rehash = if verification.needs_rehash {
            Some(self.passwords.hash(password).await?)
        } else {
            None
        };
        let now = self.clock.now();
        if flags.two_factor {
            if rehash.is_some() {
                store_rehash(db, &user, rehash.as_deref(), now).await?;
                self.store.wrote();
            }
            return Ok(LoginOutcome::SecondFactorRequired(
                self.issue_challenge(&user).await?,
            ));
        }
        let tx = self.change().await?;
        store_rehash(&tx, &user, rehash.as_deref(), now).await?;
        // Without a second factor of their own, the account's requirement means enrolling first.
        let enrollment_required = account.require_two_factor;
        let tokens = self
            .finish_sign_in(tx, &user, generation, enrollment_required, None, client)
            .await?;
        Ok(LoginOutcome::Session(tokens))
    }

    /// Issues the challenge of a two-factor login after a right password.
    pub(crate) async fn issue_challenge(&self, user: &User) -> Result<Challenge> {
        let now = self.clock.now();
        let token = tokens::random_secret();
        let expires_at = now + self.policies.challenge_ttl;
        store::tokens::insert(
            self.store.db(),
            user.tenant_id,
            user.id,
            PURPOSE_LOGIN_CHALLENGE,
            &tokens::token_hash(&token),
            now,
            expires_at,
        )
        .await?;
        Ok(Challenge {
            token,
            expires_at,
            user: user.clone(),
        })
    }

    /// The second step of a two-factor login: the challenge of the password step and a code.
    pub async fn complete_login(
        &self,
        challenge: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<SessionTokens> {
        let db = self.store.db();
        let now = self.clock.now();
        let found = store::tokens::find_by_hash(db, &tokens::token_hash(challenge.trim()))
            .await?
            .filter(|token| token.purpose == PURPOSE_LOGIN_CHALLENGE)
            .filter(|token| token.used_at.is_none() && token.expires_at > now)
            .ok_or_else(invalid_challenge)?;
        let credentials = store::users::get_credentials(db, found.tenant_id, found.user_id)
            .await?
            .ok_or_else(invalid_challenge)?;
        let generation = credentials.token_generation;
        let user = credentials.user;
        if self.is_locked(&user).await? {
            return Err(account_locked());
        }
        if !matches!(user.status, UserStatus::Active | UserStatus::Locked) {
            return Err(invalid_challenge());
        }
        if !network_allows(&user, client) {
            return Err(ip_not_allowed());
        }
        let Some(factor) = self.check_second_factor(&user, code).await? else {
            self.record(
                db,
                NewActivity::on_user(
                    user.tenant_id,
                    None,
                    "auth.second_factor_failed",
                    user.id,
                    client,
                ),
            )
            .await?;
            return Err(if self.count_failure(&user, client).await? {
                account_locked()
            } else {
                invalid_code()
            });
        };
        let user = User {
            status: UserStatus::Active,
            ..user
        };
        let tx = self.change().await?;
        if !store::tokens::mark_used(&tx, found.id, now).await? {
            return Err(invalid_challenge());
        }
        let enrollment_required = self.two_factor_enrollment_required(&user).await?;
        let tokens = self
            .finish_sign_in(
                tx,
                &user,
                generation,
                enrollment_required,
                Some(factor),
                client,
            )
            .await?;
        self.clear_failures(&user).await?;
        Ok(tokens)
    }

    /// The one tail of both ways to sign in (a password alone, or a password and a second
    /// factor): the last-login time, a new session and its tokens, the `auth.login` record.
    async fn finish_sign_in(
        &self,
        tx: Change,
        user: &User,
        generation: i64,
        two_factor_enrollment_required: bool,
        second_factor: Option<SecondFactor>,
        client: &ClientInfo,
    ) -> Result<SessionTokens> {
        let now = self.clock.now();
        store::users::set_last_login(&tx, user.tenant_id, user.id, now).await?;
        let tokens = self
            .open_session(
                &tx,
                user,
                generation,
                two_factor_enrollment_required,
                client,
            )
            .await?;
        let mut details = json!({ "session_id": tokens.session_id.to_string() });
        if let Some(factor) = second_factor {
            details["second_factor"] = json!(factor.as_str());
        }
        self.record(
            &tx,
            NewActivity::on_user(user.tenant_id, Some(user.id), "auth.login", user.id, client)
                .with_details(details),
        )
        .await?;
        tx.touching(Touched::Users(user.tenant_id, vec![user.id]));
        self.commit(tx).await?;
        Ok(SessionTokens {
            user: User {
                last_login_at: Some(now),
                ..tokens.user
            },
            ..tokens
        })
    }

    pub(crate) async fn open_session(
        &self,
        tx: &Change,
        user: &User,
        generation: i64,
        two_factor_enrollment_required: bool,
        client: &ClientInfo,
    ) -> Result<SessionTokens> {
        let now = self.clock.now();
        let session_id = SessionId::new();
        let refresh_token = self.tokens.refresh_token(session_id);
        let record = SessionRecord {
            id: session_id,
            tenant_id: user.tenant_id,
            user_id: user.id,
            refresh_token_hash: tokens::token_hash(&refresh_token),
            previous_refresh_token_hash: None,
            client: client.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: now + self.policies.refresh_ttl,
            revoked_at: None,
        };
        store::sessions::insert(tx, &record).await?;
        let grant = self
            .grant_with(user, session_id, generation, two_factor_enrollment_required)
            .await?;
        let (access_token, access_token_expires_at) = self.tokens.issue(&grant, now);
        Ok(SessionTokens {
            access_token,
            access_token_expires_at,
            refresh_token,
            refresh_token_expires_at: record.expires_at,
            session_id,
            user: user.clone(),
            two_factor_enrollment_required: grant.two_factor_enrollment_required,
        })
    }
}

/// Keeps a password hashed again with the current parameters (the login's `needs_rehash`).
async fn store_rehash(
    db: &impl store::Conn,
    user: &User,
    rehash: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    match rehash {
        Some(hash) => {
            store::users::set_password_hash(
                db,
                user.tenant_id,
                user.id,
                hash,
                user.password_change_required,
                now,
            )
            .await
        }
        None => Ok(()),
    }
}
