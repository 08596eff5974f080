//! Login sessions. Only hashes of refresh tokens are stored.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::{Conn, entity::session};
use crate::model::{ClientInfo, Result, SessionId, SessionRecord, TenantId, UserId};

fn to_record(row: session::Model) -> SessionRecord {
    SessionRecord {
        id: SessionId(row.id),
        tenant_id: TenantId(row.tenant_id),
        user_id: UserId(row.user_id),
        refresh_token_hash: row.refresh_token_hash,
        previous_refresh_token_hash: row.previous_refresh_token_hash,
        client: ClientInfo {
            address: row.client_address,
            user_agent: row.user_agent,
        },
        created_at: row.created_at,
        last_used_at: row.last_used_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    }
}

/// Inserts a new session.
pub async fn insert(db: &impl Conn, record: &SessionRecord) -> Result<()> {
    session::Entity::insert(session::ActiveModel {
        id: Set(record.id.0),
        tenant_id: Set(record.tenant_id.0),
        user_id: Set(record.user_id.0),
        refresh_token_hash: Set(record.refresh_token_hash.clone()),
        previous_refresh_token_hash: Set(record.previous_refresh_token_hash.clone()),
        client_address: Set(record.client.address.clone()),
        user_agent: Set(record.client.user_agent.clone()),
        created_at: Set(record.created_at),
        last_used_at: Set(record.last_used_at),
        expires_at: Set(record.expires_at),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Loads a session by id (refresh tokens carry it; the tenant is learnt from the row).
pub async fn find(db: &impl Conn, id: SessionId) -> Result<Option<SessionRecord>> {
    Ok(session::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .map(to_record))
}

/// Replaces the refresh token hash if it is still `expected`; false when another call won.
pub async fn rotate(
    db: &impl Conn,
    id: SessionId,
    expected: &str,
    new_hash: &str,
    client: &ClientInfo,
    now: DateTime<Utc>,
) -> Result<bool> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RefreshTokenHash, Expr::value(new_hash))
        .col_expr(
            session::Column::PreviousRefreshTokenHash,
            Expr::value(expected),
        )
        .col_expr(session::Column::LastUsedAt, Expr::value(now))
        .col_expr(
            session::Column::ClientAddress,
            Expr::value(client.address.clone()),
        )
        .col_expr(
            session::Column::UserAgent,
            Expr::value(client.user_agent.clone()),
        )
        .filter(session::Column::Id.eq(id.0))
        .filter(session::Column::RefreshTokenHash.eq(expected))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Ends one session of the account; false when it was not open.
pub async fn revoke(
    db: &impl Conn,
    tenant_id: TenantId,
    id: SessionId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::TenantId.eq(tenant_id.0))
        .filter(session::Column::Id.eq(id.0))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Ends a user's open sessions, except `keep`; returns the ids it ended.
pub async fn revoke_user_sessions(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    keep: Option<SessionId>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<SessionId>> {
    let mut open = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(session::Column::TenantId.eq(tenant_id.0))
        .filter(session::Column::UserId.eq(user_id.0))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now));
    if let Some(keep) = keep {
        open = open.filter(session::Column::Id.ne(keep.0));
    }
    let ids: Vec<uuid::Uuid> = open.into_tuple().all(db).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::TenantId.eq(tenant_id.0))
        .filter(session::Column::Id.is_in(ids.clone()))
        .exec(db)
        .await?;
    Ok(ids.into_iter().map(SessionId).collect())
}

/// Sessions revoked after `since`, with their access-token horizon, to seed the revocation cache.
pub async fn revoked_since(
    db: &impl Conn,
    since: DateTime<Utc>,
) -> Result<Vec<(SessionId, DateTime<Utc>)>> {
    let rows: Vec<(uuid::Uuid, Option<DateTime<Utc>>)> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .column(session::Column::RevokedAt)
        .filter(session::Column::RevokedAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| at.map(|at| (SessionId(id), at)))
        .collect())
}

/// Ends every open session of many users (set-based, one statement per chunk).
pub async fn revoke_for_users(
    db: &impl Conn,
    tenant_id: TenantId,
    users: &[UserId],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut ended = 0;
    for chunk in users.chunks(super::ids_per_statement(db)) {
        ended += session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                session::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .filter(session::Column::RevokedAt.is_null())
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(ended)
}

/// Which sessions a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionScope {
    /// One user's.
    User(UserId),
    /// Every user's of the account.
    Account,
    /// Every user's of the account but these users'.
    AccountExcept(Vec<UserId>),
}

fn scoped(
    query: sea_orm::Select<session::Entity>,
    scope: SessionScope,
) -> sea_orm::Select<session::Entity> {
    match scope {
        SessionScope::User(user_id) => query.filter(session::Column::UserId.eq(user_id.0)),
        SessionScope::Account => query,
        SessionScope::AccountExcept(users) if users.is_empty() => query,
        SessionScope::AccountExcept(users) => {
            query.filter(session::Column::UserId.is_not_in(users.into_iter().map(|user| user.0)))
        }
    }
}

/// A page of open sessions of one account, newest first, after the session `after` (keyset on
/// the time-ordered id).
pub async fn list_open(
    db: &impl Conn,
    tenant_id: TenantId,
    scope: SessionScope,
    now: DateTime<Utc>,
    after: Option<SessionId>,
    limit: u64,
) -> Result<Vec<SessionRecord>> {
    let mut query = session::Entity::find()
        .filter(session::Column::TenantId.eq(tenant_id.0))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now));
    query = scoped(query, scope);
    if let Some(after) = after {
        query = query.filter(session::Column::Id.lt(after.0));
    }
    Ok(query
        .order_by_desc(session::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_record)
        .collect())
}

/// The open sessions of an account (or of one user), as (session, user) pairs.
pub async fn open_sessions(
    db: &impl Conn,
    tenant_id: TenantId,
    scope: SessionScope,
    now: DateTime<Utc>,
) -> Result<Vec<(SessionId, UserId)>> {
    let mut query = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .column(session::Column::UserId)
        .filter(session::Column::TenantId.eq(tenant_id.0))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now));
    query = scoped(query, scope);
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = query.into_tuple().all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(session, user)| (SessionId(session), UserId(user)))
        .collect())
}

/// Ends the given sessions of the account that are still open (set-based, one statement per
/// chunk); returns how many it ended.
pub async fn revoke_many(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[SessionId],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(SessionId, UserId)>> {
    let mut ended = Vec::new();
    for chunk in ids.chunks(super::users::CHUNK) {
        let rows = session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                session::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .filter(session::Column::RevokedAt.is_null())
            .exec_with_returning(db)
            .await?;
        ended.extend(
            rows.into_iter()
                .map(|row| (SessionId(row.id), UserId(row.user_id))),
        );
    }
    Ok(ended)
}
