//! Accounts.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use super::{Conn, entity::tenant};
use crate::model::{AccountName, Result, Tenant, TenantId, TenantRef, UserId};

fn to_model(row: tenant::Model) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId(row.id),
        slug: row.slug,
        name: AccountName::parse("name", &row.name)?,
        owner_user_id: row.owner_user_id.map(UserId),
        require_two_factor: row.require_two_factor,
        created_at: row.created_at,
    })
}

/// Inserts a new account (its owner is set once the owner row exists).
pub async fn insert(db: &impl Conn, tenant: &Tenant) -> Result<()> {
    tenant::Entity::insert(tenant::ActiveModel {
        id: Set(tenant.id.0),
        slug: Set(tenant.slug.clone()),
        name: Set(tenant.name.as_str().to_owned()),
        owner_user_id: Set(tenant.owner_user_id.map(|id| id.0)),
        require_two_factor: Set(tenant.require_two_factor),
        created_at: Set(tenant.created_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Makes `owner` the account's owner if `current` still is (`None`: a new account's first): false when another transfer came
/// first (a conditional write, so that of concurrent transfers exactly one succeeds).
pub async fn set_owner(
    db: &impl Conn,
    tenant_id: TenantId,
    current: Option<UserId>,
    owner: UserId,
) -> Result<bool> {
    let current = match current {
        Some(current) => tenant::Column::OwnerUserId.eq(current.0),
        None => tenant::Column::OwnerUserId.is_null(),
    };
    let changed = tenant::Entity::update_many()
        .col_expr(tenant::Column::OwnerUserId, Expr::value(owner.0))
        .filter(tenant::Column::Id.eq(tenant_id.0))
        .filter(current)
        .exec(db)
        .await?
        .rows_affected;
    Ok(changed == 1)
}

/// Finds an account by id or slug.
pub async fn find(db: &impl Conn, reference: &TenantRef) -> Result<Option<Tenant>> {
    let query = match reference {
        TenantRef::Id(id) => tenant::Entity::find_by_id(id.0),
        TenantRef::Slug(slug) => {
            tenant::Entity::find().filter(tenant::Column::Slug.eq(slug.as_str()))
        }
    };
    query.one(db).await?.map(to_model).transpose()
}

/// Loads an account by id.
pub async fn get(db: &impl Conn, tenant_id: TenantId) -> Result<Option<Tenant>> {
    find(db, &TenantRef::Id(tenant_id)).await
}

/// Whether a slug is taken.
pub async fn slug_taken(db: &impl Conn, slug: &str) -> Result<bool> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug))
        .one(db)
        .await?
        .is_some())
}

/// Whether the account requires two-factor authentication of all its users.
pub async fn requires_two_factor(db: &impl Conn, tenant_id: TenantId) -> Result<bool> {
    Ok(tenant::Entity::find_by_id(tenant_id.0)
        .one(db)
        .await?
        .is_some_and(|row| row.require_two_factor))
}

/// Sets whether the account requires two-factor authentication of all its users.
pub async fn set_requires_two_factor(
    db: &impl Conn,
    tenant_id: TenantId,
    required: bool,
) -> Result<()> {
    tenant::Entity::update_many()
        .col_expr(tenant::Column::RequireTwoFactor, Expr::value(required))
        .filter(tenant::Column::Id.eq(tenant_id.0))
        .exec(db)
        .await?;
    Ok(())
}
