//! Failed authentication attempts per user, for the lockout.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use super::{
    Conn,
    entity::{two_factor, user_lockout},
};
use crate::model::{Error, Result, TenantId, UserId};

/// A user's failed attempts since the last success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lockout {
    pub failed_attempts: i32,
    /// Until when the user is locked, when they are.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The user's counter (zero when nothing failed).
pub async fn get(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<Lockout> {
    Ok(user_lockout::Entity::find_by_id((tenant_id.0, user_id.0))
        .one(db)
        .await?
        .map(|row| Lockout {
            failed_attempts: row.failed_attempts,
            locked_until: row.locked_until,
        })
        .unwrap_or_default())
}

/// What a sign-in with the right password still has to look at, read in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInFlags {
    /// Failed attempts (or a lock) are on record, to be forgotten after a success.
    pub failures: bool,
    /// The user has confirmed two-factor authentication.
    pub two_factor: bool,
}

/// The [`SignInFlags`] of a user: one round trip instead of one per table, because a sign-in's
/// own work (besides the hash) is mostly round trips.
pub async fn sign_in_flags(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<SignInFlags> {
    let failures = Query::select()
        .expr(Expr::val(1))
        .from(user_lockout::Entity)
        .and_where(user_lockout::Column::TenantId.eq(tenant_id.0))
        .and_where(user_lockout::Column::UserId.eq(user_id.0))
        .and_where(
            user_lockout::Column::FailedAttempts
                .gt(0)
                .or(user_lockout::Column::LockedUntil.is_not_null()),
        )
        .to_owned();
    let enrolled = Query::select()
        .expr(Expr::val(1))
        .from(two_factor::Entity)
        .and_where(two_factor::Column::TenantId.eq(tenant_id.0))
        .and_where(two_factor::Column::UserId.eq(user_id.0))
        .and_where(two_factor::Column::ConfirmedAt.is_not_null())
        .to_owned();
    let statement = Query::select()
        .expr_as(Expr::exists(failures), "failures")
        .expr_as(Expr::exists(enrolled), "two_factor")
        .to_owned();
    let row = db
        .query_one(&statement)
        .await?
        .ok_or_else(|| Error::internal("a SELECT without FROM returned no row"))?;
    Ok(SignInFlags {
        failures: row.try_get("", "failures")?,
        two_factor: row.try_get("", "two_factor")?,
    })
}

/// Counts one failed attempt (one statement, safe against concurrent failures) and returns the
/// new count.
pub async fn count_failure(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<i32> {
    user_lockout::Entity::insert(user_lockout::ActiveModel {
        tenant_id: Set(tenant_id.0),
        user_id: Set(user_id.0),
        failed_attempts: Set(1),
        last_failed_at: Set(Some(now)),
        locked_until: Set(None),
    })
    .on_conflict(
        OnConflict::columns([user_lockout::Column::TenantId, user_lockout::Column::UserId])
            .value(
                user_lockout::Column::FailedAttempts,
                Expr::col((user_lockout::Entity, user_lockout::Column::FailedAttempts)).add(1),
            )
            .value(user_lockout::Column::LastFailedAt, Expr::value(now))
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(get(db, tenant_id, user_id).await?.failed_attempts)
}

/// Marks the user locked until `until`.
pub async fn lock(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    until: DateTime<Utc>,
) -> Result<()> {
    user_lockout::Entity::update_many()
        .col_expr(user_lockout::Column::LockedUntil, Expr::value(until))
        .filter(user_lockout::Column::TenantId.eq(tenant_id.0))
        .filter(user_lockout::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets the user's failed attempts and lock (after a success, an unlock or a cool-down).
pub async fn clear(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<()> {
    user_lockout::Entity::delete_many()
        .filter(user_lockout::Column::TenantId.eq(tenant_id.0))
        .filter(user_lockout::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}
