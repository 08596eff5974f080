//! Teams, departments, desks, skill groups and spaces, and their members.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use super::{
    Conn,
    entity::{team, team_member},
    users::CHUNK,
};
use crate::model::{
    Membership, Result, Team, TeamFilter, TeamId, TeamKind, TeamRole, TenantId, UserId,
};

async fn member_counts(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, u64>> {
    let rows: Vec<(uuid::Uuid, i64)> = team_member::Entity::find()
        .select_only()
        .column(team_member::Column::TeamId)
        .column_as(Expr::col(team_member::Column::UserId).count(), "members")
        .filter(team_member::Column::TenantId.eq(tenant_id.0))
        .filter(team_member::Column::TeamId.is_in(ids.iter().copied()))
        .group_by(team_member::Column::TeamId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, count)| (id, u64::try_from(count).unwrap_or(0)))
        .collect())
}

async fn to_models(
    db: &impl Conn,
    tenant_id: TenantId,
    rows: Vec<team::Model>,
) -> Result<Vec<Team>> {
    let ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let counts = if ids.is_empty() {
        HashMap::new()
    } else {
        member_counts(db, tenant_id, &ids).await?
    };
    rows.into_iter()
        .map(|row| {
            Ok(Team {
                id: TeamId(row.id),
                tenant_id: TenantId(row.tenant_id),
                kind: TeamKind::from_stored(&row.kind)?,
                member_count: counts.get(&row.id).copied().unwrap_or(0),
                name: row.name,
                description: row.description,
                space_id: row.space_id.map(TeamId),
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// Stores a new team.
pub async fn insert(db: &impl Conn, team: &Team) -> Result<()> {
    team::Entity::insert(team::ActiveModel {
        id: Set(team.id.0),
        tenant_id: Set(team.tenant_id.0),
        kind: Set(team.kind.as_str().to_owned()),
        name: Set(team.name.clone()),
        description: Set(team.description.clone()),
        space_id: Set(team.space_id.map(|id| id.0)),
        created_at: Set(team.created_at),
        updated_at: Set(team.updated_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Loads a team of the account.
pub async fn get(db: &impl Conn, tenant_id: TenantId, id: TeamId) -> Result<Option<Team>> {
    let rows = team::Entity::find()
        .filter(team::Column::TenantId.eq(tenant_id.0))
        .filter(team::Column::Id.eq(id.0))
        .all(db)
        .await?;
    Ok(to_models(db, tenant_id, rows).await?.pop())
}

/// Which of `ids` are teams of the account.
pub async fn existing(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[TeamId],
) -> Result<HashSet<TeamId>> {
    let found: Vec<uuid::Uuid> = team::Entity::find()
        .select_only()
        .column(team::Column::Id)
        .filter(team::Column::TenantId.eq(tenant_id.0))
        .filter(team::Column::Id.is_in(ids.iter().map(|id| id.0)))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().map(TeamId).collect())
}

/// One keyset page of teams (oldest first), plus whether more follow.
pub async fn list(
    db: &impl Conn,
    tenant_id: TenantId,
    filter: &TeamFilter,
    after: Option<TeamId>,
    limit: u64,
) -> Result<(Vec<Team>, bool)> {
    let mut condition = Condition::all().add(team::Column::TenantId.eq(tenant_id.0));
    if !filter.kinds.is_empty() {
        condition =
            condition.add(team::Column::Kind.is_in(filter.kinds.iter().map(|k| k.as_str())));
    }
    if let Some(query) = &filter.query {
        let pattern = format!(
            "%{}%",
            query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        condition = condition.add(
            Expr::expr(Func::lower(Expr::col(team::Column::Name)))
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if let Some(space) = filter.space_id {
        condition = condition.add(team::Column::SpaceId.eq(space.0));
    }
    if let Some(after) = after {
        condition = condition.add(team::Column::Id.gt(after.0));
    }
    let rows = team::Entity::find()
        .filter(condition)
        .order_by_asc(team::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > limit;
    let rows = rows.into_iter().take(limit as usize).collect();
    Ok((to_models(db, tenant_id, rows).await?, more))
}

/// Writes a team's name, description and space.
pub async fn update(db: &impl Conn, team: &Team) -> Result<()> {
    team::Entity::update_many()
        .col_expr(team::Column::Name, Expr::value(team.name.clone()))
        .col_expr(
            team::Column::Description,
            Expr::value(team.description.clone()),
        )
        .col_expr(
            team::Column::SpaceId,
            Expr::value(team.space_id.map(|id| id.0)),
        )
        .col_expr(team::Column::UpdatedAt, Expr::value(team.updated_at))
        .filter(team::Column::TenantId.eq(team.tenant_id.0))
        .filter(team::Column::Id.eq(team.id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a team and its memberships; teams in a deleted space leave it.
pub async fn delete(db: &impl Conn, tenant_id: TenantId, id: TeamId) -> Result<bool> {
    team::Entity::update_many()
        .col_expr(
            team::Column::SpaceId,
            Expr::value(Option::<uuid::Uuid>::None),
        )
        .filter(team::Column::TenantId.eq(tenant_id.0))
        .filter(team::Column::SpaceId.eq(id.0))
        .exec(db)
        .await?;
    let result = team::Entity::delete_many()
        .filter(team::Column::TenantId.eq(tenant_id.0))
        .filter(team::Column::Id.eq(id.0))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Which of `users` already belong to `team`.
pub async fn members_among(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
    users: &[UserId],
) -> Result<HashSet<UserId>> {
    let mut found = HashSet::new();
    for chunk in users.chunks(CHUNK) {
        let ids: Vec<uuid::Uuid> = team_member::Entity::find()
            .select_only()
            .column(team_member::Column::UserId)
            .filter(team_member::Column::TenantId.eq(tenant_id.0))
            .filter(team_member::Column::TeamId.eq(team.0))
            .filter(super::one_of(
                db,
                team_member::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(ids.into_iter().map(UserId));
    }
    Ok(found)
}

/// Adds users (not yet members) to a team with a role, in multi-row statements.
pub async fn add_members(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
    users: &[UserId],
    role: TeamRole,
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in users.chunks(2_000) {
        let rows = chunk.iter().map(|user| team_member::ActiveModel {
            tenant_id: Set(tenant_id.0),
            team_id: Set(team.0),
            user_id: Set(user.0),
            role: Set(role.as_str().to_owned()),
            added_at: Set(now),
        });
        team_member::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Removes users from a team; returns those who were members.
pub async fn remove_members(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
    users: &[UserId],
) -> Result<Vec<UserId>> {
    let mut removed = Vec::new();
    for chunk in users.chunks(CHUNK) {
        let rows = team_member::Entity::delete_many()
            .filter(team_member::Column::TenantId.eq(tenant_id.0))
            .filter(team_member::Column::TeamId.eq(team.0))
            .filter(super::one_of(
                db,
                team_member::Column::UserId,
                chunk.iter().map(|id| id.0),
            ))
            .exec_with_returning(db)
            .await?;
        removed.extend(rows.into_iter().map(|row| UserId(row.user_id)));
    }
    Ok(removed)
}

/// Removes every member of a team; returns who they were.
pub async fn remove_all_members(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
) -> Result<Vec<UserId>> {
    let rows = team_member::Entity::delete_many()
        .filter(team_member::Column::TenantId.eq(tenant_id.0))
        .filter(team_member::Column::TeamId.eq(team.0))
        .exec_with_returning(db)
        .await?;
    Ok(rows.into_iter().map(|row| UserId(row.user_id)).collect())
}

/// Changes a member's role; false when the user is not a member.
pub async fn set_member_role(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
    user: UserId,
    role: TeamRole,
) -> Result<bool> {
    let result = team_member::Entity::update_many()
        .col_expr(team_member::Column::Role, Expr::value(role.as_str()))
        .filter(team_member::Column::TenantId.eq(tenant_id.0))
        .filter(team_member::Column::TeamId.eq(team.0))
        .filter(team_member::Column::UserId.eq(user.0))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// One keyset page of a team's members (by user id), with their roles.
pub async fn members(
    db: &impl Conn,
    tenant_id: TenantId,
    team: TeamId,
    after: Option<UserId>,
    limit: u64,
) -> Result<(Vec<(UserId, TeamRole, DateTime<Utc>)>, bool)> {
    let mut query = team_member::Entity::find()
        .filter(team_member::Column::TenantId.eq(tenant_id.0))
        .filter(team_member::Column::TeamId.eq(team.0));
    if let Some(after) = after {
        query = query.filter(team_member::Column::UserId.gt(after.0));
    }
    let rows = query
        .order_by_asc(team_member::Column::UserId)
        .limit(limit + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > limit;
    let members = rows
        .into_iter()
        .take(limit as usize)
        .map(|row| {
            Ok((
                UserId(row.user_id),
                TeamRole::from_stored(&row.role)?,
                row.added_at,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((members, more))
}

/// The memberships of many users of one account.
pub async fn memberships_of(
    db: &impl Conn,
    tenant_id: TenantId,
    users: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, Vec<Membership>>> {
    let mut memberships: HashMap<uuid::Uuid, Vec<Membership>> = HashMap::new();
    for chunk in users.chunks(CHUNK) {
        let rows = team_member::Entity::find()
            .filter(team_member::Column::TenantId.eq(tenant_id.0))
            .filter(super::one_of(
                db,
                team_member::Column::UserId,
                chunk.iter().copied(),
            ))
            .all(db)
            .await?;
        if rows.is_empty() {
            continue;
        }
        let team_ids: HashSet<uuid::Uuid> = rows.iter().map(|row| row.team_id).collect();
        let teams: HashMap<uuid::Uuid, team::Model> = team::Entity::find()
            .filter(team::Column::TenantId.eq(tenant_id.0))
            .filter(team::Column::Id.is_in(team_ids))
            .all(db)
            .await?
            .into_iter()
            .map(|team| (team.id, team))
            .collect();
        for row in rows {
            let Some(team) = teams.get(&row.team_id) else {
                continue;
            };
            memberships
                .entry(row.user_id)
                .or_default()
                .push(Membership {
                    team_id: TeamId(row.team_id),
                    team_name: team.name.clone(),
                    team_kind: TeamKind::from_stored(&team.kind)?,
                    user_id: UserId(row.user_id),
                    role: TeamRole::from_stored(&row.role)?,
                    added_at: row.added_at,
                });
        }
    }
    for list in memberships.values_mut() {
        list.sort_by(|a, b| a.team_name.cmp(&b.team_name));
    }
    Ok(memberships)
}
