//! PostgreSQL LISTEN/NOTIFY between the replicas of roster that share a database: activity
//! records for live watchers and revocations for the in-memory revocation lists.

use sea_orm::{
    DbBackend, Statement,
    sqlx::{self, postgres::PgListener},
};

use super::Conn;
use crate::model::{Error, Result};

/// Channel of activity records (announced in the writing transaction, delivered at commit).
pub const ACTIVITY_CHANNEL: &str = "roster_activity";
/// Channel of revocations (sessions ended, token generations bumped, roles changed).
pub const REVOCATION_CHANNEL: &str = "roster_revocations";

/// Channel of the event feed: `<tenant id> <last number>` when a change wrote events.
pub const EVENTS_CHANNEL: &str = "roster_events";

/// Channel of service-account changes: the id of a service account whose keys or roles changed.
pub const SERVICE_ACCOUNTS_CHANNEL: &str = "roster_service_accounts";

/// Largest payload PostgreSQL accepts is 8,000 bytes; callers split what is bigger.
pub const MAX_PAYLOAD: usize = 7_500;

/// Sends each of `payloads` on `channel` in one statement, in their order: a mass action's
/// revocations (834 notifications for 100,000 users) cost one round trip, not one each.
pub async fn notify_all(db: &impl Conn, channel: &str, payloads: Vec<String>) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, p.payload) FROM unnest($2::text[]) WITH ORDINALITY \
         AS p(payload, n) ORDER BY p.n",
        [channel.into(), payloads.into()],
    ))
    .await?;
    Ok(())
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// A dedicated connection that listens on roster's channels.
pub struct Listener {
    inner: PgListener,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

fn unavailable(err: sqlx::Error) -> Error {
    Error::Unavailable(format!("postgres listener: {err}"))
}

impl Listener {
    /// Connects to `url` on a connection of its own and listens on both channels; once this
    /// returns, every later notification is received.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut inner = PgListener::connect(url).await.map_err(unavailable)?;
        inner
            .listen_all([
                ACTIVITY_CHANNEL,
                REVOCATION_CHANNEL,
                EVENTS_CHANNEL,
                SERVICE_ACCOUNTS_CHANNEL,
            ])
            .await
            .map_err(unavailable)?;
        Ok(Self { inner })
    }

    /// The next notification; `Ok(None)` when the connection was lost and has been re-established
    /// (notifications sent in between are lost: the caller catches up from the tables).
    pub async fn recv(&mut self) -> Result<Option<Notification>> {
        Ok(self
            .inner
            .try_recv()
            .await
            .map_err(unavailable)?
            .map(|notification| Notification {
                channel: notification.channel().to_owned(),
                payload: notification.payload().to_owned(),
            }))
    }
}
