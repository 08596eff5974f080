//! Storage: SeaORM entities and queries on SQLite or PostgreSQL. Every query on tenant data takes
//! the tenant first; functions take and return `model` types.

pub mod activity;
mod entity;
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
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, SqlErr, TransactionTrait,
};

use crate::model::{Error, Result};

/// Anything queries can run on: the pool or an open transaction.
pub use sea_orm::ConnectionTrait as Conn;

/// An open transaction; dropped without `commit` it rolls back.
pub type Tx = DatabaseTransaction;

/// The database behind roster.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    sqlite: bool,
    writes: Arc<WriteEpoch>,
}

/// Counts the writes this replica committed or heard of, so that a cache can tell whether what
/// it read may have changed since: an entry read at epoch `e` is good while the epoch is `e`.
/// The epoch advances after a commit, so a read that raced a write is stamped with the epoch
/// before it and never served again.
#[derive(Debug, Default)]
pub struct WriteEpoch(AtomicU64);

impl WriteEpoch {
    /// The current epoch; read it before reading what a cache keeps.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Records a committed write (here, or announced by another replica).
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
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
            .sqlx_logging(false);
        // Writers queue on SQLite's lock rather than fail while a burst of logins is committed.
        options.map_sqlx_sqlite_opts(|sqlite| sqlite.busy_timeout(Duration::from_secs(30)));
        let db = Database::connect(options).await.map_err(Error::from)?;
        if sqlite {
            db.execute_unprepared(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            )
            .await?;
        }
        Ok(Self {
            db,
            sqlite,
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
        tx.commit().await?;
        self.writes.advance();
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
        match err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => Error::Unavailable(err.to_string()),
            other => Error::internal(other),
        }
    }
}

/// `column IN (values)`. On PostgreSQL it is `column = ANY($1)` with one array parameter: a list
/// of thousands of parameters is planned again for every length and, once PostgreSQL settles on a
/// generic plan, searched linearly for every row it scans (an import of 100,000 rows spent
/// seconds there); an array probes the index once per value.
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
    use sea_orm::sea_query::{Expr, ExprTrait as _, PgFunc};
    let values: Vec<V> = values.into_iter().collect();
    if db.get_database_backend() == DbBackend::Postgres {
        Expr::col(column.as_column_ref()).eq(PgFunc::any(Expr::val(values)))
    } else {
        column.is_in(values)
    }
}
