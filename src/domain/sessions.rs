//! The Dialer page's "Active Sessions": listing and ending login sessions. Ending a session
//! bites on the very next call: the revocation list is updated here at once and on the other
//! replicas through PostgreSQL LISTEN/NOTIFY (see [`super::replication`]).

use std::collections::HashSet;

use serde_json::json;

use super::{
    App,
    policy::{self, Action, UserAction, authorize},
    tokens::RevocationEvent,
};
use crate::{
    model::{
        ClientInfo, Error, EventType, NewActivity, NewEvent, Principal, Result, SessionId,
        SessionRecord, UserId,
    },
    store::{self, sessions::SessionScope},
};

/// Whose sessions a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionsOf {
    /// The caller's.
    Caller,
    /// One user's of the account.
    User(UserId),
    /// Every user's of the account.
    Account,
}

/// A page of open sessions.
#[derive(Debug, Clone)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    /// Whether more sessions follow the last one.
    pub more: bool,
}

impl App {
    /// Open sessions, newest first, a keyset page at a time.
    pub async fn list_sessions(
        &self,
        principal: &Principal,
        of: SessionsOf,
        page_size: u64,
        after: Option<SessionId>,
    ) -> Result<SessionPage> {
        let scope = match of {
            SessionsOf::Caller => {
                authorize(principal, Action::ManageOwnSessions)?;
                SessionScope::User(principal.user_id)
            }
            SessionsOf::User(user_id) if user_id == principal.user_id => {
                authorize(principal, Action::ManageOwnSessions)?;
                SessionScope::User(user_id)
            }
            SessionsOf::User(user_id) => {
                authorize(principal, Action::ManageSessions)?;
                // Another account's user is NOT_FOUND; the owner's and other admins' sessions
                // are the owner's to see, as they are the owner's to end.
                let target = self.target(principal.tenant_id, user_id).await?;
                policy::authorize_on_user(principal, UserAction::EndSessions, &target, None)?;
                SessionScope::User(user_id)
            }
            SessionsOf::Account => {
                authorize(principal, Action::ManageSessions)?;
                let protected = self.protected_from(principal).await?;
                SessionScope::AccountExcept(protected.into_iter().collect())
            }
        };
        let mut sessions = store::sessions::list_open(
            self.store.db(),
            principal.tenant_id,
            scope,
            self.clock.now(),
            after,
            page_size + 1,
        )
        .await?;
        let more = sessions.len() as u64 > page_size;
        sessions.truncate(page_size as usize);
        Ok(SessionPage { sessions, more })
    }

    /// Ends one session of the account: one's own, or (sessions.manage) another user's that the
    /// caller may manage.
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: SessionId,
        client: &ClientInfo,
    ) -> Result<()> {
        let session = store::sessions::find(self.store.db(), session_id)
            .await?
            .filter(|session| session.tenant_id == principal.tenant_id)
            .ok_or(Error::NotFound("session"))?;
        if session.user_id == principal.user_id {
            authorize(principal, Action::ManageOwnSessions)?;
        } else {
            authorize(principal, Action::ManageSessions)?;
            let target = self.target(principal.tenant_id, session.user_id).await?;
            policy::authorize_on_user(principal, UserAction::EndSessions, &target, None)?;
        }
        let now = self.clock.now();
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(Error::precondition(
                "SESSION_ALREADY_ENDED",
                "the session has already ended",
            ));
        }
        let tx = self.change().await?;
        if !store::sessions::revoke(&tx, principal.tenant_id, session_id, "revoked", now).await? {
            return Err(Error::precondition(
                "SESSION_ALREADY_ENDED",
                "the session has already ended",
            ));
        }
        self.record(
            &tx,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "session.revoked",
                session.user_id,
                client,
            )
            .with_details(json!({ "session_id": session_id.to_string() })),
        )
        .await?;
        tx.touching(store::Touched::Everything);
        tx.revoke(RevocationEvent::Sessions(vec![session_id], now));
        self.commit(tx).await?;
        Ok(())
    }

    /// Ends every session of a user; for the caller, every session but the calling one.
    pub async fn revoke_user_sessions(
        &self,
        principal: &Principal,
        user_id: UserId,
        client: &ClientInfo,
    ) -> Result<u64> {
        if user_id == principal.user_id {
            authorize(principal, Action::ManageOwnSessions)?;
        } else {
            authorize(principal, Action::ManageSessions)?;
            let target = self.target(principal.tenant_id, user_id).await?;
            policy::authorize_on_user(principal, UserAction::EndSessions, &target, None)?;
        }
        let now = self.clock.now();
        let sessions: Vec<SessionId> = store::sessions::open_sessions(
            self.store.db(),
            principal.tenant_id,
            SessionScope::User(user_id),
            now,
        )
        .await?
        .into_iter()
        .map(|(session, _)| session)
        .filter(|session| *session != principal.session_id)
        .collect();
        self.end_sessions(
            principal,
            &sessions,
            NewActivity::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                "sessions.revoked",
                user_id,
                client,
            ),
        )
        .await
    }

    /// "Log them out from the system": ends every session of the account except the calling one;
    /// an admin's call spares the owner's and other admins' sessions (custom roles with admin
    /// permissions included).
    pub async fn revoke_all_sessions(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64> {
        authorize(principal, Action::ManageSessions)?;
        let db = self.store.db();
        let now = self.clock.now();
        let protected = self.protected_from(principal).await?;
        let open = store::sessions::open_sessions(
            db,
            principal.tenant_id,
            SessionScope::AccountExcept(protected.into_iter().collect()),
            now,
        )
        .await?;
        let sessions: Vec<SessionId> = open
            .into_iter()
            .filter(|(session, _)| *session != principal.session_id)
            .map(|(session, _)| session)
            .collect();
        self.end_sessions(
            principal,
            &sessions,
            NewActivity {
                tenant_id: principal.tenant_id,
                actor: Some(principal.user_id),
                action: "sessions.revoked_all",
                target_type: Some("account"),
                target_id: Some(principal.tenant_id.0),
                client: client.clone(),
                details: json!({}),
            },
        )
        .await
    }

    /// The users whose sessions the principal may neither see nor end: for anyone but the
    /// owner, the owner and the holders of admin-grade roles (custom ones included), but never
    /// the principal themself.
    async fn protected_from(&self, principal: &Principal) -> Result<HashSet<UserId>> {
        if principal.is_owner {
            return Ok(HashSet::new());
        }
        let db = self.store.db();
        let mut protected =
            store::users::admin_grade_holders_in_account(db, principal.tenant_id).await?;
        if let Some(owner) = store::tenants::get(db, principal.tenant_id)
            .await?
            .and_then(|tenant| tenant.owner_user_id)
        {
            protected.insert(owner);
        }
        protected.remove(&principal.user_id);
        Ok(protected)
    }

    /// Ends `sessions` with one activity record (its details get the count).
    async fn end_sessions(
        &self,
        principal: &Principal,
        sessions: &[SessionId],
        record: NewActivity,
    ) -> Result<u64> {
        let now = self.clock.now();
        let tx = self.change().await?;
        let ended =
            store::sessions::revoke_many(&tx, principal.tenant_id, sessions, "revoked", now)
                .await?;
        tx.emit(ended.iter().map(|(session, user)| {
            NewEvent::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                EventType::SessionRevoked,
                *user,
                json!({ "session_id": session.to_string() }),
            )
        }));
        let ended = ended.len() as u64;
        self.record(&tx, record.with_details(json!({ "sessions_ended": ended })))
            .await?;
        tx.touching(store::Touched::Everything);
        tx.revoke(RevocationEvent::Sessions(sessions.to_vec(), now));
        self.commit(tx).await?;
        Ok(ended)
    }
}
