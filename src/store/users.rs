//! Users and their account roles.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};

use super::{
    Conn,
    entity::{tenant, user, user_role},
};
use crate::model::{
    Email, Login, PersonName, Result, TenantId, User, UserId, UserStatus, Username,
};

/// A user together with their password hash, for the few flows that verify it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: Option<String>,
}

fn to_model(row: user::Model, roles: Vec<String>, owner: Option<UserId>) -> Result<Credentials> {
    let user = User {
        id: UserId(row.id),
        tenant_id: TenantId(row.tenant_id),
        email: Email::parse("email", &row.email)?,
        username: Username::parse("username", &row.username)?,
        first_name: PersonName::parse("first_name", &row.first_name)?,
        last_name: PersonName::parse("last_name", &row.last_name)?,
        status: UserStatus::from_stored(&row.status)?,
        roles,
        is_owner: owner == Some(UserId(row.id)),
        password_change_required: row.password_change_required,
        created_at: row.created_at,
        last_login_at: row.last_login_at,
    };
    Ok(Credentials {
        user,
        password_hash: row.password_hash,
    })
}

async fn roles_of(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<Vec<String>> {
    let mut roles: Vec<String> = user_role::Entity::find()
        .filter(user_role::Column::TenantId.eq(tenant_id.0))
        .filter(user_role::Column::UserId.eq(user_id.0))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.role)
        .collect();
    roles.sort();
    Ok(roles)
}

async fn owner_of(db: &impl Conn, tenant_id: TenantId) -> Result<Option<UserId>> {
    Ok(tenant::Entity::find_by_id(tenant_id.0)
        .one(db)
        .await?
        .and_then(|row| row.owner_user_id)
        .map(UserId))
}

async fn complete(db: &impl Conn, row: user::Model) -> Result<Credentials> {
    let tenant_id = TenantId(row.tenant_id);
    let roles = roles_of(db, tenant_id, UserId(row.id)).await?;
    let owner = owner_of(db, tenant_id).await?;
    to_model(row, roles, owner)
}

/// Inserts a user and their roles.
pub async fn insert(db: &impl Conn, user: &User, password_hash: Option<String>) -> Result<()> {
    user::Entity::insert(user::ActiveModel {
        id: Set(user.id.0),
        tenant_id: Set(user.tenant_id.0),
        email: Set(user.email.as_str().to_owned()),
        username: Set(user.username.as_str().to_owned()),
        first_name: Set(user.first_name.as_str().to_owned()),
        last_name: Set(user.last_name.as_str().to_owned()),
        status: Set(user.status.as_str().to_owned()),
        password_hash: Set(password_hash),
        password_change_required: Set(user.password_change_required),
        tokens_valid_after: Set(None),
        created_at: Set(user.created_at),
        updated_at: Set(user.created_at),
        last_login_at: Set(user.last_login_at),
    })
    .exec_without_returning(db)
    .await?;
    set_roles(db, user.tenant_id, user.id, &user.roles).await
}

/// Replaces a user's account roles.
pub async fn set_roles(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    roles: &[String],
) -> Result<()> {
    user_role::Entity::delete_many()
        .filter(user_role::Column::TenantId.eq(tenant_id.0))
        .filter(user_role::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    if roles.is_empty() {
        return Ok(());
    }
    user_role::Entity::insert_many(roles.iter().map(|role| user_role::ActiveModel {
        tenant_id: Set(tenant_id.0),
        user_id: Set(user_id.0),
        role: Set(role.clone()),
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Loads a user of the account.
pub async fn get(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<Option<User>> {
    Ok(get_credentials(db, tenant_id, user_id)
        .await?
        .map(|found| found.user))
}

/// Loads a user of the account with their password hash.
pub async fn get_credentials(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<Credentials>> {
    let row = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
        .one(db)
        .await?;
    match row {
        Some(row) => Ok(Some(complete(db, row).await?)),
        None => Ok(None),
    }
}

/// Finds the user a login names: an email match wins over a username match.
pub async fn find_by_login(
    db: &impl Conn,
    tenant_id: TenantId,
    login: &Login,
) -> Result<Option<Credentials>> {
    let rows = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(
            Condition::any()
                .add(user::Column::Email.eq(login.as_str()))
                .add(user::Column::Username.eq(login.as_str())),
        )
        .order_by_asc(user::Column::Id)
        .all(db)
        .await?;
    let chosen = rows
        .iter()
        .position(|row| row.email == login.as_str())
        .or(if rows.is_empty() { None } else { Some(0) });
    match chosen {
        Some(index) => Ok(Some(complete(db, rows[index].clone()).await?)),
        None => Ok(None),
    }
}

/// Sets a user's status.
pub async fn set_status(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    status: UserStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::Status, Expr::value(status.as_str()))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Stores a new password hash.
pub async fn set_password_hash(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    password_hash: &str,
    change_required: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(
            user::Column::PasswordChangeRequired,
            Expr::value(change_required),
        )
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Records a successful login.
pub async fn set_last_login(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::LastLoginAt, Expr::value(now))
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Users whose access tokens issued before an instant after `since` are refused, with that instant.
pub async fn tokens_revoked_since(
    db: &impl Conn,
    since: DateTime<Utc>,
) -> Result<Vec<(UserId, DateTime<Utc>)>> {
    Ok(user::Entity::find()
        .filter(user::Column::TokensValidAfter.gt(since))
        .all(db)
        .await?
        .into_iter()
        .filter_map(|row| row.tokens_valid_after.map(|at| (UserId(row.id), at)))
        .collect())
}
