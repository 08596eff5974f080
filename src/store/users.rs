//! Users, their account roles and their Dialer profiles.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, SqlErr, Statement, Value,
    sea_query::{Alias, Expr, ExprTrait, Func, LikeExpr, OnConflict, Query, SimpleExpr, UnionType},
};

use super::{
    Conn,
    entity::{action_token, role_change, team, team_member, tenant, user, user_role, user_tag},
};
use crate::model::{
    DialerProfile, Email, Error, Login, MatchMode, Membership, PersonName, ProfileSecrets, Result,
    RoleDef, SEALED_PREFIX, SealedSecrets, Secret, TeamId, TeamKind, TeamRole, Tenant, TenantId,
    User, UserCursor, UserFilter, UserId, UserOrder, UserPageRequest, UserStatus, Username,
    builtin_role, builtin_roles,
};

/// Largest number of ids bound in one statement (well under SQLite's 32,766 parameters).
pub const CHUNK: usize = 5_000;

/// A user together with what only authentication flows may see.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: Option<String>,
    /// Bumped to revoke every access token of the user.
    pub token_generation: i64,
}

/// A user to insert, with their secrets.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub user: User,
    pub password_hash: Option<String>,
    pub secrets: SealedSecrets,
}

/// What a user row is completed with.
struct Extras {
    roles: Vec<String>,
    is_admin: bool,
    tags: Vec<String>,
    memberships: Vec<Membership>,
}

fn to_model(row: user::Model, extras: Extras, owner: Option<UserId>) -> Result<Credentials> {
    let dialer_profile = match row.dialer_profile.as_deref() {
        Some(json) => Some(
            serde_json::from_str::<DialerProfile>(json)
                .map_err(|err| Error::internal(format!("stored dialer profile: {err}")))?,
        ),
        None => None,
    };
    let user = User {
        id: UserId(row.id),
        tenant_id: TenantId(row.tenant_id),
        email: Email::parse("email", &row.email)?,
        email_verified: row.email_verified_at.is_some(),
        pending_email: row
            .pending_email
            .as_deref()
            .map(|email| Email::parse("pending_email", email))
            .transpose()?,
        username: Username::parse("username", &row.username)?,
        first_name: PersonName::parse("first_name", &row.first_name)?,
        last_name: PersonName::parse("last_name", &row.last_name)?,
        status: UserStatus::from_stored(&row.status)?,
        roles: extras.roles,
        is_admin: extras.is_admin,
        tags: extras.tags,
        memberships: extras.memberships,
        is_owner: owner == Some(UserId(row.id)),
        password_change_required: row.password_change_required,
        dialer_profile,
        caldav_token_set: row.caldav_token.is_some(),
        pbx_password_set: row.pbx_password.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_login_at: row.last_login_at,
    };
    Ok(Credentials {
        user,
        password_hash: row.password_hash,
        token_generation: row.token_generation,
    })
}

/// Roles of many users of one account, in one query per chunk.
async fn roles_of_many(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, Vec<String>>> {
    let mut roles: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        let rows = user_role::Entity::find()
            .filter(user_role::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                user_role::Column::UserId,
                chunk.iter().copied(),
            ))
            .all(db)
            .await?;
        for row in rows {
            roles.entry(row.user_id).or_default().push(row.role);
        }
    }
    for list in roles.values_mut() {
        list.sort();
    }
    Ok(roles)
}

/// Role keys of many users of one account.
pub async fn roles_of_users(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
) -> Result<HashMap<UserId, Vec<String>>> {
    let raw: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    Ok(roles_of_many(db, tenant_id, &raw)
        .await?
        .into_iter()
        .map(|(id, roles)| (UserId(id), roles))
        .collect())
}

async fn owner_of(db: &impl Conn, tenant_id: TenantId) -> Result<Option<UserId>> {
    Ok(tenant::Entity::find_by_id(tenant_id.0)
        .one(db)
        .await?
        .and_then(|row| row.owner_user_id)
        .map(UserId))
}

/// The roles, tags and team memberships of many users of one account.
#[derive(Default)]
struct Related {
    roles: HashMap<uuid::Uuid, Vec<String>>,
    tags: HashMap<uuid::Uuid, Vec<String>>,
    memberships: HashMap<uuid::Uuid, Vec<Membership>>,
}

/// [`Related`] in one statement per chunk of users, a UNION ALL over the three tables (the
/// memberships joined to their teams): a cold read of a user, a page of users and a sign-in are
/// mostly round trips, and this saves two or three of each.
async fn related_of_many(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[uuid::Uuid],
) -> Result<Related> {
    // Typed NULLs: PostgreSQL types each column of a UNION pairwise, and two untyped NULLs
    // would make it text before it meets the memberships' uuid and timestamp.
    let null = |sql_type: &str| Expr::cust(format!("CAST(NULL AS {sql_type})"));
    let mut related = Related::default();
    for chunk in ids.chunks(CHUNK) {
        let roles = Query::select()
            .expr_as(
                Expr::col((user_role::Entity, user_role::Column::UserId)),
                "user_id",
            )
            .expr_as(Expr::cust("'role'"), "kind")
            .expr_as(
                Expr::col((user_role::Entity, user_role::Column::Role)),
                "name",
            )
            .expr_as(null("uuid"), "team_id")
            .expr_as(null("text"), "team_name")
            .expr_as(null("text"), "team_kind")
            .expr_as(null("timestamptz"), "added_at")
            .from(user_role::Entity)
            .and_where(Expr::col((user_role::Entity, user_role::Column::TenantId)).eq(tenant_id.0))
            .and_where(super::one_of(
                db,
                user_role::Column::UserId,
                chunk.iter().copied(),
            ))
            .to_owned();
        let tags = Query::select()
            .expr(Expr::col((user_tag::Entity, user_tag::Column::UserId)))
            .expr(Expr::cust("'tag'"))
            .expr(Expr::col((user_tag::Entity, user_tag::Column::Tag)))
            .exprs([
                null("uuid"),
                null("text"),
                null("text"),
                null("timestamptz"),
            ])
            .from(user_tag::Entity)
            .and_where(Expr::col((user_tag::Entity, user_tag::Column::TenantId)).eq(tenant_id.0))
            .and_where(super::one_of(
                db,
                user_tag::Column::UserId,
                chunk.iter().copied(),
            ))
            .to_owned();
        let memberships = Query::select()
            .expr(Expr::col((
                team_member::Entity,
                team_member::Column::UserId,
            )))
            .expr(Expr::cust("'team'"))
            .expr(Expr::col((team_member::Entity, team_member::Column::Role)))
            .expr(Expr::col((
                team_member::Entity,
                team_member::Column::TeamId,
            )))
            .expr(Expr::col((team::Entity, team::Column::Name)))
            .expr(Expr::col((team::Entity, team::Column::Kind)))
            .expr(Expr::col((
                team_member::Entity,
                team_member::Column::AddedAt,
            )))
            .from(team_member::Entity)
            .inner_join(
                team::Entity,
                Expr::col((team::Entity, team::Column::TenantId))
                    .equals((team_member::Entity, team_member::Column::TenantId))
                    .and(
                        Expr::col((team::Entity, team::Column::Id))
                            .equals((team_member::Entity, team_member::Column::TeamId)),
                    ),
            )
            .and_where(
                Expr::col((team_member::Entity, team_member::Column::TenantId)).eq(tenant_id.0),
            )
            .and_where(super::one_of(
                db,
                team_member::Column::UserId,
                chunk.iter().copied(),
            ))
            .to_owned();
        let statement = roles
            .to_owned()
            .union(UnionType::All, tags)
            .union(UnionType::All, memberships)
            .to_owned();
        for row in db.query_all(&statement).await? {
            let user_id: uuid::Uuid = row.try_get("", "user_id")?;
            let kind: String = row.try_get("", "kind")?;
            let name: String = row.try_get("", "name")?;
            match kind.as_str() {
                "role" => related.roles.entry(user_id).or_default().push(name),
                "tag" => related.tags.entry(user_id).or_default().push(name),
                _ => {
                    let team_id: uuid::Uuid = row.try_get("", "team_id")?;
                    let team_name: String = row.try_get("", "team_name")?;
                    let team_kind: String = row.try_get("", "team_kind")?;
                    let added_at: DateTime<Utc> = row.try_get("", "added_at")?;
                    related
                        .memberships
                        .entry(user_id)
                        .or_default()
                        .push(Membership {
                            team_id: TeamId(team_id),
                            team_name,
                            team_kind: TeamKind::from_stored(&team_kind)?,
                            user_id: UserId(user_id),
                            role: TeamRole::from_stored(&name)?,
                            added_at,
                        });
                }
            }
        }
    }
    for list in related.roles.values_mut().chain(related.tags.values_mut()) {
        list.sort();
    }
    for list in related.memberships.values_mut() {
        list.sort_by(|a, b| a.team_name.cmp(&b.team_name));
    }
    Ok(related)
}

/// Role keys that make their holders admins: Admin, and custom roles with admin permissions.
async fn admin_grade_keys(
    db: &impl Conn,
    tenant_id: TenantId,
    keys: &HashSet<&String>,
) -> Result<HashSet<String>> {
    let custom: Vec<String> = keys
        .iter()
        .filter(|key| builtin_role(key).is_none())
        .map(|key| (*key).clone())
        .collect();
    let mut admin: HashSet<String> = keys
        .iter()
        .filter(|key| builtin_role(key).is_some_and(|role| role.is_admin_grade()))
        .map(|key| (*key).clone())
        .collect();
    admin.extend(
        super::roles::find_many(db, tenant_id, &custom)
            .await?
            .into_iter()
            .filter(|role| role.is_admin_grade())
            .map(|role| role.key),
    );
    Ok(admin)
}

/// Turns rows of one account into users, with a fixed number of queries whatever the number of rows.
async fn complete_many(
    db: &impl Conn,
    tenant_id: TenantId,
    rows: Vec<user::Model>,
) -> Result<Vec<Credentials>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let owner = owner_of(db, tenant_id).await?;
    complete_with_owner(db, tenant_id, rows, owner).await
}

/// [`complete_many`] when the account's owner is known already.
async fn complete_with_owner(
    db: &impl Conn,
    tenant_id: TenantId,
    rows: Vec<user::Model>,
    owner: Option<UserId>,
) -> Result<Vec<Credentials>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let Related {
        mut roles,
        mut tags,
        mut memberships,
    } = related_of_many(db, tenant_id, &ids).await?;
    let keys: HashSet<&String> = roles.values().flatten().collect();
    let admin_keys = admin_grade_keys(db, tenant_id, &keys).await?;
    rows.into_iter()
        .map(|row| {
            let user_roles = roles.remove(&row.id).unwrap_or_default();
            let extras = Extras {
                is_admin: user_roles.iter().any(|role| admin_keys.contains(role)),
                roles: user_roles,
                tags: tags.remove(&row.id).unwrap_or_default(),
                memberships: memberships.remove(&row.id).unwrap_or_default(),
            };
            to_model(row, extras, owner)
        })
        .collect()
}

/// Replaces a user's tags.
pub async fn set_tags(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    tags: &[String],
) -> Result<()> {
    user_tag::Entity::delete_many()
        .filter(user_tag::Column::TenantId.eq(tenant_id.0))
        .filter(user_tag::Column::UserId.eq(user_id.0))
        .exec(db)
        .await?;
    add_tags(db, tenant_id, &[user_id], tags).await
}

/// Adds tags to many users (skipping those they have).
pub async fn add_tags(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    tags: &[String],
) -> Result<()> {
    add_to_users(db, "user_tags", "tag", tenant_id, ids, tags).await
}

/// Gives each of the users each of `values` in `table`, a table keyed by (tenant, user, value)
/// (their roles or tags), passing over the pairs already there: one `INSERT ... ON CONFLICT DO
/// NOTHING` per chunk, which the primary key checks as it inserts (no read first).
async fn add_to_users(
    db: &impl Conn,
    table: &str,
    column: &str,
    tenant_id: TenantId,
    ids: &[UserId],
    values: &[String],
) -> Result<()> {
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
        for chunk in ids.chunks(super::ids_per_statement(db)) {
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

/// Removes tags from many users.
pub async fn remove_tags(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    tags: &[String],
) -> Result<()> {
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        user_tag::Entity::delete_many()
            .filter(user_tag::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                user_tag::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .filter(user_tag::Column::Tag.is_in(tags.iter().cloned()))
            .exec(db)
            .await?;
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
        for chunk in ids.chunks(super::ids_per_statement(db)) {
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

/// Role keys held by users of the account (any of `keys`), for re-granting after a role changes.
pub async fn holders_of_any(
    db: &impl Conn,
    tenant_id: TenantId,
    keys: &[String],
) -> Result<Vec<UserId>> {
    let ids: Vec<uuid::Uuid> = user_role::Entity::find()
        .select_only()
        .column(user_role::Column::UserId)
        .distinct()
        .filter(user_role::Column::TenantId.eq(tenant_id.0))
        .filter(user_role::Column::Role.is_in(keys.iter().cloned()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().map(UserId).collect())
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

fn profile_json(user: &User) -> Result<Option<String>> {
    user.dialer_profile
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(Error::internal)
}

fn active_model(new: &NewUser) -> Result<user::ActiveModel> {
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
    })
}

/// Inserts a user and their roles.
pub async fn insert(db: &impl Conn, new: &NewUser) -> Result<()> {
    user::Entity::insert(active_model(new)?)
        .exec_without_returning(db)
        .await?;
    let user = &new.user;
    set_roles(db, user.tenant_id, user.id, &user.roles).await?;
    if !user.tags.is_empty() {
        add_tags(db, user.tenant_id, &[user.id], &user.tags).await?;
    }
    Ok(())
}

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
async fn insert_many_postgres(
    db: &impl Conn,
    tenant_id: TenantId,
    users: &[NewUser],
) -> Result<HashSet<UserId>> {
    // Arrays carry no NULL here: an absent text is '' and NULLIF turns it back. A column absent
    // from every row of a chunk travels as an empty array: `unnest` pads the shorter arrays with
    // NULLs, so 20,000 empty strings need not be built, sent and parsed.
    const USERS: &str = r#"INSERT INTO users (id, tenant_id, email, username, first_name,
        last_name, status, password_hash, password_change_required, created_at, updated_at,
        dialer_profile, caldav_token, pbx_password, token_generation)
        SELECT u.id, $1, u.email, u.username, u.first_name, u.last_name, u.status,
            NULLIF(u.password_hash, ''), u.change_required, u.created_at, u.updated_at,
            NULLIF(u.profile, ''), NULLIF(u.caldav, ''), NULLIF(u.pbx, ''), 0
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::bool[], $10::timestamptz[], $11::timestamptz[], $12::text[],
            $13::text[], $14::text[])
            AS u(id, email, username, first_name, last_name, status, password_hash,
                change_required, created_at, updated_at, profile, caldav, pbx)"#;
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
                 role) SELECT $1, r.user_id, r.role FROM unnest($15::uuid[], $16::text[]) \
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
fn unnest_arguments(
    tenant_id: TenantId,
    chunk: &[NewUser],
) -> Result<(Vec<Value>, Vec<uuid::Uuid>, Vec<String>)> {
    let mut columns: [Vec<String>; 9] = Default::default();
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
    values.extend([profile, caldav, pbx].map(Value::from));
    Ok((values, role_users, role_keys))
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

/// Adds `roles` to many users (set-based, one statement per chunk and role).
pub async fn add_roles(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    roles: &[String],
) -> Result<()> {
    add_to_users(db, "user_roles", "role", tenant_id, ids, roles).await
}

/// Removes `roles` from many users.
pub async fn remove_roles(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    roles: &[String],
) -> Result<()> {
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        user_role::Entity::delete_many()
            .filter(user_role::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                user_role::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .filter(user_role::Column::Role.is_in(roles.iter().cloned()))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Loads a user of the account.
pub async fn get(db: &impl Conn, tenant_id: TenantId, user_id: UserId) -> Result<Option<User>> {
    Ok(get_credentials(db, tenant_id, user_id)
        .await?
        .map(|found| found.user))
}

/// Loads a user of the account inside a write transaction and holds their row until it ends
/// (`FOR UPDATE` on PostgreSQL; SQLite's write transaction already excludes other writers), so
/// that a lifecycle verb checks and changes the same state: of concurrent calls on one user,
/// the later ones see what the first one left.
pub async fn get_for_update(
    tx: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<Credentials>> {
    load_one(tx, tenant_id, user_id, true).await
}

/// Loads a user of the account with their password hash.
pub async fn get_credentials(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<Credentials>> {
    load_one(db, tenant_id, user_id, false).await
}

async fn load_one(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    for_update: bool,
) -> Result<Option<Credentials>> {
    let mut query = user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id.0))
        .filter(user::Column::Id.eq(user_id.0));
    if for_update {
        query = query.lock_exclusive();
    }
    match query.one(db).await? {
        Some(row) => Ok(complete_many(db, tenant_id, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// Finds the user a login names: an email match wins over a username match.
pub async fn find_by_login(
    db: &impl Conn,
    tenant: &Tenant,
    login: &Login,
) -> Result<Option<Credentials>> {
    let tenant_id = tenant.id;
    let mut rows = user::Entity::find()
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
        .unwrap_or(0);
    if rows.is_empty() {
        return Ok(None);
    }
    let row = rows.swap_remove(chosen);
    Ok(
        complete_with_owner(db, tenant_id, vec![row], tenant.owner_user_id)
            .await?
            .pop(),
    )
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The SQL condition of a filter, tenant first.
fn filter_condition(tenant_id: TenantId, filter: &UserFilter) -> Condition {
    let mut condition = Condition::all().add(user::Column::TenantId.eq(tenant_id.0));
    if let Some(query) = filter.query.as_deref().filter(|q| !q.is_empty()) {
        let pattern = match filter.match_mode {
            MatchMode::Contains => format!("%{}%", escape_like(query)),
            MatchMode::Prefix => format!("{}%", escape_like(query)),
            MatchMode::Exact => escape_like(query),
        };
        let mut any = Condition::any();
        for column in [
            user::Column::FirstName,
            user::Column::LastName,
            user::Column::Email,
            user::Column::Username,
        ] {
            any = any.add(
                Expr::expr(Func::lower(Expr::col(column)))
                    .like(LikeExpr::new(pattern.clone()).escape('\\')),
            );
        }
        condition = condition.add(any);
    }
    if !filter.statuses.is_empty() {
        condition =
            condition.add(user::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())));
    }
    if !filter.roles.is_empty() {
        let holders = Query::select()
            .column(user_role::Column::UserId)
            .from(user_role::Entity)
            .and_where(user_role::Column::TenantId.eq(tenant_id.0))
            .and_where(user_role::Column::Role.is_in(filter.roles.iter().cloned()))
            .to_owned();
        condition = condition.add(user::Column::Id.in_subquery(holders));
    }
    if !filter.team_ids.is_empty() {
        let members = Query::select()
            .column(team_member::Column::UserId)
            .from(team_member::Entity)
            .and_where(team_member::Column::TenantId.eq(tenant_id.0))
            .and_where(team_member::Column::TeamId.is_in(filter.team_ids.iter().map(|id| id.0)))
            .to_owned();
        condition = condition.add(user::Column::Id.in_subquery(members));
    }
    if !filter.tags.is_empty() {
        let tagged = Query::select()
            .column(user_tag::Column::UserId)
            .from(user_tag::Entity)
            .and_where(user_tag::Column::TenantId.eq(tenant_id.0))
            .and_where(user_tag::Column::Tag.is_in(filter.tags.iter().cloned()))
            .to_owned();
        condition = condition.add(user::Column::Id.in_subquery(tagged));
    }
    if let Some(ids) = &filter.ids {
        condition = condition.add(user::Column::Id.is_in(ids.iter().map(|id| id.0)));
    }
    condition
}

fn order_column(order: UserOrder) -> Option<user::Column> {
    match order {
        UserOrder::Created => None,
        UserOrder::Email => Some(user::Column::Email),
        UserOrder::Username => Some(user::Column::Username),
        UserOrder::LastName => Some(user::Column::LastName),
    }
}

/// One keyset page of users, plus whether more follow.
pub async fn list(
    db: &impl Conn,
    tenant_id: TenantId,
    page: &UserPageRequest,
) -> Result<(Vec<User>, bool)> {
    let mut condition = filter_condition(tenant_id, &page.filter);
    let column = order_column(page.order);
    if let Some(UserCursor { value, id }) = &page.after {
        // (sort value, id) strictly after the cursor, in the requested direction.
        let after = match (column, page.descending) {
            (None, false) => Condition::all().add(user::Column::Id.gt(id.0)),
            (None, true) => Condition::all().add(user::Column::Id.lt(id.0)),
            (Some(column), false) => Condition::any().add(column.gt(value.as_str())).add(
                Condition::all()
                    .add(column.eq(value.as_str()))
                    .add(user::Column::Id.gt(id.0)),
            ),
            (Some(column), true) => Condition::any().add(column.lt(value.as_str())).add(
                Condition::all()
                    .add(column.eq(value.as_str()))
                    .add(user::Column::Id.lt(id.0)),
            ),
        };
        condition = condition.add(after);
    }
    let mut query = user::Entity::find().filter(condition);
    let direction = if page.descending {
        sea_orm::Order::Desc
    } else {
        sea_orm::Order::Asc
    };
    if let Some(column) = column {
        query = query.order_by(column, direction.clone());
    }
    let rows = query
        .order_by(user::Column::Id, direction)
        .limit(page.page_size + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > page.page_size;
    let rows: Vec<user::Model> = rows.into_iter().take(page.page_size as usize).collect();
    let users = complete_many(db, tenant_id, rows)
        .await?
        .into_iter()
        .map(|c| c.user)
        .collect();
    Ok((users, more))
}

/// How many users match a filter.
pub async fn count(db: &impl Conn, tenant_id: TenantId, filter: &UserFilter) -> Result<u64> {
    Ok(user::Entity::find()
        .filter(filter_condition(tenant_id, filter))
        .count(db)
        .await?)
}

/// Ids and statuses of the users matching a filter, oldest first; for mass actions.
pub async fn select_ids(
    db: &impl Conn,
    tenant_id: TenantId,
    filter: &UserFilter,
) -> Result<Vec<UserId>> {
    // Ids only: the account's `(tenant_id, id)` index answers without reading the users' rows
    // (selecting 100,008 users by a role took 0.25 s so, 0.74 s with their status).
    let rows: Vec<uuid::Uuid> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(filter_condition(tenant_id, filter))
        .order_by_asc(user::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(UserId).collect())
}

/// How many of `ids` are in one of `statuses` (what a mass status change would change).
pub async fn count_in_statuses(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    statuses: &[UserStatus],
) -> Result<u64> {
    let mut count = 0;
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        count += user::Entity::find()
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .filter(user::Column::Status.is_in(statuses.iter().map(|s| s.as_str())))
            .count(db)
            .await?;
    }
    Ok(count)
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
            .filter(super::one_of(
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

/// Which of `ids` hold Admin or a custom role with admin permissions: the users that an admin's
/// actions leave alone.
pub async fn admin_grade_holders(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
) -> Result<HashSet<UserId>> {
    let keys = admin_grade_role_keys(db, tenant_id).await?;
    let mut holders = HashSet::new();
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        holders.extend(
            holders_of_keys(
                db,
                tenant_id,
                &keys,
                Some(super::one_of(
                    db,
                    user_role::Column::UserId,
                    chunk.iter().map(|id| id.0),
                )),
            )
            .await?,
        );
    }
    Ok(holders)
}

/// Every user of the account who holds an admin-grade role (an account has few of them).
pub async fn admin_grade_holders_in_account(
    db: &impl Conn,
    tenant_id: TenantId,
) -> Result<HashSet<UserId>> {
    let keys = admin_grade_role_keys(db, tenant_id).await?;
    holders_of_keys(db, tenant_id, &keys, None).await
}

/// The keys of the built-in and custom roles of the account that carry admin permissions.
async fn admin_grade_role_keys(db: &impl Conn, tenant_id: TenantId) -> Result<Vec<String>> {
    let mut keys: Vec<String> = builtin_roles()
        .into_iter()
        .filter(RoleDef::is_admin_grade)
        .map(|role| role.key)
        .collect();
    keys.extend(
        super::roles::list(db, tenant_id)
            .await?
            .into_iter()
            .filter(|role| role.is_admin_grade())
            .map(|role| role.key),
    );
    Ok(keys)
}

async fn holders_of_keys(
    db: &impl Conn,
    tenant_id: TenantId,
    keys: &[String],
    among: Option<SimpleExpr>,
) -> Result<HashSet<UserId>> {
    let mut query = user_role::Entity::find()
        .select_only()
        .column(user_role::Column::UserId)
        .distinct()
        .filter(user_role::Column::TenantId.eq(tenant_id.0))
        .filter(user_role::Column::Role.is_in(keys.iter().map(String::as_str)));
    if let Some(among) = among {
        query = query.filter(among);
    }
    let found: Vec<uuid::Uuid> = query.into_tuple().all(db).await?;
    Ok(found.into_iter().map(UserId).collect())
}

/// Which of `emails` and `usernames` are taken in the account.
pub async fn taken_logins(
    db: &impl Conn,
    tenant_id: TenantId,
    emails: &[String],
    usernames: &[String],
) -> Result<(HashSet<String>, HashSet<String>)> {
    Ok((
        taken(db, tenant_id, user::Column::Email, emails).await?,
        taken(db, tenant_id, user::Column::Username, usernames).await?,
    ))
}

/// Which of `values` of a login column are taken in the account.
async fn taken(
    db: &impl Conn,
    tenant_id: TenantId,
    column: user::Column,
    values: &[String],
) -> Result<HashSet<String>> {
    let mut taken = HashSet::new();
    if values.is_empty() {
        return Ok(taken);
    }
    if db.get_database_backend() == DbBackend::Postgres {
        // The whole list in one statement, joined as a table: the planner probes the unique
        // index once per value (or hashes the list), whatever it believes of the table's size.
        let name = sea_orm::IdenStatic::as_str(&column);
        let sql = format!(
            "SELECT u.{name} FROM unnest($2::text[]) AS v(login) \
             JOIN users u ON u.tenant_id = $1 AND u.{name} = v.login"
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [tenant_id.0.into(), values.to_vec().into()],
            ))
            .await?;
        for row in rows {
            taken.insert(row.try_get_by_index::<String>(0)?);
        }
        return Ok(taken);
    }
    for chunk in values.chunks(CHUNK) {
        let found: Vec<String> = user::Entity::find()
            .select_only()
            .column(column)
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(column.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(db)
            .await?;
        taken.extend(found);
    }
    Ok(taken)
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

/// A user whose Dialer secrets (some of them) are stored in clear, by a version before sealing.
#[derive(Debug)]
pub struct ClearSecrets {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// Only the values in clear; a sealed one is `None`.
    pub secrets: ProfileSecrets,
}

/// The users with a Dialer secret in clear (not [`SEALED_PREFIX`], `v1.`), through the partial
/// index `users_clear_secrets` (migration 000017), whose predicate this query repeats.
pub async fn clear_profile_secrets(db: &impl Conn) -> Result<Vec<ClearSecrets>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT tenant_id, id, caldav_token, pbx_password FROM users \
             WHERE caldav_token NOT LIKE 'v1.%' OR pbx_password NOT LIKE 'v1.%'",
        ))
        .await?;
    let in_clear = |value: Option<String>| {
        value
            .filter(|value| !value.starts_with(SEALED_PREFIX))
            .map(Secret::new)
    };
    rows.into_iter()
        .map(|row| {
            Ok(ClearSecrets {
                tenant_id: TenantId(row.try_get_by_index(0)?),
                user_id: UserId(row.try_get_by_index(1)?),
                secrets: ProfileSecrets {
                    caldav_token: in_clear(row.try_get_by_index(2)?),
                    pbx_password: in_clear(row.try_get_by_index(3)?),
                },
            })
        })
        .collect()
}

/// Replaces a user's clear Dialer secrets by their sealed form, each only if it still holds the
/// clear value (one changed meanwhile is left alone); returns the values replaced.
pub async fn replace_clear_profile_secrets(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    clear: &ProfileSecrets,
    sealed: &SealedSecrets,
) -> Result<u64> {
    let mut replaced = 0;
    for (column, clear, sealed) in [
        (
            user::Column::CaldavToken,
            &clear.caldav_token,
            &sealed.caldav_token,
        ),
        (
            user::Column::PbxPassword,
            &clear.pbx_password,
            &sealed.pbx_password,
        ),
    ] {
        let (Some(clear), Some(sealed)) = (clear, sealed) else {
            continue;
        };
        replaced += update_one(tenant_id, user_id)
            .col_expr(column, Expr::value(sealed.as_str()))
            .filter(column.eq(clear.expose()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(replaced)
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
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        deleted += user::Entity::delete_many()
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
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
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        changed += user::Entity::update_many()
            .col_expr(user::Column::Status, Expr::value(status.as_str()))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
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
) -> Result<u64> {
    let status = Expr::case(
        Expr::col(user::Column::EmailVerifiedAt).is_null(),
        UserStatus::PendingConfirmation.as_str(),
    )
    .finally(UserStatus::Active.as_str());
    let mut changed = 0;
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        changed += user::Entity::update_many()
            .col_expr(user::Column::Status, status.clone().into())
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .filter(
                user::Column::Status
                    .is_in([UserStatus::Inactive.as_str(), UserStatus::Locked.as_str()]),
            )
            .exec(db)
            .await?
            .rows_affected;
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
    update_one(tenant_id, user_id)
        .col_expr(
            user::Column::Email,
            Expr::cust("COALESCE(pending_email, email)"),
        )
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
fn update_one(tenant_id: TenantId, user_id: UserId) -> sea_orm::UpdateMany<user::Entity> {
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

/// Deactivates the users among `ids` not inactive already and revokes every access token they
/// hold, in one statement per chunk: the status change and the token-generation bump are one row
/// version, which PostgreSQL writes in place (see the `mass_updates` migration). Returns each
/// deactivated user's new token generation.
///
/// `tokens_valid_after` stays as it is (it is indexed, which would stop the in-place write): the
/// caller ends the users' sessions in the same transaction, and every access token belongs to a
/// session, so the sessions' revocation is what a restart reloads.
pub async fn deactivate(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<Vec<(UserId, i64)>> {
    bump_generations(
        db,
        tenant_id,
        ids,
        [
            (
                user::Column::Status,
                Expr::value(UserStatus::Inactive.as_str()),
            ),
            (user::Column::UpdatedAt, Expr::value(now)),
        ],
        Some(user::Column::Status.ne(UserStatus::Inactive.as_str())),
    )
    .await
}

/// Bumps the token generation of the users among `ids` that meet `only` and sets `also` on
/// their rows, in one `UPDATE ... RETURNING` per chunk; returns each user's new generation.
async fn bump_generations<const N: usize>(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    also: [(user::Column, SimpleExpr); N],
    only: Option<SimpleExpr>,
) -> Result<Vec<(UserId, i64)>> {
    let mut bumped = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::ids_per_statement(db)) {
        let statement = Query::update()
            .table(user::Entity)
            .value(
                user::Column::TokenGeneration,
                Expr::col(user::Column::TokenGeneration).add(1),
            )
            .values(also.clone())
            .and_where(user::Column::TenantId.eq(tenant_id.0))
            .and_where(super::one_of(
                db,
                user::Column::Id,
                chunk.iter().map(|id| id.0),
            ))
            .and_where_option(only.clone())
            .returning(
                Query::returning().columns([user::Column::Id, user::Column::TokenGeneration]),
            )
            .to_owned();
        for row in db.query_all(&statement).await? {
            let id: uuid::Uuid = row.try_get("", "id")?;
            let generation: i64 = row.try_get("", "token_generation")?;
            bumped.push((UserId(id), generation));
        }
    }
    Ok(bumped)
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

/// Revokes every access token of the users by bumping their token generation; returns each
/// user's new generation, for the in-memory revocation list.
pub async fn bump_token_generation(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<Vec<(UserId, i64)>> {
    bump_generations(
        db,
        tenant_id,
        ids,
        [(user::Column::TokensValidAfter, Expr::value(now))],
        None,
    )
    .await
}

/// Users whose tokens were revoked after `since`, with their current generation, to seed the
/// revocation list at start.
pub async fn tokens_revoked_since(
    db: &impl Conn,
    since: DateTime<Utc>,
) -> Result<Vec<(UserId, i64, DateTime<Utc>)>> {
    let rows: Vec<(uuid::Uuid, i64, Option<DateTime<Utc>>)> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::TokenGeneration)
        .column(user::Column::TokensValidAfter)
        .filter(user::Column::TokensValidAfter.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, generation, at)| at.map(|at| (UserId(id), generation, at)))
        .collect())
}
