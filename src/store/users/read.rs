//! Reading users: one by id or login, completed with their roles, tags, teams and ownership;
//! admin-grade holders; taken logins.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
    sea_query::{Expr, ExprTrait, Query, SimpleExpr, UnionType},
};

use crate::model::{
    DialerProfile, Email, Error, Login, Membership, PersonName, Result, RoleDef, TeamId, TeamKind,
    TeamRole, Tenant, TenantId, User, UserId, UserStatus, Username, builtin_role, builtin_roles,
};
use crate::store::{
    Conn,
    entity::{team, team_member, tenant, user, user_role, user_tag},
};

use super::*;

/// What a user row is completed with.
pub(super) struct Extras {
    roles: Vec<String>,
    is_admin: bool,
    tags: Vec<String>,
    memberships: Vec<Membership>,
}

pub(super) fn to_model(
    row: user::Model,
    extras: Extras,
    owner: Option<UserId>,
) -> Result<Credentials> {
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
pub(super) async fn roles_of_many(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, Vec<String>>> {
    let mut roles: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        let rows = user_role::Entity::find()
            .filter(user_role::Column::TenantId.eq(tenant_id.0))
            .filter(crate::store::one_of(
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

pub(super) async fn owner_of(db: &impl Conn, tenant_id: TenantId) -> Result<Option<UserId>> {
    Ok(tenant::Entity::find_by_id(tenant_id.0)
        .one(db)
        .await?
        .and_then(|row| row.owner_user_id)
        .map(UserId))
}

/// The roles, tags and team memberships of many users of one account.
#[derive(Default)]
pub(super) struct Related {
    roles: HashMap<uuid::Uuid, Vec<String>>,
    tags: HashMap<uuid::Uuid, Vec<String>>,
    memberships: HashMap<uuid::Uuid, Vec<Membership>>,
}

/// [`Related`] in one statement per chunk of users, a UNION ALL over the three tables (the
/// memberships joined to their teams): a cold read of a user, a page of users and a sign-in are
/// mostly round trips, and this saves two or three of each.
pub(super) async fn related_of_many(
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
            .and_where(crate::store::one_of(
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
            .and_where(crate::store::one_of(
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
            .and_where(crate::store::one_of(
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
pub(super) async fn admin_grade_keys(
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
        crate::store::roles::find_many(db, tenant_id, &custom)
            .await?
            .into_iter()
            .filter(|role| role.is_admin_grade())
            .map(|role| role.key),
    );
    Ok(admin)
}

/// Turns rows of one account into users, with a fixed number of queries whatever the number of rows.
pub(super) async fn complete_many(
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
pub(super) async fn complete_with_owner(
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

pub(super) async fn load_one(
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

/// Which of `ids` hold Admin or a custom role with admin permissions: the users that an admin's
/// actions leave alone.
pub async fn admin_grade_holders(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
) -> Result<HashSet<UserId>> {
    let keys = admin_grade_role_keys(db, tenant_id).await?;
    let mut holders = HashSet::new();
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        holders.extend(
            holders_of_keys(
                db,
                tenant_id,
                &keys,
                Some(crate::store::one_of(
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
pub(super) async fn admin_grade_role_keys(
    db: &impl Conn,
    tenant_id: TenantId,
) -> Result<Vec<String>> {
    let mut keys: Vec<String> = builtin_roles()
        .into_iter()
        .filter(RoleDef::is_admin_grade)
        .map(|role| role.key)
        .collect();
    keys.extend(
        crate::store::roles::list(db, tenant_id)
            .await?
            .into_iter()
            .filter(|role| role.is_admin_grade())
            .map(|role| role.key),
    );
    Ok(keys)
}

pub(super) async fn holders_of_keys(
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
pub(super) async fn taken(
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
