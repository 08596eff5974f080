//! Many users at once (an import), and the invitees of an invitation batch.

use std::collections::HashSet;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, QueryTrait, SqlErr, Statement,
    Value,
    sea_query::{OnConflict, Query},
};

use crate::model::{Result, TenantId, UserId, UserStatus};
use crate::store::{
    Conn,
    entity::{action_token, user, user_role},
};

use super::*;

/// Inserts many users of one account with multi-row statements (an import), skipping those whose
/// email or username is taken in the account; returns the ids of the users inserted. The unique
/// indexes decide (`ON CONFLICT DO NOTHING`; on PostgreSQL only after a plain insert met a taken
/// login), so no query before can go stale, and a row taken meanwhile by a concurrent call is
/// skipped rather than failing the whole import.
pub async fn insert_many(
    db: &impl Conn,
    tenant_id: TenantId,
    users: &[NewUser],
) -> Result<HashSet<UserId>> {
    if db.get_database_backend() == DbBackend::Postgres
        && users.iter().all(|new| new.user.last_login_at.is_none())
    {
        return insert_many_postgres(db, tenant_id, users).await;
    }
    let mut inserted = HashSet::with_capacity(users.len());
    // 17 columns a row: 1,000 rows stay far below every bind-parameter limit.
    for chunk in users.chunks(1_000) {
        let rows = chunk.iter().map(active_model).collect::<Result<Vec<_>>>()?;
        let statement = user::Entity::insert_many(rows)
            .into_query()
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .returning(Query::returning().column(user::Column::Id))
            .to_owned();
        for row in db.query_all(&statement).await? {
            inserted.insert(UserId(row.try_get("", "id")?));
        }
        let roles: Vec<user_role::ActiveModel> = chunk
            .iter()
            .filter(|new| inserted.contains(&new.user.id))
            .flat_map(|new| {
                new.user
                    .roles
                    .iter()
                    .map(move |role| user_role::ActiveModel {
                        tenant_id: Set(tenant_id.0),
                        user_id: Set(new.user.id.0),
                        role: Set(role.clone()),
                    })
            })
            .collect();
        for roles in roles.chunks(5_000) {
            user_role::Entity::insert_many(roles.to_vec())
                .exec_without_returning(db)
                .await?;
        }
    }
    Ok(inserted)
}

/// [`insert_many`] on PostgreSQL: one array per column, unnested into rows by the server, so a
/// chunk of 20,000 users is one statement with a dozen parameters (a multi-row VALUES list of
/// 17 parameters a row costs more to build and to plan than to insert).
pub(super) async fn insert_many_postgres(
    db: &impl Conn,
    tenant_id: TenantId,
    users: &[NewUser],
) -> Result<HashSet<UserId>> {
    // Arrays carry no NULL here: an absent text is '' and NULLIF turns it back. A column absent
    // from every row of a chunk travels as an empty array: `unnest` pads the shorter arrays with
    // NULLs, so 20,000 empty strings need not be built, sent and parsed.
    const USERS: &str = r#"INSERT INTO users (id, tenant_id, email, username, first_name,
        last_name, status, password_hash, password_change_required, created_at, updated_at,
        dialer_profile, caldav_token, pbx_password, token_generation, search_text)
        SELECT u.id, $1, u.email, u.username, u.first_name, u.last_name, u.status,
            NULLIF(u.password_hash, ''), u.change_required, u.created_at, u.updated_at,
            NULLIF(u.profile, ''), NULLIF(u.caldav, ''), NULLIF(u.pbx, ''), 0, u.search
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bool[], $10::timestamptz[], $11::timestamptz[], $12::text[],
            $13::text[], $14::text[], $15::text[])
            AS u(id, email, username, first_name, last_name, status, password_hash,
                change_required, created_at, updated_at, profile, caldav, pbx, search)"#;
    const ROLES: &str = r#"INSERT INTO user_roles (tenant_id, user_id, role)
        SELECT $1, r.user_id, r.role FROM unnest($2::uuid[], $3::text[]) AS r(user_id, role)"#;
    let mut inserted = HashSet::with_capacity(users.len());
    for chunk in users.chunks(20_000) {
        let (values, role_users, role_keys) = unnest_arguments(tenant_id, chunk)?;
        // Most imports meet no taken login, and a plain insert costs about 15% less than one
        // with ON CONFLICT (no speculative insertion per row, no ids sent back). When a login is
        // taken, the savepoint undoes the attempt and the chunk goes again skipping the taken.
        db.execute_unprepared("SAVEPOINT import_chunk").await?;
        let mut plain_values = values;
        plain_values.extend([Value::from(role_users), role_keys.into()]);
        // The users and their roles in one statement, one round trip (the users' insert is a
        // data-modifying WITH: it runs though nothing reads it).
        let plain = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "WITH users_inserted AS ({USERS}) INSERT INTO user_roles (tenant_id, user_id, \
                 role) SELECT $1, r.user_id, r.role FROM unnest($16::uuid[], $17::text[]) \
                 AS r(user_id, role)"
            ),
            plain_values,
        );
        match db.execute_raw(plain).await {
            Ok(_) => {
                db.execute_unprepared("RELEASE SAVEPOINT import_chunk")
                    .await?;
                inserted.extend(chunk.iter().map(|new| new.user.id));
            }
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                db.execute_unprepared("ROLLBACK TO SAVEPOINT import_chunk")
                    .await?;
                // The arguments went with the first attempt: they are made again (rarely).
                let (values, role_users, role_keys) = unnest_arguments(tenant_id, chunk)?;
                let skipping = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!("{USERS} ON CONFLICT DO NOTHING RETURNING id"),
                    values,
                );
                let mut inserted_now = HashSet::new();
                for row in db.query_all_raw(skipping).await? {
                    inserted_now.insert(UserId(row.try_get_by_index::<uuid::Uuid>(0)?));
                }
                // Only the users inserted get their roles.
                let (users, keys): (Vec<_>, Vec<_>) = role_users
                    .into_iter()
                    .zip(role_keys)
                    .filter(|(user, _)| inserted_now.contains(&UserId(*user)))
                    .unzip();
                if !users.is_empty() {
                    db.execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        ROLES,
                        [tenant_id.0.into(), users.into(), keys.into()],
                    ))
                    .await?;
                }
                inserted.extend(inserted_now);
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(inserted)
}

/// The arguments of [`insert_many_postgres`]'s statements for `chunk`: the users' columns as
/// arrays (after the tenant; a column absent from every row as an empty array), and the
/// (user, role) pairs.
pub(super) fn unnest_arguments(
    tenant_id: TenantId,
    chunk: &[NewUser],
) -> Result<(Vec<Value>, Vec<uuid::Uuid>, Vec<String>)> {
    let mut columns: [Vec<String>; 9] = Default::default();
    let mut searches = Vec::with_capacity(chunk.len());
    let mut ids = Vec::with_capacity(chunk.len());
    let mut change_required = Vec::with_capacity(chunk.len());
    let mut created_at = Vec::with_capacity(chunk.len());
    let mut updated_at = Vec::with_capacity(chunk.len());
    let (mut role_users, mut role_keys) = (Vec::new(), Vec::new());
    let profiles = chunk
        .iter()
        .map(|new| profile_json(&new.user))
        .collect::<Result<Vec<_>>>()?;
    // Which optional columns some row of the chunk has (the others stay empty arrays).
    let present = [
        true,
        true,
        true,
        true,
        true,
        chunk.iter().any(|new| new.password_hash.is_some()),
        profiles.iter().any(Option::is_some),
        chunk.iter().any(|new| new.secrets.caldav_token.is_some()),
        chunk.iter().any(|new| new.secrets.pbx_password.is_some()),
    ];
    for (new, profile) in chunk.iter().zip(&profiles) {
        let user = &new.user;
        ids.push(user.id.0);
        let row = [
            user.email.as_str(),
            user.username.as_str(),
            user.first_name.as_str(),
            user.last_name.as_str(),
            user.status.as_str(),
            new.password_hash.as_deref().unwrap_or_default(),
            profile.as_deref().unwrap_or_default(),
            new.secrets.caldav_token.as_deref().unwrap_or_default(),
            new.secrets.pbx_password.as_deref().unwrap_or_default(),
        ];
        for ((column, value), present) in columns.iter_mut().zip(row).zip(present) {
            if present {
                column.push(value.to_owned());
            }
        }
        searches.push(user.search_text());
        change_required.push(user.password_change_required);
        created_at.push(user.created_at);
        updated_at.push(user.updated_at);
        for role in &user.roles {
            role_users.push(user.id.0);
            role_keys.push(role.clone());
        }
    }
    let mut values: Vec<Value> = vec![tenant_id.0.into(), ids.into()];
    let [
        email,
        username,
        first,
        last,
        status,
        hash,
        profile,
        caldav,
        pbx,
    ] = columns;
    values.extend([email, username, first, last, status, hash].map(Value::from));
    values.extend([
        Value::from(change_required),
        created_at.into(),
        updated_at.into(),
    ]);
    values.extend([profile, caldav, pbx, searches].map(Value::from));
    Ok((values, role_users, role_keys))
}

/// A user waiting for the email of an import's invitation batch.
#[derive(Debug, Clone)]
pub struct Invitee {
    pub id: UserId,
    pub email: String,
    pub first_name: String,
    /// Imported with a password (activation) or without (invitation, a password to choose).
    pub has_password: bool,
}

/// Which of `ids` still wait for their activation or invitation email: pending confirmation and
/// holding no unused activation or invitation token (one resent meanwhile replaces the batch's).
pub async fn invitees(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    purposes: &[&str],
) -> Result<Vec<Invitee>> {
    let mut pending: Vec<(uuid::Uuid, String, String, Option<String>)> = Vec::new();
    if db.get_database_backend() == DbBackend::Postgres {
        // Driven by the ids, looked up by key first: right after an import the account's
        // statistics are stale, and given the account's condition up front the planner would
        // count on one user and walk all 100,000 for every chunk.
        const PENDING: &str = r#"WITH wanted AS MATERIALIZED (
                SELECT u.id, u.tenant_id, u.status, u.email, u.first_name, u.password_hash
                FROM unnest($1::uuid[]) AS i(id) JOIN users u ON u.id = i.id)
            SELECT w.id, w.email, w.first_name, w.password_hash FROM wanted w
            WHERE w.tenant_id = $2 AND w.status = $3"#;
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let values: [Value; 3] = [
            ids.into(),
            tenant_id.0.into(),
            UserStatus::PendingConfirmation.as_str().into(),
        ];
        for row in db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PENDING,
                values,
            ))
            .await?
        {
            pending.push((
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
                row.try_get_by_index(3)?,
            ));
        }
    } else {
        for chunk in ids.chunks(CHUNK) {
            pending.extend(
                user::Entity::find()
                    .select_only()
                    .column(user::Column::Id)
                    .column(user::Column::Email)
                    .column(user::Column::FirstName)
                    .column(user::Column::PasswordHash)
                    .filter(user::Column::TenantId.eq(tenant_id.0))
                    .filter(user::Column::Status.eq(UserStatus::PendingConfirmation.as_str()))
                    .filter(user::Column::Id.is_in(chunk.iter().map(|id| id.0)))
                    .into_tuple::<(uuid::Uuid, String, String, Option<String>)>()
                    .all(db)
                    .await?,
            );
        }
    }
    // One query for the chunk's unused tokens, not a correlated one per user: the planner, as
    // unsure of the new rows, scanned the account's tokens once per user.
    let mut holding = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let found: Vec<uuid::Uuid> = action_token::Entity::find()
            .select_only()
            .column(action_token::Column::UserId)
            .filter(action_token::Column::TenantId.eq(tenant_id.0))
            .filter(action_token::Column::UsedAt.is_null())
            .filter(action_token::Column::Purpose.is_in(purposes.iter().copied()))
            .filter(crate::store::one_of(
                db,
                action_token::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .into_tuple()
            .all(db)
            .await?;
        holding.extend(found);
    }
    Ok(pending
        .into_iter()
        .filter(|(id, ..)| !holding.contains(id))
        .map(|(id, email, first_name, password_hash)| Invitee {
            id: UserId(id),
            email,
            first_name,
            has_password: password_hash.is_some(),
        })
        .collect())
}
