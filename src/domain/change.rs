//! One use case's unit of work: its transaction, and what must follow the commit. A use case
//! opens a [`Change`] with [`App::change`], writes through it (it is a connection like the
//! transaction it holds), says what it revoked or touched and queues its mail on it, and
//! [`App::commit`] runs every after-commit step in one place: the revocations announced inside
//! the transaction and applied here, the caches told what moved, the mail sender and the
//! invitation maker woken. A new RPC cannot forget one of them.

use std::{
    ops::Deref,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement};

use super::{App, replication, tokens::RevocationEvent};
use crate::{
    model::{NewEvent, Result, SessionId, UserId},
    store::{self, Touched, Tx},
};

/// An open unit of work; dropped without [`App::commit`] it rolls back and nothing follows.
pub struct Change {
    tx: Tx,
    /// What the change may have altered, for the caches (everything unless narrowed).
    touched: Mutex<Touched>,
    /// Revocations to announce inside the transaction and apply after it.
    revoked: Mutex<Vec<RevocationEvent>>,
    /// Mail was queued: wake the sender after the commit.
    mail: AtomicBool,
    /// An invitation batch was queued: wake its maker after the commit.
    invitations: AtomicBool,
    /// Events of the feed, numbered and written just before the commit.
    events: Mutex<Vec<NewEvent>>,
}

impl Change {
    /// Narrows what the change touched (by default, everything).
    pub fn touching(&self, touched: Touched) {
        *self.touched.lock().unwrap_or_else(|e| e.into_inner()) = touched;
    }

    /// Records a revocation the change makes.
    pub fn revoke(&self, event: RevocationEvent) {
        let empty = match &event {
            RevocationEvent::Sessions(sessions, _) => sessions.is_empty(),
            RevocationEvent::Users(users, _) => users.is_empty(),
            RevocationEvent::Grants(users, _) => users.is_empty(),
        };
        if !empty {
            self.revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event);
        }
    }

    /// Records that the change raised these users' token generations.
    pub fn revoke_users(&self, users: Vec<(UserId, i64)>, at: chrono::DateTime<chrono::Utc>) {
        self.revoke(RevocationEvent::Users(users, at));
    }

    /// Records that the change ended these sessions.
    pub fn revoke_sessions(&self, sessions: Vec<SessionId>, at: chrono::DateTime<chrono::Utc>) {
        self.revoke(RevocationEvent::Sessions(sessions, at));
    }

    /// Records that the change queued mail.
    pub fn mailed(&self) {
        self.mail.store(true, Ordering::Relaxed);
    }

    /// Records that the change queued an invitation batch.
    pub fn invited(&self) {
        self.invitations.store(true, Ordering::Relaxed);
    }

    /// Queues events of the feed, written with the change.
    pub fn emit(&self, events: impl IntoIterator<Item = NewEvent>) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }
}

/// Where an activity record is written: a [`Change`] also takes the feed's event of it; a bare
/// connection or transaction takes records that are no event (sign-in attempts).
pub trait Journal: store::Conn {
    /// Queues the event of a record; `false` where events cannot be written.
    fn emit_event(&self, event: NewEvent) -> bool;
}

impl Journal for Change {
    fn emit_event(&self, event: NewEvent) -> bool {
        self.emit([event]);
        true
    }
}

impl Journal for Tx {
    fn emit_event(&self, _: NewEvent) -> bool {
        false
    }
}

impl Journal for sea_orm::DatabaseConnection {
    fn emit_event(&self, _: NewEvent) -> bool {
        false
    }
}

impl Deref for Change {
    type Target = Tx;

    fn deref(&self) -> &Tx {
        &self.tx
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Change {
    fn get_database_backend(&self) -> DbBackend {
        self.tx.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.tx.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.tx.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.tx.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.tx.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.tx.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.tx.is_mock_connection()
    }
}

impl App {
    /// Marks the events whose actor is a service account (one that called this replica: the
    /// actor of a change always has, moments ago).
    pub(crate) fn mark_service_account_actors(&self, events: &mut [NewEvent]) {
        for event in events {
            event.actor_service_account = event
                .actor
                .is_some_and(|actor| self.api_keys.is_service_account(actor));
        }
    }

    /// Opens a unit of work.
    pub(crate) async fn change(&self) -> Result<Change> {
        Ok(Change {
            tx: self.store.begin().await?,
            touched: Mutex::new(Touched::Everything),
            revoked: Mutex::new(Vec::new()),
            mail: AtomicBool::new(false),
            invitations: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
        })
    }

    /// Commits `change` and runs what follows it. On PostgreSQL the revocations are NOTIFYed
    /// inside the transaction, so that the other replicas hear of them exactly at commit (a
    /// commit is never left unannounced by a replica that dies right after it).
    pub(crate) async fn commit(&self, change: Change) -> Result<()> {
        let Change {
            tx,
            touched,
            revoked,
            mail,
            invitations,
            events,
        } = change;
        // Numbered last: the account's counter stays locked only from here to the commit.
        let mut events = events.into_inner().unwrap_or_else(|e| e.into_inner());
        self.mark_service_account_actors(&mut events);
        if !events.is_empty() {
            store::events::append(&tx, &events, self.clock.now()).await?;
        }
        let appended = events.len();
        let revoked = revoked.into_inner().unwrap_or_else(|e| e.into_inner());
        let revocations = self.tokens.revocations();
        if let Some(origin) = revocations.origin() {
            let payloads: Vec<String> = revoked
                .iter()
                .flat_map(|event| replication::encode(origin, event))
                .collect();
            if !payloads.is_empty() {
                store::notify::notify_all(&tx, store::notify::REVOCATION_CHANNEL, payloads).await?;
            }
        }
        let touched = touched.into_inner().unwrap_or_else(|e| e.into_inner());
        self.store.commit_touching(tx, touched).await?;
        crate::metrics::events().appended(appended);
        for event in revoked {
            revocations.apply(event);
        }
        if mail.into_inner() {
            self.mail_wake.notify_one();
        }
        if invitations.into_inner() {
            self.invitation_wake.notify_one();
        }
        if !events.is_empty() {
            self.events.ring();
        }
        Ok(())
    }
}
