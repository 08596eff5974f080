//! Custom roles of an account (built-in roles live in `model`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};

use super::{Conn, entity::role};
use crate::model::{Error, Result, RoleDef, RoleScope, TenantId};

fn to_def(row: role::Model) -> Result<RoleDef> {
    let mut permissions: Vec<String> = row
        .permissions
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    permissions.sort();
    Ok(RoleDef {
        key: row.key,
        name: row.name,
        scope: RoleScope::from_stored(&row.scope)
            .ok_or_else(|| Error::internal(format!("unknown stored role scope {:?}", row.scope)))?,
        permissions,
        builtin: false,
    })
}

/// Every custom role of the account, by key.
pub async fn list(db: &impl Conn, tenant_id: TenantId) -> Result<Vec<RoleDef>> {
    role::Entity::find()
        .filter(role::Column::TenantId.eq(tenant_id.0))
        .order_by_asc(role::Column::Key)
        .all(db)
        .await?
        .into_iter()
        .map(to_def)
        .collect()
}

/// The custom roles among `keys`.
pub async fn find_many(
    db: &impl Conn,
    tenant_id: TenantId,
    keys: &[String],
) -> Result<Vec<RoleDef>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    role::Entity::find()
        .filter(role::Column::TenantId.eq(tenant_id.0))
        .filter(role::Column::Key.is_in(keys.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(to_def)
        .collect()
}

/// Stores a new custom role.
pub async fn insert(
    db: &impl Conn,
    tenant_id: TenantId,
    role: &RoleDef,
    now: DateTime<Utc>,
) -> Result<()> {
    role::Entity::insert(role::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.0),
        key: Set(role.key.clone()),
        name: Set(role.name.clone()),
        scope: Set(role.scope.as_str().to_owned()),
        permissions: Set(role.permissions.join(",")),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .map_err(|err| match Error::from(err) {
        Error::AlreadyExists(_) => {
            Error::already_exists("key", "a role with this key exists in this account")
        }
        other => other,
    })?;
    Ok(())
}

/// Renames a custom role and replaces its permissions.
pub async fn update(
    db: &impl Conn,
    tenant_id: TenantId,
    role: &RoleDef,
    now: DateTime<Utc>,
) -> Result<()> {
    role::Entity::update_many()
        .col_expr(role::Column::Name, Expr::value(role.name.clone()))
        .col_expr(
            role::Column::Permissions,
            Expr::value(role.permissions.join(",")),
        )
        .col_expr(role::Column::UpdatedAt, Expr::value(now))
        .filter(role::Column::TenantId.eq(tenant_id.0))
        .filter(role::Column::Key.eq(role.key.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a custom role (its holders are unassigned by the caller).
pub async fn delete(db: &impl Conn, tenant_id: TenantId, key: &str) -> Result<bool> {
    let result = role::Entity::delete_many()
        .filter(role::Column::TenantId.eq(tenant_id.0))
        .filter(role::Column::Key.eq(key))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}
