//! The activity trail.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{Conn, entity::activity};
use crate::model::{ActivityRecord, ClientInfo, NewActivity, Result, TenantId, UserId};

/// Writes one record; call it inside the transaction of the change it describes.
pub async fn insert(
    db: &impl Conn,
    record: &NewActivity,
    now: DateTime<Utc>,
) -> Result<ActivityRecord> {
    let stored = ActivityRecord {
        id: uuid::Uuid::now_v7(),
        tenant_id: record.tenant_id,
        actor: record.actor,
        action: record.action.to_owned(),
        target_type: record.target_type.map(str::to_owned),
        target_id: record.target_id,
        client: record.client.clone(),
        details: record.details.clone(),
        created_at: now,
    };
    activity::Entity::insert(activity::ActiveModel {
        id: Set(stored.id),
        tenant_id: Set(stored.tenant_id.0),
        actor_user_id: Set(stored.actor.map(|id| id.0)),
        action: Set(stored.action.clone()),
        target_type: Set(stored.target_type.clone()),
        target_id: Set(stored.target_id),
        client_address: Set(stored.client.address.clone()),
        user_agent: Set(stored.client.user_agent.clone()),
        details: Set(stored.details.to_string()),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(stored)
}

/// The newest records of an account, newest first.
pub async fn recent(
    db: &impl Conn,
    tenant_id: TenantId,
    limit: u64,
) -> Result<Vec<ActivityRecord>> {
    let rows = activity::Entity::find()
        .filter(activity::Column::TenantId.eq(tenant_id.0))
        .order_by_desc(activity::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ActivityRecord {
            id: row.id,
            tenant_id: TenantId(row.tenant_id),
            actor: row.actor_user_id.map(UserId),
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            client: ClientInfo {
                address: row.client_address,
                user_agent: row.user_agent,
            },
            details: serde_json::from_str(&row.details).unwrap_or_default(),
            created_at: row.created_at,
        })
        .collect())
}

/// Targets of `action` records written after `since` (across accounts), e.g. users deleted
/// recently, whose still-unexpired tokens must stay refused after a restart.
pub async fn targets_since(
    db: &impl Conn,
    action: &str,
    since: DateTime<Utc>,
) -> Result<Vec<uuid::Uuid>> {
    let targets: Vec<Option<uuid::Uuid>> = activity::Entity::find()
        .select_only()
        .column(activity::Column::TargetId)
        .filter(activity::Column::Action.eq(action))
        .filter(activity::Column::CreatedAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    Ok(targets.into_iter().flatten().collect())
}

/// Writes many records with multi-row statements (mass actions).
pub async fn insert_many(
    db: &impl Conn,
    records: &[NewActivity],
    now: DateTime<Utc>,
) -> Result<()> {
    // 10 columns a row: 1,000 rows a statement stay under every bind-parameter limit.
    for chunk in records.chunks(1_000) {
        let rows = chunk.iter().map(|record| activity::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            tenant_id: Set(record.tenant_id.0),
            actor_user_id: Set(record.actor.map(|id| id.0)),
            action: Set(record.action.to_owned()),
            target_type: Set(record.target_type.map(str::to_owned)),
            target_id: Set(record.target_id),
            client_address: Set(record.client.address.clone()),
            user_agent: Set(record.client.user_agent.clone()),
            details: Set(record.details.to_string()),
            created_at: Set(now),
        });
        activity::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}
