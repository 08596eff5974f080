//! Sign-up, activation, login, refresh, logout, token validation and password change.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{
    App,
    lockout::network_allows,
    mail,
    policy::{Action, authorize},
    sign_in::SessionTokens,
    tokens::{self, RevocationEvent, ip_not_allowed},
};
use crate::{
    model::{
        AccountName, ClientInfo, Email, Error, NewActivity, Password, PersonName, Principal,
        Result, SessionRecord, Tenant, TenantId, User, UserId, UserStatus, Username,
        slug_from_name,
    },
    store::{self, Touched},
};

/// Purposes of mailed single-use tokens.
pub const PURPOSE_ACTIVATION: &str = "activation";
/// An invitation: the user chooses a password on activation.
pub const PURPOSE_INVITATION: &str = "invitation";

/// A parsed sign-up request.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub account_name: AccountName,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: Email,
    pub password: Password,
}

/// What sign-up created.
#[derive(Debug, Clone)]
pub struct SignedUp {
    pub tenant: Tenant,
    pub user: User,
}

fn invalid_refresh() -> Error {
    Error::unauthenticated(
        "INVALID_REFRESH_TOKEN",
        "the refresh token is invalid or has expired",
    )
}

impl App {
    /// Creates an account and its owner, and mails the activation link.
    pub async fn sign_up(&self, request: SignUp, client: &ClientInfo) -> Result<SignedUp> {
        let password_hash = self.passwords.hash(request.password.expose()).await?;
        let now = self.clock.now();
        let tx = self.change().await?;
        let base = slug_from_name(request.account_name.as_str());
        let mut slug = base.clone();
        for _ in 0..8 {
            if !store::tenants::slug_taken(&tx, &slug).await? {
                break;
            }
            slug = format!(
                "{base}-{}",
                &tokens::random_secret()[..6]
                    .to_lowercase()
                    .replace(['-', '_'], "x")
            );
        }
        let tenant = Tenant {
            id: TenantId::new(),
            slug,
            name: request.account_name,
            owner_user_id: None,
            require_two_factor: false,
            created_at: now,
        };
        store::tenants::insert(&tx, &tenant).await?;
        let user = User {
            id: UserId::new(),
            tenant_id: tenant.id,
            username: Username::parse("email", request.email.as_str())?,
            email: request.email,
            first_name: request.first_name,
            last_name: request.last_name,
            status: UserStatus::PendingConfirmation,
            roles: Vec::new(),
            is_owner: true,
            is_admin: false,
            tags: Vec::new(),
            memberships: Vec::new(),
            password_change_required: false,
            dialer_profile: None,
            caldav_token_set: false,
            pbx_password_set: false,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            email_verified: false,
            pending_email: None,
        };
        store::users::insert(
            &tx,
            &store::users::NewUser {
                user: user.clone(),
                password_hash: Some(password_hash),
                secrets: Default::default(),
            },
        )
        .await?;
        store::tenants::set_owner(&tx, tenant.id, None, user.id).await?;
        let tenant = Tenant {
            owner_user_id: Some(user.id),
            ..tenant
        };
        self.issue_activation(&tx, &tenant, &user, PURPOSE_ACTIVATION, true)
            .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                tenant.id,
                Some(user.id),
                "account.signed_up",
                user.id,
                client,
            )
            .with_details(json!({ "tenant_slug": tenant.slug })),
        )
        .await?;
        self.commit(tx).await?;
        tracing::info!(tenant_id = %tenant.id, user_id = %user.id, "account signed up");
        Ok(SignedUp { tenant, user })
    }

    /// Creates a single-use activation (or invitation) token for `user`, retiring older unused
    /// ones, and queues its email when `send_mail`. Returns the token.
    pub(crate) async fn issue_activation(
        &self,
        tx: &super::change::Change,
        tenant: &Tenant,
        user: &User,
        purpose: &'static str,
        send_mail: bool,
    ) -> Result<String> {
        let ttl = self.policies.activation_ttl;
        let token = self
            .issue_mailed_token(
                tx,
                tenant.id,
                user.id,
                purpose,
                &[PURPOSE_ACTIVATION, PURPOSE_INVITATION],
                ttl,
            )
            .await?;
        if send_mail {
            let message = activation_mail(
                &self.link("activate", &token),
                tenant,
                user,
                purpose,
                ttl.num_hours().max(1),
            );
            self.queue_mail(tx, Some(tenant.id), &message).await?;
        }
        Ok(token)
    }

    /// Consumes an activation or invitation token; the user becomes ACTIVE. `password` is
    /// required from a user who has none yet and ignored otherwise.
    pub async fn activate(
        &self,
        token: &str,
        password: Option<Password>,
        client: &ClientInfo,
    ) -> Result<User> {
        let invalid = super::invalid_token;
        let now = self.clock.now();
        let found = self
            .mailed_token(
                token,
                &[PURPOSE_ACTIVATION, PURPOSE_INVITATION],
                "the activation link has expired; ask for a new one",
            )
            .await?;
        let credentials =
            store::users::get_credentials(self.store.db(), found.tenant_id, found.user_id)
                .await?
                .ok_or_else(invalid)?;
        let new_hash = match (&credentials.password_hash, password) {
            (Some(_), _) => None,
            (None, Some(password)) => Some(self.passwords.hash(password.expose()).await?),
            (None, None) => {
                return Err(Error::invalid(
                    "password",
                    "is required to activate an invited user",
                ));
            }
        };
        let tx = self.change().await?;
        if !store::tokens::mark_used(&tx, found.id, now).await? {
            return Err(invalid());
        }
        if let Some(hash) = &new_hash {
            store::users::set_password_hash(&tx, found.tenant_id, found.user_id, hash, false, now)
                .await?;
        }
        store::users::mark_email_verified(&tx, found.tenant_id, found.user_id, now).await?;
        if credentials.user.status == UserStatus::PendingConfirmation {
            store::users::set_status(
                &tx,
                found.tenant_id,
                &[found.user_id],
                UserStatus::Active,
                now,
            )
            .await?;
        }
        self.record(
            &tx,
            NewActivity::on_user(
                found.tenant_id,
                Some(found.user_id),
                "user.activated",
                found.user_id,
                client,
            ),
        )
        .await?;
        tx.touching(Touched::Users(found.tenant_id, vec![found.user_id]));
        self.commit(tx).await?;
        store::users::get(self.store.db(), found.tenant_id, found.user_id)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// Rotates a refresh token. A token that was already used ends its session (it was stolen,
    /// or replayed).
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo) -> Result<SessionTokens> {
        let session_id =
            tokens::refresh_token_session(refresh_token.trim()).ok_or_else(invalid_refresh)?;
        let presented = tokens::token_hash(refresh_token.trim());
        let now = self.clock.now();
        let db = self.store.db();
        let session = store::sessions::find(db, session_id)
            .await?
            .ok_or_else(invalid_refresh)?;
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(invalid_refresh());
        }
        let is_current = bool::from(
            presented
                .as_bytes()
                .ct_eq(session.refresh_token_hash.as_bytes()),
        );
        let is_previous = session
            .previous_refresh_token_hash
            .as_ref()
            .is_some_and(|previous| bool::from(presented.as_bytes().ct_eq(previous.as_bytes())));
        if !is_current {
            // A genuine token of this session that is no longer current was spent already:
            // whoever presents it replays it, however many rotations ago it was spent.
            if is_previous || self.tokens.issued_refresh_token(refresh_token.trim()) {
                self.end_session_for_reuse(&session, client).await?;
            }
            return Err(invalid_refresh());
        }
        let credentials = store::users::get_credentials(db, session.tenant_id, session.user_id)
            .await?
            .filter(|found| found.user.status == UserStatus::Active)
            .ok_or_else(invalid_refresh)?;
        let generation = credentials.token_generation;
        let user = credentials.user;
        // The extended IP ACL applies to refreshes as to logins.
        if !network_allows(&user, client) {
            return Err(ip_not_allowed());
        }
        let new_token = self.tokens.refresh_token(session_id);
        let tx = self.change().await?;
        if !store::sessions::rotate(
            &tx,
            session_id,
            &presented,
            &tokens::token_hash(&new_token),
            client,
            now,
        )
        .await?
        {
            // Another call rotated this token first: the same token was presented twice.
            drop(tx);
            self.end_session_for_reuse(&session, client).await?;
            return Err(invalid_refresh());
        }
        self.record(
            &tx,
            NewActivity::on_user(
                user.tenant_id,
                Some(user.id),
                "auth.session_refreshed",
                user.id,
                client,
            )
            .with_details(json!({ "session_id": session_id.to_string() })),
        )
        .await?;
        tx.touching(Touched::Users(user.tenant_id, vec![user.id]));
        self.commit(tx).await?;
        let grant = self.grant(&user, session_id, generation).await?;
        let (access_token, access_token_expires_at) = self.tokens.issue(&grant, now);
        Ok(SessionTokens {
            access_token,
            access_token_expires_at,
            refresh_token: new_token,
            refresh_token_expires_at: session.expires_at,
            session_id,
            user,
            two_factor_enrollment_required: grant.two_factor_enrollment_required,
        })
    }

    async fn end_session_for_reuse(
        &self,
        session: &SessionRecord,
        client: &ClientInfo,
    ) -> Result<()> {
        let now = self.clock.now();
        let tx = self.change().await?;
        store::sessions::revoke(
            &tx,
            session.tenant_id,
            session.id,
            "refresh_token_reused",
            now,
        )
        .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                session.tenant_id,
                None,
                "auth.refresh_token_reused",
                session.user_id,
                client,
            )
            .with_details(json!({ "session_id": session.id.to_string() })),
        )
        .await?;
        tx.touching(Touched::Users(session.tenant_id, vec![session.user_id]));
        tx.revoke(RevocationEvent::Sessions(vec![session.id], now));
        self.commit(tx).await?;
        tracing::warn!(tenant_id = %session.tenant_id, session_id = %session.id, "refresh token reused; session ended");
        Ok(())
    }

    /// Ends the caller's session.
    pub async fn logout(&self, principal: &Principal, client: &ClientInfo) -> Result<()> {
        authorize(principal, Action::EndOwnSession)?;
        let now = self.clock.now();
        let tx = self.change().await?;
        store::sessions::revoke(
            &tx,
            principal.tenant_id,
            principal.session_id,
            "logout",
            now,
        )
        .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "auth.logout",
                principal.user_id,
                client,
            )
            .with_details(json!({ "session_id": principal.session_id.to_string() })),
        )
        .await?;
        tx.touching(Touched::Users(principal.tenant_id, vec![principal.user_id]));
        tx.revoke(RevocationEvent::Sessions(vec![principal.session_id], now));
        self.commit(tx).await?;
        Ok(())
    }

    /// Verifies an access token (no database round trip).
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal> {
        if access_token.starts_with(super::service_accounts::KEY_PREFIX) {
            return self.authenticate_api_key(access_token).await;
        }
        self.tokens.verify(access_token, self.clock.now())
    }

    /// Verifies an access token presented from `address`: a token of a user with the extended
    /// IP ACL on is refused from outside their allowed networks (no database round trip). An
    /// API key (`rsk_...`) gives its service account's principal.
    pub async fn authenticate_from(
        &self,
        access_token: &str,
        address: Option<std::net::IpAddr>,
    ) -> Result<Principal> {
        if access_token.starts_with(super::service_accounts::KEY_PREFIX) {
            return self.authenticate_api_key(access_token).await;
        }
        self.tokens
            .verify_from(access_token, self.clock.now(), address)
    }

    /// The caller's user and account.
    pub async fn who_am_i(&self, principal: &Principal) -> Result<(Arc<User>, Arc<Tenant>)> {
        authorize(principal, Action::ReadSelf)?;
        let user = self
            .cached_user(principal.tenant_id, principal.user_id)
            .await?
            .ok_or_else(Error::caller_gone)?;
        let tenant = self
            .cached_tenant(principal.tenant_id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        Ok((user, tenant))
    }

    /// Changes the caller's password after checking the current one, and ends their other sessions.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current_password: &str,
        new_password: Password,
        client: &ClientInfo,
    ) -> Result<(String, DateTime<Utc>)> {
        authorize(principal, Action::ChangeOwnPassword)?;
        let db = self.store.db();
        let credentials = store::users::get_credentials(db, principal.tenant_id, principal.user_id)
            .await?
            .ok_or_else(Error::caller_gone)?;
        let verification = self
            .passwords
            .verify(current_password, credentials.password_hash.as_deref())
            .await?;
        if !verification.matches {
            return Err(Error::invalid(
                "current_password",
                "is not the current password",
            ));
        }
        if current_password == new_password.expose() {
            return Err(Error::invalid(
                "new_password",
                "must differ from the current password",
            ));
        }
        let hash = self.passwords.hash(new_password.expose()).await?;
        let now = self.clock.now();
        let tx = self.change().await?;
        store::users::set_password_hash(
            &tx,
            principal.tenant_id,
            principal.user_id,
            &hash,
            false,
            now,
        )
        .await?;
        let ended = store::sessions::revoke_user_sessions(
            &tx,
            principal.tenant_id,
            principal.user_id,
            Some(principal.session_id),
            "password_changed",
            now,
        )
        .await?;
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "user.password_changed",
                principal.user_id,
                client,
            )
            .with_details(json!({ "sessions_ended": ended.len() })),
        )
        .await?;
        let revoked = vec![RevocationEvent::Sessions(ended, now)];
        for event in revoked {
            tx.revoke(event);
        }
        self.commit(tx).await?;
        let credentials =
            store::users::get_credentials(self.store.db(), principal.tenant_id, principal.user_id)
                .await?
                .ok_or_else(Error::caller_gone)?;
        let generation = credentials.token_generation;
        Ok(self.tokens.issue(
            &self
                .grant(&credentials.user, principal.session_id, generation)
                .await?,
            now,
        ))
    }
}

/// The email that carries an activation or invitation link.
pub(crate) fn activation_mail(
    link: &str,
    tenant: &Tenant,
    user: &User,
    purpose: &str,
    hours: i64,
) -> mail::Mail {
    let name = user.first_name.as_str();
    if purpose == PURPOSE_INVITATION {
        mail::invitation(user.email.as_str(), name, tenant.name.as_str(), link, hours)
    } else {
        mail::activation(user.email.as_str(), name, tenant.name.as_str(), link, hours)
    }
}
