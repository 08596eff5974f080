//! The activity trail.
//!
//! On PostgreSQL every record is also announced with `pg_notify` inside the transaction that
//! writes it, so that the announcement is delivered when, and only when, the change commits:
//! every replica's listener (see [`super::notify`]) feeds its live watchers from there.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, Value,
    sea_query::{LikeExpr, SimpleExpr},
};
use serde::{Deserialize, Serialize};

use super::{Conn, entity::activity, notify};
use crate::model::{
    ActivityFilter, ActivityRecord, ClientInfo, Error, NewActivity, Result, TenantId, UserId,
};

/// PostgreSQL notification payloads must stay under 8,000 bytes; bigger records are announced
/// by id and read back by the listener.
const MAX_PAYLOAD: usize = 7_000;

/// Writes one record; call it inside the transaction of the change it describes.
pub async fn insert(
    db: &impl Conn,
    record: &NewActivity,
    now: DateTime<Utc>,
) -> Result<ActivityRecord> {
    let stored = stored(record, now);
    activity::Entity::insert(active_model(&stored))
        .exec_without_returning(db)
        .await?;
    if db.get_database_backend() == DbBackend::Postgres {
        announce(db, std::slice::from_ref(&stored)).await?;
    }
    Ok(stored)
}

fn stored(record: &NewActivity, now: DateTime<Utc>) -> ActivityRecord {
    ActivityRecord {
        id: uuid::Uuid::now_v7(),
        tenant_id: record.tenant_id,
        actor: record.actor,
        action: record.action.to_owned(),
        target_type: record.target_type.map(str::to_owned),
        target_id: record.target_id,
        client: record.client.clone(),
        details: record.details.clone(),
        created_at: now,
    }
}

fn active_model(stored: &ActivityRecord) -> activity::ActiveModel {
    activity::ActiveModel {
        id: Set(stored.id),
        tenant_id: Set(stored.tenant_id.0),
        actor_user_id: Set(stored.actor.map(|id| id.0)),
        action: Set(stored.action.clone()),
        target_type: Set(stored.target_type.clone()),
        target_id: Set(stored.target_id),
        client_address: Set(stored.client.address.clone()),
        user_agent: Set(stored.client.user_agent.clone()),
        details: Set(stored.details.to_string()),
        created_at: Set(stored.created_at),
    }
}

fn to_record(row: activity::Model) -> ActivityRecord {
    ActivityRecord {
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
    }
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
    Ok(rows.into_iter().map(to_record).collect())
}

/// Targets of `action` records written after `since` (across accounts), e.g. users deleted
/// recently, whose still-unexpired tokens must stay refused after a restart.
pub async fn targets_since(
    db: &impl Conn,
    action: &str,
    since: DateTime<Utc>,
) -> Result<Vec<uuid::Uuid>> {
    // Record ids are UUIDv7, ordered by their time: the smallest id of `since`'s millisecond
    // bounds a range of the primary key, so this reads the recent records only and not the
    // whole trail (it runs at start and at every revocation catch-up).
    let millis = u64::try_from(since.timestamp_millis()).unwrap_or(0);
    let first_id = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
    let targets: Vec<Option<uuid::Uuid>> = activity::Entity::find()
        .select_only()
        .column(activity::Column::TargetId)
        .filter(activity::Column::Id.gte(first_id))
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
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    // 10 columns a row: 1,000 rows a statement stay under every bind-parameter limit.
    for chunk in records.chunks(1_000) {
        let rows: Vec<ActivityRecord> = chunk.iter().map(|record| stored(record, now)).collect();
        activity::Entity::insert_many(rows.iter().map(active_model))
            .exec_without_returning(db)
            .await?;
        if postgres {
            announce(db, &rows).await?;
        }
    }
    Ok(())
}

/// One record by id (the listener reads back records too big for a notification).
pub async fn get(db: &impl Conn, id: uuid::Uuid) -> Result<Option<ActivityRecord>> {
    Ok(activity::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(to_record))
}

/// Escapes `%`, `_` and the escape character itself for a LIKE pattern.
fn like_prefix(prefix: &str) -> LikeExpr {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    LikeExpr::new(pattern).escape('\\')
}

fn filter_condition(tenant_id: TenantId, filter: &ActivityFilter) -> Condition {
    let mut condition = Condition::all().add(activity::Column::TenantId.eq(tenant_id.0));
    if let Some(actor) = filter.actor {
        condition = condition.add(activity::Column::ActorUserId.eq(actor.0));
    }
    if let Some(target) = filter.target {
        condition = condition.add(activity::Column::TargetId.eq(target));
    }
    if let Some(user) = filter.involving {
        condition = condition.add(
            Condition::any()
                .add(activity::Column::ActorUserId.eq(user.0))
                .add(activity::Column::TargetId.eq(user.0)),
        );
    }
    if !filter.actions.is_empty() {
        let mut any = Condition::any();
        for action in &filter.actions {
            let expr: SimpleExpr = match action.strip_suffix('*') {
                Some(prefix) => activity::Column::Action.like(like_prefix(prefix)),
                None => activity::Column::Action.eq(action.as_str()),
            };
            any = any.add(expr);
        }
        condition = condition.add(any);
    }
    if let Some(since) = filter.since {
        condition = condition.add(activity::Column::CreatedAt.gte(since));
    }
    if let Some(until) = filter.until {
        condition = condition.add(activity::Column::CreatedAt.lt(until));
    }
    condition
}

/// A page of an account's records matching `filter`, newest first, after the record `after`
/// (keyset on the time-ordered id).
pub async fn list(
    db: &impl Conn,
    tenant_id: TenantId,
    filter: &ActivityFilter,
    after: Option<uuid::Uuid>,
    limit: u64,
) -> Result<Vec<ActivityRecord>> {
    let mut condition = filter_condition(tenant_id, filter);
    if let Some(after) = after {
        condition = condition.add(activity::Column::Id.lt(after));
    }
    Ok(activity::Entity::find()
        .filter(condition)
        .order_by_desc(activity::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_record)
        .collect())
}

/// Records of every account written after `after`, oldest first: the in-process feed on SQLite
/// tails the table with it (one connection there, so ids grow in commit order).
pub async fn tail(
    db: &impl Conn,
    after: Option<uuid::Uuid>,
    limit: u64,
) -> Result<Vec<ActivityRecord>> {
    let mut query = activity::Entity::find();
    if let Some(after) = after {
        query = query.filter(activity::Column::Id.gt(after));
    }
    Ok(query
        .order_by_asc(activity::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_record)
        .collect())
}

/// The newest record id of every account, where a tail starts.
pub async fn latest_id(db: &impl Conn) -> Result<Option<uuid::Uuid>> {
    Ok(activity::Entity::find()
        .select_only()
        .column(activity::Column::Id)
        .order_by_desc(activity::Column::Id)
        .limit(1)
        .into_tuple::<uuid::Uuid>()
        .one(db)
        .await?)
}

/// How a record travels in a notification (short names keep payloads small).
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    id: uuid::Uuid,
    t: uuid::Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<uuid::Uuid>,
    x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ti: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<String>,
    #[serde(default)]
    d: serde_json::Value,
    at: i64,
}

/// A record too big for a notification, announced by id.
#[derive(Debug, Serialize, Deserialize)]
struct Reference {
    r#ref: uuid::Uuid,
}

/// What a notification on [`notify::ACTIVITY_CHANNEL`] carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    /// The whole record.
    Record(ActivityRecord),
    /// Read the record with this id.
    Reference(uuid::Uuid),
}

/// The notification payload of a record.
pub fn payload(record: &ActivityRecord) -> String {
    let wire = Wire {
        id: record.id,
        t: record.tenant_id.0,
        a: record.actor.map(|id| id.0),
        x: record.action.clone(),
        tt: record.target_type.clone(),
        ti: record.target_id,
        ca: record.client.address.clone(),
        ua: record.client.user_agent.clone(),
        d: record.details.clone(),
        at: record.created_at.timestamp_millis(),
    };
    match serde_json::to_string(&wire) {
        Ok(text) if text.len() <= MAX_PAYLOAD => text,
        _ => serde_json::to_string(&Reference { r#ref: record.id })
            .unwrap_or_else(|_| format!("{{\"ref\":\"{}\"}}", record.id)),
    }
}

/// Reads a notification payload.
pub fn parse_payload(text: &str) -> Result<Announcement> {
    if let Ok(wire) = serde_json::from_str::<Wire>(text) {
        let created_at = DateTime::from_timestamp_millis(wire.at)
            .ok_or_else(|| Error::internal("activity notification with a bad time"))?;
        return Ok(Announcement::Record(ActivityRecord {
            id: wire.id,
            tenant_id: TenantId(wire.t),
            actor: wire.a.map(UserId),
            action: wire.x,
            target_type: wire.tt,
            target_id: wire.ti,
            client: ClientInfo {
                address: wire.ca,
                user_agent: wire.ua,
            },
            details: wire.d,
            created_at,
        }));
    }
    serde_json::from_str::<Reference>(text)
        .map(|reference| Announcement::Reference(reference.r#ref))
        .map_err(|err| Error::internal(format!("unreadable activity notification: {err}")))
}

/// Announces records with one `pg_notify` statement (delivered at commit).
async fn announce(db: &impl Conn, records: &[ActivityRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("SELECT pg_notify($1, v) FROM (VALUES ");
    let mut values: Vec<Value> = Vec::with_capacity(records.len() + 1);
    values.push(notify::ACTIVITY_CHANNEL.into());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${})", i + 2));
        values.push(payload(record).into());
    }
    sql.push_str(") AS t(v)");
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(details: serde_json::Value) -> ActivityRecord {
        ActivityRecord {
            id: uuid::Uuid::now_v7(),
            tenant_id: TenantId::new(),
            actor: Some(UserId::new()),
            action: "auth.login".into(),
            target_type: Some("user".into()),
            target_id: Some(uuid::Uuid::now_v7()),
            client: ClientInfo {
                address: Some("203.0.113.9".into()),
                user_agent: Some("grpcurl/1.8.6".into()),
            },
            details,
            created_at: DateTime::from_timestamp_millis(1_790_000_000_123).unwrap(),
        }
    }

    #[test]
    fn a_record_survives_its_notification_payload() {
        let original = record(serde_json::json!({ "session_id": "x" }));
        assert_eq!(
            parse_payload(&payload(&original)).unwrap(),
            Announcement::Record(original)
        );
    }

    #[test]
    fn a_record_too_big_for_a_notification_travels_by_id() {
        let big = record(serde_json::json!({ "fields": vec!["x".repeat(100); 100] }));
        let text = payload(&big);
        assert!(text.len() < MAX_PAYLOAD);
        assert_eq!(
            parse_payload(&text).unwrap(),
            Announcement::Reference(big.id)
        );
    }
}
