//! Failed authentication attempts per user, for the lockout.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::{Conn, entity::user_lockout};
use crate::model::{Result, TenantId, UserId};

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
