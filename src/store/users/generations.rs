//! Token generations: raising them revokes a user's access tokens (deactivation included).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait, Query, SimpleExpr},
};

use crate::model::{Result, TenantId, UserId, UserStatus};
use crate::store::{Conn, entity::user};

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
pub(super) async fn bump_generations<const N: usize>(
    db: &impl Conn,
    tenant_id: TenantId,
    ids: &[UserId],
    also: [(user::Column, SimpleExpr); N],
    only: Option<SimpleExpr>,
) -> Result<Vec<(UserId, i64)>> {
    let mut bumped = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(crate::store::ids_per_statement(db)) {
        let statement = Query::update()
            .table(user::Entity)
            .value(
                user::Column::TokenGeneration,
                Expr::col(user::Column::TokenGeneration).add(1),
            )
            .values(also.clone())
            .and_where(user::Column::TenantId.eq(tenant_id.0))
            .and_where(crate::store::one_of(
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
