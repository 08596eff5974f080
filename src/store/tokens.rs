//! Single-use tokens mailed to users (activation, invitation, password reset). Only hashes are stored.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, EntityTrait, QueryFilter, Statement, Value,
    sea_query::Expr,
};

use super::{Conn, entity::action_token};
use crate::model::{Result, TenantId, UserId};

/// A stored single-use token.
#[derive(Debug, Clone)]
pub struct ActionToken {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub purpose: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Stores a token's hash.
pub async fn insert(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    purpose: &str,
    token_hash: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    action_token::Entity::insert(action_token::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.0),
        user_id: Set(user_id.0),
        purpose: Set(purpose.to_owned()),
        token_hash: Set(token_hash.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Finds a token by its hash.
pub async fn find_by_hash(db: &impl Conn, token_hash: &str) -> Result<Option<ActionToken>> {
    Ok(action_token::Entity::find()
        .filter(action_token::Column::TokenHash.eq(token_hash))
        .one(db)
        .await?
        .map(|row| ActionToken {
            id: row.id,
            tenant_id: TenantId(row.tenant_id),
            user_id: UserId(row.user_id),
            purpose: row.purpose,
            expires_at: row.expires_at,
            used_at: row.used_at,
        }))
}

/// Marks a token used; false when it already was (a concurrent use won).
pub async fn mark_used(db: &impl Conn, id: uuid::Uuid, now: DateTime<Utc>) -> Result<bool> {
    let result = action_token::Entity::update_many()
        .col_expr(action_token::Column::UsedAt, Expr::value(now))
        .filter(action_token::Column::Id.eq(id))
        .filter(action_token::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Retires a user's unused tokens of the given purposes (a newer one replaces them).
pub async fn retire(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    purposes: &[&str],
    now: DateTime<Utc>,
) -> Result<()> {
    action_token::Entity::update_many()
        .col_expr(action_token::Column::UsedAt, Expr::value(now))
        .filter(action_token::Column::TenantId.eq(tenant_id.0))
        .filter(action_token::Column::UserId.eq(user_id.0))
        .filter(action_token::Column::Purpose.is_in(purposes.iter().copied()))
        .filter(action_token::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// A token to store in bulk.
#[derive(Debug, Clone)]
pub struct NewActionToken {
    pub user_id: UserId,
    pub purpose: &'static str,
    pub token_hash: String,
}

/// Stores many tokens of one account with multi-row statements.
pub async fn insert_many(
    db: &impl Conn,
    tenant_id: TenantId,
    tokens: &[NewActionToken],
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        // One array per column, as for users (see `users::insert_many`).
        const TOKENS: &str = r#"INSERT INTO action_tokens (id, tenant_id, user_id, purpose,
            token_hash, created_at, expires_at)
            SELECT t.id, $1, t.user_id, t.purpose, t.token_hash, $2, $3
            FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[])
                AS t(id, user_id, purpose, token_hash)"#;
        for chunk in tokens.chunks(20_000) {
            let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::now_v7()).collect();
            let users: Vec<uuid::Uuid> = chunk.iter().map(|token| token.user_id.0).collect();
            let purposes: Vec<String> = chunk.iter().map(|t| t.purpose.to_owned()).collect();
            let hashes: Vec<String> = chunk.iter().map(|t| t.token_hash.clone()).collect();
            let values: [Value; 7] = [
                tenant_id.0.into(),
                now.into(),
                expires_at.into(),
                ids.into(),
                users.into(),
                purposes.into(),
                hashes.into(),
            ];
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                TOKENS,
                values,
            ))
            .await?;
        }
        return Ok(());
    }
    for chunk in tokens.chunks(2_000) {
        let rows = chunk.iter().map(|token| action_token::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            tenant_id: Set(tenant_id.0),
            user_id: Set(token.user_id.0),
            purpose: Set(token.purpose.to_owned()),
            token_hash: Set(token.token_hash.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
        });
        action_token::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}
