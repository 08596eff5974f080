//! A user's roles and tags, and the log of role changes.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
    sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Query},
};

use crate::model::{Result, TenantId, UserId};
use crate::store::{
    Conn,
    entity::{role_change, user_role},
};

use super::*;

/// The labels users carry in tables keyed by (tenant, user, value): roles and tags. One set of
/// functions replaces, adds and removes either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Role,
    Tag,
}

impl Label {
    fn table(self) -> &'static str {
        match self {
            Self::Role => "user_roles",
            Self::Tag => "user_tags",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Role => "role",
            Self::Tag => "tag",
        }
    }
}

/// Replaces one user's labels of a kind with `values`.
pub async fn replace_labels(
    db: &impl Conn,
    label: Label,
    tenant_id: TenantId,
    user_id: UserId,
    values: &[String],
) -> Result<()> {
    let mut delete = Query::delete();
    delete
        .from_table(Alias::new(label.table()))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant_id.0))
        .and_where(Expr::col(Alias::new("user_id")).eq(user_id.0));
    db.execute(&delete).await?;
    add_labels(db, label, tenant_id, &[user_id], values).await
}

/// Takes `values` of a kind from many users, a chunk of users per statement.
pub async fn remove_labels(
    db: &impl Conn,
    label: Label,
    tenant_id: TenantId,
    ids: &[UserId],
    values: &[String],
) -> Result<()> {
    if ids.is_empty() || values.is_empty() {
        return Ok(());
    }
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        let users: Vec<uuid::Uuid> = chunk.iter().map(|id| id.0).collect();
        let among = if db.get_database_backend() == DbBackend::Postgres {
            // One array parameter, as `store::one_of` binds it.
            Expr::col(Alias::new("user_id")).in_subquery(
                Query::select()
                    .expr(Func::cust("unnest").arg(Expr::val(users)))
                    .to_owned(),
            )
        } else {
            Expr::col(Alias::new("user_id")).is_in(users)
        };
        let mut delete = Query::delete();
        delete
            .from_table(Alias::new(label.table()))
            .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant_id.0))
            .and_where(among)
            .and_where(Expr::col(Alias::new(label.column())).is_in(values.iter().cloned()));
        db.execute(&delete).await?;
    }
    Ok(())
}

/// Gives each of the users each of `values` of a kind, passing over the pairs already there:
/// one `INSERT ... ON CONFLICT DO NOTHING` per chunk, which the primary key checks as it
/// inserts (no read first).
pub async fn add_labels(
    db: &impl Conn,
    label: Label,
    tenant_id: TenantId,
    ids: &[UserId],
    values: &[String],
) -> Result<()> {
    let (table, column) = (label.table(), label.column());
    if ids.is_empty() || values.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        // In key order the new index entries land side by side, not on a random page each.
        let mut ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        ids.sort_unstable();
        let sql = format!(
            "INSERT INTO {table} (tenant_id, user_id, {column}) SELECT $1, u.id, v.value \
             FROM unnest($2::uuid[]) AS u(id) CROSS JOIN unnest($3::text[]) AS v(value) \
             ON CONFLICT DO NOTHING"
        );
        for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                &sql,
                [
                    tenant_id.0.into(),
                    chunk.to_vec().into(),
                    values.to_vec().into(),
                ],
            ))
            .await?;
        }
        return Ok(());
    }
    for value in values {
        for chunk in ids.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new(table))
                .columns([
                    Alias::new("tenant_id"),
                    Alias::new("user_id"),
                    Alias::new(column),
                ])
                .on_conflict(OnConflict::new().do_nothing().to_owned());
            for id in chunk {
                insert.values_panic([tenant_id.0.into(), id.0.into(), value.as_str().into()]);
            }
            db.execute(&insert).await?;
        }
    }
    Ok(())
}

/// Records that the users' roles changed now (so a restart re-applies the change to older tokens).
pub async fn mark_roles_changed(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<()> {
    // A statement may change a row once only.
    let mut ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    if db.get_database_backend() == DbBackend::Postgres {
        const MARK: &str = "INSERT INTO role_changes (tenant_id, user_id, changed_at) \
            SELECT $1, u.id, $3 FROM unnest($2::uuid[]) AS u(id) \
            ON CONFLICT (tenant_id, user_id) DO UPDATE SET changed_at = EXCLUDED.changed_at";
        for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                MARK,
                [tenant_id.0.into(), chunk.to_vec().into(), now.into()],
            ))
            .await?;
        }
        return Ok(());
    }
    for chunk in ids.chunks(CHUNK) {
        role_change::Entity::insert_many(chunk.iter().map(|id| role_change::ActiveModel {
            tenant_id: Set(tenant_id.0),
            user_id: Set(*id),
            changed_at: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([role_change::Column::TenantId, role_change::Column::UserId])
                .update_column(role_change::Column::ChangedAt)
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Forgets the role changes made before `before` (older than any access token still valid).
pub async fn forget_role_changes_before(db: &impl Conn, before: DateTime<Utc>) -> Result<()> {
    role_change::Entity::delete_many()
        .filter(role_change::Column::ChangedAt.lte(before))
        .exec(db)
        .await?;
    Ok(())
}

/// Users whose roles changed after `since`, to seed the current grants at start and to catch up
/// on lost notifications (a range of the `role_changes_changed_at` index).
pub async fn roles_changed_since(
    db: &impl Conn,
    since: DateTime<Utc>,
) -> Result<Vec<(TenantId, UserId, DateTime<Utc>)>> {
    let rows: Vec<(uuid::Uuid, uuid::Uuid, DateTime<Utc>)> = role_change::Entity::find()
        .select_only()
        .column(role_change::Column::TenantId)
        .column(role_change::Column::UserId)
        .column(role_change::Column::ChangedAt)
        .filter(role_change::Column::ChangedAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, id, at)| (TenantId(tenant), UserId(id), at))
        .collect())
}

/// Removes role keys from every holder in the account (a deleted custom role).
pub async fn unassign_role_everywhere(
    db: &impl Conn,
    tenant_id: TenantId,
    key: &str,
) -> Result<()> {
    user_role::Entity::delete_many()
        .filter(user_role::Column::TenantId.eq(tenant_id.0))
        .filter(user_role::Column::Role.eq(key))
        .exec(db)
        .await?;
    Ok(())
}
