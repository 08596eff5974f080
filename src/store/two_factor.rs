//! Two-factor enrolments (sealed TOTP secrets) and hashed single-use backup codes.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::Expr,
};

use super::{
    Conn,
    entity::{backup_code, two_factor},
};
use crate::model::{Result, TenantId, UserId};

/// A user's enrolment.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The sealed secret (never the clear one).
    pub sealed_secret: String,
    /// Unset while the enrolment waits for its first code.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The newest time step a code was accepted for.
    pub last_used_step: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// The user's enrolment, confirmed or pending.
pub async fn get(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<Enrolment>> {
    Ok(two_factor::Entity::find_by_id((tenant_id.0, user_id.0))
        .one(db)
        .await?
        .map(|row| Enrolment {
            sealed_secret: row.secret,
            confirmed_at: row.confirmed_at,
            last_used_step: row.last_used_step,
            created_at: row.created_at,
        }))
}

/// Starts (or restarts) a pending enrolment; a confirmed one is left alone and false returned.
pub async fn start(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    sealed_secret: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    two_factor::Entity::delete_many()
        .filter(two_factor::Column::TenantId.eq(tenant_id.0))
        .filter(two_factor::Column::UserId.eq(user_id.0))
        .filter(two_factor::Column::ConfirmedAt.is_null())
        .exec(db)
        .await?;
    if get(db, tenant_id, user_id).await?.is_some() {
        return Ok(false);
    }
    two_factor::Entity::insert(two_factor::ActiveModel {
        tenant_id: Set(tenant_id.0),
        user_id: Set(user_id.0),
        secret: Set(sealed_secret.to_owned()),
        confirmed_at: Set(None),
        last_used_step: Set(None),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(true)
}

/// Confirms a pending enrolment with the step of its first code; false when it was not pending.
pub async fn confirm(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    step: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let result = two_factor::Entity::update_many()
        .col_expr(two_factor::Column::ConfirmedAt, Expr::value(now))
        .col_expr(two_factor::Column::LastUsedStep, Expr::value(step))
        .filter(two_factor::Column::TenantId.eq(tenant_id.0))
        .filter(two_factor::Column::UserId.eq(user_id.0))
        .filter(two_factor::Column::ConfirmedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Spends time step `step` of a confirmed enrolment. False when that step or a later one was
/// already used: the check and the write are one statement, so two replicas cannot both accept
/// the same code.
pub async fn spend_step(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    step: i64,
) -> Result<bool> {
    let result = two_factor::Entity::update_many()
        .col_expr(two_factor::Column::LastUsedStep, Expr::value(step))
        .filter(two_factor::Column::TenantId.eq(tenant_id.0))
        .filter(two_factor::Column::UserId.eq(user_id.0))
        .filter(two_factor::Column::ConfirmedAt.is_not_null())
        .filter(
            Condition::any()
                .add(two_factor::Column::LastUsedStep.is_null())
                .add(two_factor::Column::LastUsedStep.lt(step)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Removes the enrolment and the backup codes; false when there was no enrolment.
pub async fn remove(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<bool> {
    backup_code::Entity::delete_many()
        .filter(backup_code::Column::TenantId.eq(tenant_id.0))
        .filter(backup_code::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    let result = two_factor::Entity::delete_many()
        .filter(two_factor::Column::TenantId.eq(tenant_id.0))
        .filter(two_factor::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Replaces the user's backup codes with `hashes` (one multi-row insert).
pub async fn replace_backup_codes(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    hashes: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    backup_code::Entity::delete_many()
        .filter(backup_code::Column::TenantId.eq(tenant_id.0))
        .filter(backup_code::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    if hashes.is_empty() {
        return Ok(());
    }
    backup_code::Entity::insert_many(hashes.iter().map(|hash| backup_code::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.0),
        user_id: Set(user_id.0),
        code_hash: Set(hash.clone()),
        created_at: Set(now),
        used_at: Set(None),
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Spends the unused backup code with hash `hash`; false when there is none (wrong or used).
pub async fn spend_backup_code(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let result = backup_code::Entity::update_many()
        .col_expr(backup_code::Column::UsedAt, Expr::value(now))
        .filter(backup_code::Column::TenantId.eq(tenant_id.0))
        .filter(backup_code::Column::UserId.eq(user_id.0))
        .filter(backup_code::Column::CodeHash.eq(hash))
        .filter(backup_code::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// How many unused backup codes the user has left.
pub async fn backup_codes_left(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<u64> {
    Ok(backup_code::Entity::find()
        .filter(backup_code::Column::TenantId.eq(tenant_id.0))
        .filter(backup_code::Column::UserId.eq(user_id.0))
        .filter(backup_code::Column::UsedAt.is_null())
        .count(db)
        .await?)
}
