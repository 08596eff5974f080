//! Creating, updating, deleting users and changing their status, email and password.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, Statement,
    sea_query::{Expr, ExprTrait, Query},
};

use crate::model::{Email, Error, Result, SealedSecrets, TenantId, User, UserId, UserStatus};
use crate::store::{Conn, entity::user};

use super::*;

pub(super) fn profile_json(user: &User) -> Result<Option<String>> {
    user.dialer_profile
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(Error::internal)
}

pub(super) fn active_model(new: &NewUser) -> Result<user::ActiveModel> {
    let user = &new.user;
    Ok(user::ActiveModel {
        id: Set(user.id.0),
        tenant_id: Set(user.tenant_id.0),
        email: Set(user.email.as_str().to_owned()),
        username: Set(user.username.as_str().to_owned()),
        first_name: Set(user.first_name.as_str().to_owned()),
        last_name: Set(user.last_name.as_str().to_owned()),
        status: Set(user.status.as_str().to_owned()),
        password_hash: Set(new.password_hash.clone()),
        password_change_required: Set(user.password_change_required),
        tokens_valid_after: Set(None),
        created_at: Set(user.created_at),
        updated_at: Set(user.updated_at),
        last_login_at: Set(user.last_login_at),
        dialer_profile: Set(profile_json(user)?),
        caldav_token: Set(new.secrets.caldav_token.clone()),
        pbx_password: Set(new.secrets.pbx_password.clone()),
        token_generation: Set(0),
        // Every new user confirms their address through the activation link.
        email_verified_at: sea_orm::ActiveValue::NotSet,
        pending_email: sea_orm::ActiveValue::NotSet,
        search_text: Set(user.search_text()),
    })
}

/// Inserts a user and their roles.
pub async fn insert(db: &impl Conn, new: &NewUser) -> Result<()> {
    user::Entity::insert(active_model(new)?)
        .exec_without_returning(db)
        .await?;
    let user = &new.user;
    replace_labels(db, Label::Role, user.tenant_id, user.id, &user.roles).await?;
    if !user.tags.is_empty() {
        add_labels(db, Label::Tag, user.tenant_id, &[user.id], &user.tags).await?;
    }
    Ok(())
}

/// Writes a user's editable fields (identity, names, profile) and, when given, their secrets.
pub async fn update(
    db: &impl Conn,
    user: &User,
    secrets: &SealedSecrets,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::Email, Expr::value(user.email.as_str()))
        .col_expr(user::Column::Username, Expr::value(user.username.as_str()))
        .col_expr(
            user::Column::FirstName,
            Expr::value(user.first_name.as_str()),
        )
        .col_expr(user::Column::LastName, Expr::value(user.last_name.as_str()))
        .col_expr(user::Column::SearchText, Expr::value(user.search_text()))
        .col_expr(
            user::Column::DialerProfile,
            Expr::value(profile_json(user)?),
        )
        .col_expr(user::Column::UpdatedAt, Expr::value(now));
    if let Some(token) = &secrets.caldav_token {
        update = update.col_expr(user::Column::CaldavToken, Expr::value(token.as_str()));
    }
    if let Some(password) = &secrets.pbx_password {
        update = update.col_expr(user::Column::PbxPassword, Expr::value(password.as_str()));
    }
    update
        .filter(user::Column::TenantId.eq(user.tenant_id.0))
        .filter(user::Column::Id.eq(user.id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// The class of the account's users lock, the advisory lock of migration 000016's
/// `roster_lock_users_of` ("rost").
pub const USERS_LOCK_CLASS: i32 = 1_919_906_676;

/// Takes the account's users lock (PostgreSQL, migration 000016) until the transaction ends:
/// exclusive for a deletion of users, shared for a writer of rows naming them (a statement writing
/// over 1,000 such rows takes it shared anyway), waiting for a holder of the other kind.
pub async fn lock_account_users(
    db: &impl Conn,
    tenant_id: TenantId,
    exclusive: bool,
) -> Result<()> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT roster_lock_users_of($1, $2)",
        [tenant_id.0.into(), exclusive.into()],
    ))
    .await?;
    Ok(())
}

/// Takes what a deletion of the account's users needs before it reads the users it deletes
/// (the account's users lock on PostgreSQL, see [`delete`]); nothing on SQLite, whose write
/// transaction excludes other writers already.
pub async fn lock_for_deletion(db: &impl Conn, tenant_id: TenantId) -> Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        lock_account_users(db, tenant_id, true).await?;
    }
    Ok(())
}

/// Deletes users of the account (their roles, sessions and tokens go with them).
pub async fn delete(db: &impl Conn, tenant_id: TenantId, ids: &[UserId]) -> Result<u64> {
    if db.get_database_backend() == DbBackend::Postgres {
        // The deletion's trigger takes this lock too (migration 000016), but only once the rows
        // are deleted: taken first, a deletion never holds a user's row while it waits for a
        // large writer of rows naming the account's users, who might be waiting for that row.
        lock_account_users(db, tenant_id, true).await?;
    }
    let mut deleted = 0;
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        deleted += user::Entity::delete_many()
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(crate::store::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// Sets the status of users; returns how many changed.
pub async fn set_status(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    status: UserStatus,
    now: DateTime<Utc>,
) -> Result<u64> {
    let others: Vec<UserStatus> = UserStatus::ALL
        .into_iter()
        .filter(|other| *other != status)
        .collect();
    set_status_from(db, tenant_id, ids, &others, status, now).await
}

/// Sets the status of the users among `ids` that are in one of `from`; returns how many changed.
pub async fn set_status_from(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    from: &[UserStatus],
    status: UserStatus,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut changed = 0;
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        changed += user::Entity::update_many()
            .col_expr(user::Column::Status, Expr::value(status.as_str()))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(crate::store::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .filter(user::Column::Status.is_in(from.iter().map(|s| s.as_str())))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(changed)
}

/// Reactivates the INACTIVE or LOCKED users among `ids`: ACTIVE, or PENDING_CONFIRMATION for a
/// user who never confirmed their email (only the activation link ends that). Returns how many
/// changed.
pub async fn reactivate(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<Vec<UserId>> {
    let status = Expr::case(
        Expr::col(user::Column::EmailVerifiedAt).is_null(),
        UserStatus::PendingConfirmation.as_str(),
    )
    .finally(UserStatus::Active.as_str());
    let mut changed = Vec::new();
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        let statement = Query::update()
            .table(user::Entity)
            .value(user::Column::Status, status.clone())
            .value(user::Column::UpdatedAt, Expr::value(now))
            .and_where(user::Column::TenantId.eq(tenant_id.0))
            .and_where(crate::store::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .and_where(
                user::Column::Status
                    .is_in([UserStatus::Inactive.as_str(), UserStatus::Locked.as_str()]),
            )
            .returning(Query::returning().column(user::Column::Id))
            .to_owned();
        for row in db.query_all(&statement).await? {
            changed.push(UserId(row.try_get("", "id")?));
        }
    }
    Ok(changed)
}

/// Starts (`Some`) or drops (`None`) a change of address waiting for the new one to confirm.
pub async fn set_pending_email(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    email: Option<&Email>,
) -> Result<()> {
    user::Entity::update_many()
        .col_expr(
            user::Column::PendingEmail,
            Expr::value(email.map(|email| email.as_str().to_owned())),
        )
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Leaves the user's (new) address unconfirmed, with no change pending.
pub async fn mark_email_unverified(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<()> {
    update_one(tenant_id, user_id)
        .col_expr(
            user::Column::EmailVerifiedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            user::Column::PendingEmail,
            Expr::value(Option::<String>::None),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Makes the pending address (if any) the user's address, confirmed; a unique index refuses an
/// address taken meanwhile (ALREADY_EXISTS).
pub async fn confirm_email(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(row) = user::Entity::find_by_id(user_id.0)
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .one(db)
        .await?
    else {
        return Ok(());
    };
    let email = row.pending_email.as_deref().unwrap_or(&row.email);
    let search = crate::model::search_text(&row.first_name, &row.last_name, email, &row.username);
    update_one(tenant_id, user_id)
        .col_expr(
            user::Column::Email,
            Expr::cust("COALESCE(pending_email, email)"),
        )
        .col_expr(user::Column::SearchText, Expr::value(search))
        .col_expr(
            user::Column::PendingEmail,
            Expr::value(Option::<String>::None),
        )
        .col_expr(user::Column::EmailVerifiedAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .exec(db)
        .await?;
    Ok(())
}

/// An update of one user of the account.
pub(super) fn update_one(
    tenant_id: TenantId,
    user_id: UserId,
) -> sea_orm::UpdateMany<user::Entity> {
    user::Entity::update_many()
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0))
}

/// Records that the user confirmed their email address (the activation link reached them).
pub async fn mark_email_verified(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    update_one(tenant_id, user_id)
        .col_expr(user::Column::EmailVerifiedAt, Expr::value(now))
        .filter(user::Column::EmailVerifiedAt.is_null())
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
    update_one(tenant_id, user_id)
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(
            user::Column::PasswordChangeRequired,
            Expr::value(change_required),
        )
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
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
    update_one(tenant_id, user_id)
        .col_expr(user::Column::LastLoginAt, Expr::value(now))
        .exec(db)
        .await?;
    Ok(())
}
