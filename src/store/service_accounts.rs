//! Service accounts and their API keys, tenant first.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::{
    Conn,
    entity::{api_key, service_account},
};
use crate::model::{ApiKey, ApiKeyId, Error, Result, ServiceAccount, ServiceAccountId, TenantId};

fn to_account(row: service_account::Model) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        id: ServiceAccountId(row.id),
        tenant_id: TenantId(row.tenant_id),
        name: row.name,
        description: row.description,
        roles: serde_json::from_str(&row.roles).map_err(Error::internal_from)?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn to_key(row: api_key::Model) -> ApiKey {
    ApiKey {
        id: ApiKeyId(row.id),
        service_account_id: ServiceAccountId(row.service_account_id),
        prefix: row.prefix,
        created_at: row.created_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
    }
}

fn roles_json(roles: &[String]) -> Result<String> {
    serde_json::to_string(roles).map_err(Error::internal_from)
}

/// Stores a new service account; a taken name is ALREADY_EXISTS.
pub async fn insert(db: &impl Conn, account: &ServiceAccount) -> Result<()> {
    service_account::Entity::insert(service_account::ActiveModel {
        id: Set(account.id.0),
        tenant_id: Set(account.tenant_id.0),
        name: Set(account.name.clone()),
        description: Set(account.description.clone()),
        roles: Set(roles_json(&account.roles)?),
        created_at: Set(account.created_at),
        updated_at: Set(account.updated_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// One service account of the account.
pub async fn get(
    db: &impl Conn,
    tenant_id: TenantId,
    id: ServiceAccountId,
) -> Result<Option<ServiceAccount>> {
    service_account::Entity::find_by_id(id.0)
        .filter(service_account::Column::TenantId.eq(tenant_id.0))
        .one(db)
        .await?
        .map(to_account)
        .transpose()
}

/// The same, locked until the transaction ends (SQLite's one writer does the same job).
pub async fn get_for_update(
    db: &impl Conn,
    tenant_id: TenantId,
    id: ServiceAccountId,
) -> Result<Option<ServiceAccount>> {
    let mut query = service_account::Entity::find_by_id(id.0)
        .filter(service_account::Column::TenantId.eq(tenant_id.0));
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(db).await?.map(to_account).transpose()
}

/// A keyset page of the account's service accounts, by id.
pub async fn list(
    db: &impl Conn,
    tenant_id: TenantId,
    after: Option<ServiceAccountId>,
    limit: u64,
) -> Result<Vec<ServiceAccount>> {
    let mut query =
        service_account::Entity::find().filter(service_account::Column::TenantId.eq(tenant_id.0));
    if let Some(after) = after {
        query = query.filter(service_account::Column::Id.gt(after.0));
    }
    query
        .order_by_asc(service_account::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_account)
        .collect()
}

/// Writes a service account's fields back.
pub async fn update(db: &impl Conn, account: &ServiceAccount) -> Result<()> {
    service_account::Entity::update_many()
        .col_expr(
            service_account::Column::Name,
            Expr::value(account.name.clone()),
        )
        .col_expr(
            service_account::Column::Description,
            Expr::value(account.description.clone()),
        )
        .col_expr(
            service_account::Column::Roles,
            Expr::value(roles_json(&account.roles)?),
        )
        .col_expr(
            service_account::Column::UpdatedAt,
            Expr::value(account.updated_at),
        )
        .filter(service_account::Column::TenantId.eq(account.tenant_id.0))
        .filter(service_account::Column::Id.eq(account.id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a service account and its keys; false when there was none.
pub async fn delete(db: &impl Conn, tenant_id: TenantId, id: ServiceAccountId) -> Result<bool> {
    api_key::Entity::delete_many()
        .filter(api_key::Column::TenantId.eq(tenant_id.0))
        .filter(api_key::Column::ServiceAccountId.eq(id.0))
        .exec(db)
        .await?;
    Ok(service_account::Entity::delete_many()
        .filter(service_account::Column::TenantId.eq(tenant_id.0))
        .filter(service_account::Column::Id.eq(id.0))
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// Stores a new key of a service account.
pub async fn insert_key(
    db: &impl Conn,
    tenant_id: TenantId,
    key: &ApiKey,
    secret_hash: &str,
) -> Result<()> {
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(key.id.0),
        tenant_id: Set(tenant_id.0),
        service_account_id: Set(key.service_account_id.0),
        prefix: Set(key.prefix.clone()),
        secret_hash: Set(secret_hash.to_owned()),
        created_at: Set(key.created_at),
        expires_at: Set(key.expires_at),
        last_used_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The keys of a service account, oldest first.
pub async fn keys(
    db: &impl Conn,
    tenant_id: TenantId,
    account: ServiceAccountId,
) -> Result<Vec<ApiKey>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id.0))
        .filter(api_key::Column::ServiceAccountId.eq(account.0))
        .order_by_asc(api_key::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(to_key)
        .collect())
}

/// A key by its prefix, with its stored hash and its service account (any account's: the
/// caller is not known yet).
pub async fn find_key(
    db: &impl Conn,
    prefix: &str,
) -> Result<Option<(ApiKey, String, ServiceAccount)>> {
    let Some(row) = api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let account = get(
        db,
        TenantId(row.tenant_id),
        ServiceAccountId(row.service_account_id),
    )
    .await?;
    let hash = row.secret_hash.clone();
    Ok(account.map(|account| (to_key(row), hash, account)))
}

/// Deletes a key; false when the service account has no such key.
pub async fn delete_key(
    db: &impl Conn,
    tenant_id: TenantId,
    account: ServiceAccountId,
    key: ApiKeyId,
) -> Result<bool> {
    Ok(api_key::Entity::delete_many()
        .filter(api_key::Column::TenantId.eq(tenant_id.0))
        .filter(api_key::Column::ServiceAccountId.eq(account.0))
        .filter(api_key::Column::Id.eq(key.0))
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// Records when keys were last used (a batch of what this replica saw since the last one).
pub async fn record_last_used(db: &impl Conn, used: &[(ApiKeyId, DateTime<Utc>)]) -> Result<()> {
    for (key, at) in used {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(*at))
            .filter(api_key::Column::Id.eq(key.0))
            .filter(
                sea_orm::Condition::any()
                    .add(api_key::Column::LastUsedAt.is_null())
                    .add(api_key::Column::LastUsedAt.lt(*at)),
            )
            .exec(db)
            .await?;
    }
    Ok(())
}
