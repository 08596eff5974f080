//! The locks and records that let two PostgreSQL transactions write one import (see
//! `domain::import` and migration 000018). SQLite has one writer: an import there is one
//! transaction, and none of this is used.

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, Statement, Value};

use super::Conn;
use crate::model::{Result, TenantId, UserId};

/// The class of the advisory lock that one import of an account holds while it writes: the one
/// after the account's users lock.
const IMPORT_LOCK_CLASS: i32 = super::users::USERS_LOCK_CLASS + 1;

/// A second part of an import that committed and whose first part has not (yet).
#[derive(Debug, Clone)]
pub struct UnfinishedPart {
    pub import_id: uuid::Uuid,
    pub part: i16,
    pub user_ids: Vec<UserId>,
}

fn statement(sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

async fn query_bool(db: &impl Conn, sql: &str, tenant_id: TenantId) -> Result<bool> {
    let row = db
        .query_one_raw(statement(sql, [tenant_id.0.into()]))
        .await?
        .ok_or_else(|| crate::model::Error::internal("a lock query returned no row"))?;
    Ok(row.try_get_by_index::<bool>(0)?)
}

/// Waits until no other import of the account is writing, and holds that until `tx` ends: the
/// imports of one account write one after the other (two of them inserting the same login in
/// opposite order would each wait for the other's commit, which waits for its own second part).
pub async fn lock_account(tx: &impl Conn, tenant_id: TenantId) -> Result<()> {
    tx.execute_raw(statement(
        &format!("SELECT pg_advisory_xact_lock({IMPORT_LOCK_CLASS}, hashtext($1::text))"),
        [tenant_id.0.into()],
    ))
    .await?;
    Ok(())
}

/// Takes the account's import lock if no import of the account holds it; held until `tx` ends.
pub async fn try_lock_account(tx: &impl Conn, tenant_id: TenantId) -> Result<bool> {
    query_bool(
        tx,
        &format!("SELECT pg_try_advisory_xact_lock({IMPORT_LOCK_CLASS}, hashtext($1::text))"),
        tenant_id,
    )
    .await
}

/// Takes the account's users lock, shared, only if it is free of waiters: a deletion queued for
/// it makes this `false` at once instead of queueing behind it.
pub async fn try_lock_users_shared(tx: &impl Conn, tenant_id: TenantId) -> Result<bool> {
    query_bool(
        tx,
        &format!(
            "SELECT pg_try_advisory_xact_lock_shared({}, hashtext($1::text))",
            super::users::USERS_LOCK_CLASS
        ),
        tenant_id,
    )
    .await
}

/// Makes every lock wait of `tx` fail after `millis` instead of waiting on.
pub async fn limit_lock_waits(tx: &impl Conn, millis: u32) -> Result<()> {
    tx.execute_unprepared(&format!("SET LOCAL lock_timeout = {millis}"))
        .await?;
    Ok(())
}

/// Lets `tx` commit without waiting for its log to reach the disk (`synchronous_commit = off`):
/// for a transaction that a later one, which does wait, makes durable with it.
pub async fn commit_without_waiting_for_flush(tx: &impl Conn) -> Result<()> {
    tx.execute_unprepared("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

/// Records that `part` of import `import_id` created `user_ids` in the account.
pub async fn record_part(
    tx: &impl Conn,
    import_id: uuid::Uuid,
    part: i16,
    tenant_id: TenantId,
    user_ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<()> {
    let packed = super::pack_user_ids(user_ids);
    tx.execute_raw(statement(
        "INSERT INTO import_parts (import_id, part, tenant_id, user_ids, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        [
            import_id.into(),
            part.into(),
            tenant_id.0.into(),
            packed.into(),
            now.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Forgets the parts of an import (its first part commits with this).
pub async fn forget(tx: &impl Conn, import_id: uuid::Uuid) -> Result<()> {
    tx.execute_raw(statement(
        "DELETE FROM import_parts WHERE import_id = $1",
        [import_id.into()],
    ))
    .await?;
    Ok(())
}

/// The accounts with recorded parts.
pub async fn accounts_with_parts(db: &impl Conn) -> Result<Vec<TenantId>> {
    let rows = db
        .query_all_raw(statement("SELECT DISTINCT tenant_id FROM import_parts", []))
        .await?;
    rows.iter()
        .map(|row| Ok(TenantId(row.try_get_by_index::<uuid::Uuid>(0)?)))
        .collect()
}

/// The recorded parts of the account, taken out of the table (the caller undoes them in the same
/// transaction).
pub async fn take_parts(tx: &impl Conn, tenant_id: TenantId) -> Result<Vec<UnfinishedPart>> {
    let rows = tx
        .query_all_raw(statement(
            "DELETE FROM import_parts WHERE tenant_id = $1 RETURNING import_id, part, user_ids",
            [tenant_id.0.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let packed: Vec<u8> = row.try_get_by_index(2)?;
            Ok(UnfinishedPart {
                import_id: row.try_get_by_index(0)?,
                part: row.try_get_by_index(1)?,
                user_ids: super::unpack_user_ids(&packed),
            })
        })
        .collect()
}
