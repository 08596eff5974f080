//! Storage: SeaORM entities and queries on SQLite or PostgreSQL. Every query on tenant data takes
//! the tenant first; functions take and return `model` types.

pub mod activity;
mod entity;
pub mod imports;
pub mod invitations;
pub mod keys;
pub mod lockouts;
pub mod notify;
pub mod outbox;
pub mod roles;
pub mod sessions;
pub mod teams;
pub mod tenants;
pub mod tokens;
pub mod two_factor;
pub mod users;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlErr, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

use crate::model::{Error, Result, TenantId, UserId};

/// Anything queries can run on: the pool or an open transaction.
pub use sea_orm::ConnectionTrait as Conn;

/// An open transaction; dropped without `commit` it rolls back.
pub type Tx = DatabaseTransaction;

/// The database behind roster.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    sqlite: bool,
    max_connections: u32,
    writes: Arc<WriteEpoch>,
}

/// Counts the writes this replica committed or heard of, so that a cache can tell whether what
/// it read may have changed since: an entry read at epoch `e` is good while the epoch is `e`, or
/// while none of the writes after `e` touched it. The epoch advances after a commit, so a read
/// that raced a write is stamped with the epoch before it.
#[derive(Debug, Default)]
pub struct WriteEpoch {
    current: AtomicU64,
    /// What the latest writes touched, oldest first, with the epoch each one made.
    recent: Mutex<VecDeque<(u64, Touched)>>,
}

/// What a write may have changed, as far as cached users and accounts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Anything: the default for a write that does not say.
    Everything,
    /// An account and any of its users.
    Tenant(TenantId),
    /// These users of an account (their rows, sessions, roles ...), not the account itself.
    Users(TenantId, Vec<UserId>),
}

impl Touched {
    fn reaches(&self, tenant_id: TenantId, user_id: Option<UserId>) -> bool {
        match self {
            Self::Everything => true,
            Self::Tenant(tenant) => *tenant == tenant_id,
            Self::Users(tenant, users) => {
                *tenant == tenant_id && user_id.is_some_and(|user| users.contains(&user))
            }
        }
    }
}

/// Writes remembered for [`WriteEpoch::untouched_between`]; an entry older than these is
/// read again.
const REMEMBERED_WRITES: usize = 1_024;

impl WriteEpoch {
    /// The current epoch; read it before reading what a cache keeps.
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// Records a committed write (here, or announced by another replica) that may have changed
    /// anything.
    pub fn advance(&self) {
        self.advance_touching(Touched::Everything);
    }

    /// Records a committed write that changed only what `touched` says.
    pub fn advance_touching(&self, touched: Touched) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock, and logged before it is published: whoever sees epoch `e` finds
        // every write up to `e` in `recent`.
        let epoch = self.current.load(Ordering::Acquire) + 1;
        if recent.len() == REMEMBERED_WRITES {
            recent.pop_front();
        }
        recent.push_back((epoch, touched));
        self.current.store(epoch, Ordering::Release);
    }

    /// Whether no write made after epoch `read_at`, up to epoch `now`, touched the account or
    /// the user.
    pub fn untouched_between(
        &self,
        read_at: u64,
        now: u64,
        tenant_id: TenantId,
        user_id: Option<UserId>,
    ) -> bool {
        if read_at == now {
            return true;
        }
        if read_at > now {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match recent.front() {
            Some((oldest, _)) if *oldest <= read_at + 1 => {}
            // Writes after `read_at` were forgotten.
            _ => return false,
        }
        !recent
            .iter()
            .filter(|(epoch, _)| *epoch > read_at && *epoch <= now)
            .any(|(_, touched)| touched.reaches(tenant_id, user_id))
    }
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`); a SQLite file is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let url =
            if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            } else {
                url.to_owned()
            };
        let sqlite = url.starts_with("sqlite:");
        let mut options = ConnectOptions::new(url);
        // SQLite allows one writer: transactions begin IMMEDIATE (see `begin`), so writers queue on
        // the lock instead of failing a read-to-write upgrade, while WAL lets readers go on.
        options
            .max_connections(if sqlite {
                max_connections.min(4)
            } else {
                max_connections
            })
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(30))
            // A connection in use moments ago is handed out as it is; one idle for a while is
            // pinged first (a ping on every checkout was one more round trip per statement).
            .test_before_acquire_if_idle_for(Duration::from_secs(10))
            .sqlx_logging(false);
        // Every connection of the pool gets the settings (they are per connection, except the
        // journal mode): WAL so that readers go on beside the writer, NORMAL sync (durable at
        // checkpoints, no fsync per commit; WAL keeps the file consistent), foreign keys on, and
        // writers queue on the lock rather than fail while a burst of logins is committed.
        options.map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30))
        });
        let db = Database::connect(options).await.map_err(Error::from)?;
        Ok(Self {
            db,
            sqlite,
            max_connections,
            writes: Arc::default(),
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None).await.map_err(Error::from)
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// Refreshes PostgreSQL's statistics of the users and their roles, after a bulk load.
    ///
    /// Autovacuum analyzes a table once a tenth of it has changed: 100,000 users imported into a
    /// table of 1,100,000 stay below that, and an account that grew from a few users to many is
    /// planned as the few it was (a walk of every row where an index lookup was due). PostgreSQL's
    /// manual asks for an `ANALYZE` after populating a table; it samples 30,000 rows, whatever the
    /// table's size. SQLite plans without statistics unless `ANALYZE` ran once, which roster never
    /// does, so there is nothing to refresh.
    pub async fn refresh_user_statistics(&self) -> Result<()> {
        if self.is_postgres() {
            self.db
                .execute_unprepared("ANALYZE users, user_roles")
                .await?;
        }
        Ok(())
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The connection pool, for reads outside a transaction.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx> {
        if self.sqlite {
            let options = sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            return Ok(self.db.begin_with_options(options).await?);
        }
        Ok(self.db.begin().await?)
    }

    /// Commits `tx` and advances the write epoch.
    pub async fn commit(&self, tx: Tx) -> Result<()> {
        self.commit_touching(tx, Touched::Everything).await
    }

    /// Commits `tx`, which changed only what `touched` says, and advances the write epoch.
    pub async fn commit_touching(&self, tx: Tx, touched: Touched) -> Result<()> {
        tx.commit().await?;
        self.writes.advance_touching(touched);
        Ok(())
    }

    /// Records a write made outside a transaction (after it is done).
    pub fn wrote(&self) {
        self.writes.advance();
    }

    /// The write epoch of this replica.
    pub fn writes(&self) -> &WriteEpoch {
        &self.writes
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(message)) = err.sql_err() {
            // Index names and SQLite's "UNIQUE constraint failed: users.tenant_id, users.email"
            // both name the column.
            let field = ["email", "username", "slug"]
                .into_iter()
                .find(|column| message.contains(column))
                .unwrap_or("id");
            return Error::already_exists(field, "is already taken in this account");
        }
        // PostgreSQL undoes one transaction of a deadlock (40P01) or of a serialization
        // conflict (40001): nothing was written, and the call may simply be made again.
        if matches!(sqlstate(&err).as_deref(), Some("40P01" | "40001")) {
            return Error::Aborted(err.to_string());
        }
        match err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => Error::Unavailable(err.to_string()),
            other => Error::internal(other),
        }
    }
}

/// The SQLSTATE of a database's error (sea-orm's `sql_err` names only key violations).
fn sqlstate(err: &DbErr) -> Option<String> {
    use sea_orm::{RuntimeErr, sqlx};
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            match &**err {
                sqlx::Error::Database(err) => err.code().map(|code| code.into_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// User ids as one value of 16 bytes each (a list stored in one column, on both databases).
pub fn pack_user_ids(ids: &[UserId]) -> Vec<u8> {
    ids.iter().flat_map(|id| *id.0.as_bytes()).collect()
}

/// The user ids of [`pack_user_ids`]'s bytes.
pub fn unpack_user_ids(packed: &[u8]) -> Vec<UserId> {
    packed
        .chunks_exact(16)
        .map(|bytes| {
            let mut id = [0u8; 16];
            id.copy_from_slice(bytes);
            UserId(uuid::Uuid::from_bytes(id))
        })
        .collect()
}

/// Ids bound in one statement that lists them with [`one_of`]: PostgreSQL takes them as one
/// array parameter, in as few statements as possible; SQLite binds each one.
pub fn ids_per_statement(db: &impl ConnectionTrait) -> usize {
    match db.get_database_backend() {
        DbBackend::Postgres => 50_000,
        _ => users::CHUNK,
    }
}

/// `column IN (values)`. On PostgreSQL it is `column IN (SELECT unnest($1))` with one array
/// parameter, which the planner turns into a join: a list of thousands of parameters is planned
/// again for every length, and `column = ANY($1)` under a generic plan made before the table's
/// statistics caught up with an import is a filter that searches the whole array for every row
/// scanned (20,000 emails checked against 100,000 rows took 19 s).
pub fn one_of<C, V>(
    db: &impl ConnectionTrait,
    column: C,
    values: impl IntoIterator<Item = V>,
) -> sea_orm::sea_query::SimpleExpr
where
    C: sea_orm::ColumnTrait,
    V: Into<sea_orm::Value>
        + sea_orm::sea_query::ValueType
        + sea_orm::sea_query::value::postgres_array::NotU8,
{
    use sea_orm::sea_query::{Expr, ExprTrait as _, Func, Query};
    let values: Vec<V> = values.into_iter().collect();
    if db.get_database_backend() == DbBackend::Postgres {
        let unnested = Query::select()
            .expr(Func::cust("unnest").arg(Expr::val(values)))
            .to_owned();
        Expr::col(column.as_column_ref()).in_subquery(unnested)
    } else {
        column.is_in(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_good_until_a_write_touches_it() {
        let writes = WriteEpoch::default();
        let (tenant, other_tenant) = (
            TenantId(uuid::Uuid::now_v7()),
            TenantId(uuid::Uuid::now_v7()),
        );
        let (alice, bob) = (UserId(uuid::Uuid::now_v7()), UserId(uuid::Uuid::now_v7()));
        let read_at = writes.current();

        writes.advance_touching(Touched::Users(tenant, vec![bob]));
        writes.advance_touching(Touched::Tenant(other_tenant));
        let now = writes.current();
        assert!(writes.untouched_between(read_at, now, tenant, Some(alice)));
        assert!(writes.untouched_between(read_at, now, tenant, None));
        assert!(!writes.untouched_between(read_at, now, tenant, Some(bob)));
        assert!(!writes.untouched_between(read_at, now, other_tenant, Some(alice)));

        writes.advance_touching(Touched::Tenant(tenant));
        assert!(!writes.untouched_between(now, writes.current(), tenant, Some(alice)));
        let now = writes.current();
        writes.advance();
        assert!(!writes.untouched_between(now, writes.current(), other_tenant, None));
    }

    #[test]
    fn an_entry_older_than_the_remembered_writes_is_not_trusted() {
        let writes = WriteEpoch::default();
        let tenant = TenantId(uuid::Uuid::now_v7());
        let read_at = writes.current();
        let elsewhere = TenantId(uuid::Uuid::now_v7());
        for _ in 0..REMEMBERED_WRITES + 1 {
            writes.advance_touching(Touched::Tenant(elsewhere));
        }
        assert!(!writes.untouched_between(read_at, writes.current(), tenant, None));
        let recent = writes.current() - 10;
        assert!(writes.untouched_between(recent, writes.current(), tenant, None));
    }
}
