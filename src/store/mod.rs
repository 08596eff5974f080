//! Storage: SeaORM entities and queries on SQLite or PostgreSQL. Every query on tenant data takes
//! the tenant first; functions take and return `model` types.

pub mod activity;
mod entity;
pub mod events;
pub mod imports;
pub mod invitations;
pub mod keys;
pub mod lockouts;
pub mod notify;
pub mod outbox;
pub mod roles;
pub mod service_accounts;
pub mod sessions;
pub mod teams;
pub mod tenants;
pub mod tokens;
pub mod two_factor;
pub mod users;
pub mod webhooks;

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
    url: crate::model::Secret,
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
        if !sqlite {
            probe(&url).await?;
        }
        let url_for_later = url.clone();
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
            // PostgreSQL: a call that cannot get a connection within a second answers UNAVAILABLE
            // instead of queueing while the server is away (the pool retries connecting for as
            // long as it waits). SQLite's connections wait on the write lock, not on a server.
            .acquire_timeout(if sqlite {
                Duration::from_secs(30)
            } else {
                POSTGRES_ACQUIRE_TIMEOUT
            })
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
            url: crate::model::Secret::new(url_for_later),
            sqlite,
            max_connections,
            writes: Arc::default(),
        })
    }

    /// Applies pending migrations. On PostgreSQL the replicas that start at once take turns on
    /// an advisory lock, held on a connection of its own for the whole run, so that the first
    /// one migrates and the others find nothing left to do.
    pub async fn migrate(&self) -> Result<()> {
        if self.sqlite {
            // Servers sharing one file take turns on its write lock: the first migrates, and
            // the others find nothing left to do (SQLite's DDL is transactional).
            let tx = self.begin().await?;
            Migrator::up(&tx, None).await.map_err(migration_failed)?;
            return Ok(tx.commit().await?);
        }
        let mut options = ConnectOptions::new(self.url.expose().to_owned());
        options
            .max_connections(1)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let session = Database::connect(options).await.map_err(Error::from)?;
        let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
        session.execute_unprepared(&lock).await?;
        let migrated = Migrator::up(&session, None).await.map_err(migration_failed);
        let _ = session
            .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await;
        let _ = session.close().await;
        migrated
    }

    /// The names of the migrations this build has and the database lacks (read-only).
    pub async fn pending_migrations(&self) -> Result<Vec<String>> {
        let pending = Migrator::get_pending_migrations_read_only(&self.db)
            .await
            .map_err(migration_failed)?;
        Ok(pending
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect())
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
        let started = std::time::Instant::now();
        let tx = if self.sqlite {
            let options = sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            self.db.begin_with_options(options).await?
        } else {
            self.db.begin().await?
        };
        crate::metrics::connection_wait().record(started.elapsed().as_secs_f64(), &[]);
        Ok(tx)
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
        // A row that names a user or team deleted by a concurrent call: the call's target is
        // gone, as a read a moment later would have found.
        if let Some(SqlErr::ForeignKeyConstraintViolation(_)) = err.sql_err() {
            return Error::NotFound("referenced user or team");
        }
        // PostgreSQL undoes one transaction of a deadlock (40P01) or of a serialization
        // conflict (40001): nothing was written, and the call may simply be made again.
        if matches!(sqlstate(&err).as_deref(), Some("40P01" | "40001")) {
            return Error::Aborted(err.to_string());
        }
        if is_unreachable(&err) {
            return Error::Unavailable(err.to_string());
        }
        Error::internal_from(err)
    }
}

/// Whether `err` says the database could not be reached or went away mid-call (a connection
/// refused, reset or closed, a pool with no connection to give, a server shutting down): every
/// such failure is UNAVAILABLE, whichever statement met it.
pub fn is_unreachable(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let sqlx_unreachable = |err: &sqlx::Error| match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 57P01-57P03: the server is shutting down or cannot connect now; 08xxx: connection
        // exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    };
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            sqlx_unreachable(err)
        }
        _ => false,
    }
}

/// How long a call waits for a PostgreSQL connection before it answers UNAVAILABLE.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The advisory lock the replicas' migrations take turns on ("rmig").
const MIGRATION_LOCK: i64 = 0x726d_6967;

fn migration_failed(err: DbErr) -> Error {
    if is_unreachable(&err) {
        Error::Unavailable(format!("applying migrations: {err}"))
    } else {
        // The database's own words: which statement of which migration failed, and why.
        Error::internal(format!("applying migrations failed: {err}"))
    }
}

/// Opens one connection to the PostgreSQL server at `url` and closes it, so that a server that
/// cannot be reached fails the start at once with its address and the cause, not with the
/// pool's "timed out" once its wait is over.
async fn probe(url: &str) -> Result<()> {
    use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .map_err(|err| Error::Unavailable(format!("the database URL cannot be used: {err}")))?;
    let address = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(err)) => Err(Error::Unavailable(format!(
            "cannot connect to the database at {address}: {err}"
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "cannot connect to the database at {address}: no answer within 5 s"
        ))),
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
    fn the_migration_fills_the_search_text_as_writes_do() {
        use migration::m20261202_000023_user_search::search_text as filled;
        for (first, last, email, username) in [
            ("Jürgen", "ÜBERMANN", "j@acme.test", "jurgen"),
            ("Ольга", "Σίσυφος", "o@acme.test", ""),
            ("İstanbul", "ǅemal\u{1f}x", "e@acme.test", "e"),
            ("", "", "", ""),
        ] {
            assert_eq!(
                filled(first, last, email, username),
                crate::model::search_text(first, last, email, username)
            );
        }
    }

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
