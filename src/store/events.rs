//! The durable event feed.
//!
//! Each account's events are numbered 1, 2, 3 ... by its row in `event_counters`. A change takes
//! its numbers as the last thing before it commits ([`append`]); the row stays locked until the
//! commit, so the next change of the account waits for it and takes the numbers after. Numbers
//! therefore become visible in order and without gaps: a reader that has seen `n` has seen
//! everything before it, and resuming after `n` never skips a change that committed later with
//! a smaller number (the classic trap of sequence-numbered feeds). On SQLite the one writer
//! gives the same order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Alias, Expr, ExprTrait, OnConflict, Query},
};

use super::{
    Conn,
    entity::{event, event_counter},
    notify,
};
use crate::model::{Error, Event, EventFilter, NewEvent, Result, TenantId, UserId};

/// Rows a multi-row insert writes (9 columns: under every bind-parameter limit).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Writes `events` with their numbers; call it last in the change's transaction, just before its
/// commit. On PostgreSQL it also announces them (one notification an account, delivered at
/// commit) so that other replicas' watchers wake.
pub async fn append(db: &impl Conn, events: &[NewEvent], now: DateTime<Utc>) -> Result<()> {
    let mut by_tenant: BTreeMap<uuid::Uuid, Vec<&NewEvent>> = BTreeMap::new();
    for event in events {
        by_tenant.entry(event.tenant_id.0).or_default().push(event);
    }
    // Accounts in a fixed order: two changes never wait for each other's counters in a circle.
    for (tenant, events) in by_tenant {
        let last = take_numbers(db, tenant, events.len() as i64).await?;
        let first = last - events.len() as i64 + 1;
        if db.get_database_backend() == DbBackend::Postgres {
            insert_unnested(db, tenant, first, &events, now).await?;
        } else {
            insert_rows(db, tenant, first, &events, now).await?;
        }
        if db.get_database_backend() == DbBackend::Postgres {
            notify::notify_all(db, notify::EVENTS_CHANNEL, vec![format!("{tenant} {last}")])
                .await?;
        }
    }
    Ok(())
}

/// Multi-row inserts, a thousand rows a statement (SQLite).
async fn insert_rows(
    db: &impl Conn,
    tenant: uuid::Uuid,
    first: i64,
    events: &[&NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    for (start, chunk) in events.chunks(ROWS_PER_STATEMENT).enumerate() {
        let base = first + (start * ROWS_PER_STATEMENT) as i64;
        let rows = chunk.iter().enumerate().map(|(i, new)| event::ActiveModel {
            tenant_id: Set(tenant),
            seq: Set(base + i as i64),
            id: Set(uuid::Uuid::now_v7()),
            event_type: Set(new.event_type.as_str().to_owned()),
            target_type: Set(Some(new.target_type.to_owned())),
            target_id: Set(Some(new.target_id)),
            actor_user_id: Set(new.actor.map(|id| id.0)),
            actor_type: Set(actor_type(new).map(str::to_owned)),
            fields: Set(new.fields.to_string()),
            created_at: Set(now),
        });
        event::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// One statement of arrays per 50,000 events (PostgreSQL): a mass action's 100,000 events are
/// two round trips instead of a hundred.
async fn insert_unnested(
    db: &impl Conn,
    tenant: uuid::Uuid,
    first: i64,
    events: &[&NewEvent],
    now: DateTime<Utc>,
) -> Result<()> {
    const PER_STATEMENT: usize = 50_000;
    for (start, chunk) in events.chunks(PER_STATEMENT).enumerate() {
        let base = first + (start * PER_STATEMENT) as i64;
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::now_v7()).collect();
        let types: Vec<String> = chunk
            .iter()
            .map(|e| e.event_type.as_str().to_owned())
            .collect();
        let target_types: Vec<String> = chunk.iter().map(|e| e.target_type.to_owned()).collect();
        let targets: Vec<uuid::Uuid> = chunk.iter().map(|e| e.target_id).collect();
        // Arrays of nullable values travel as nil / empty and turn back into NULL.
        let actors: Vec<uuid::Uuid> = chunk
            .iter()
            .map(|e| e.actor.map_or(uuid::Uuid::nil(), |id| id.0))
            .collect();
        let actor_types: Vec<String> = chunk
            .iter()
            .map(|e| actor_type(e).unwrap_or_default().to_owned())
            .collect();
        let fields: Vec<String> = chunk.iter().map(|e| e.fields.to_string()).collect();
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO events (tenant_id, seq, id, event_type, target_type, target_id, \
             actor_user_id, actor_type, fields, created_at) \
             SELECT $1, $2 + t.n - 1, t.id, t.event_type, t.target_type, t.target_id, \
             NULLIF(t.actor, '00000000-0000-0000-0000-000000000000'::uuid), \
             NULLIF(t.actor_type, ''), t.fields, $3 \
             FROM unnest($4::uuid[], $5::text[], $6::text[], $7::uuid[], $8::uuid[], $9::text[], \
             $10::text[]) WITH ORDINALITY \
             AS t(id, event_type, target_type, target_id, actor, actor_type, fields, n)",
            [
                tenant.into(),
                base.into(),
                now.into(),
                ids.into(),
                types.into(),
                target_types.into(),
                targets.into(),
                actors.into(),
                actor_types.into(),
                fields.into(),
            ],
        ))
        .await?;
    }
    Ok(())
}

fn actor_type(event: &NewEvent) -> Option<&'static str> {
    event.actor_service_account.then_some("service_account")
}

/// Advances the account's counter by `count` and returns its new value, holding the row's lock
/// until the transaction ends.
async fn take_numbers(db: &impl Conn, tenant: uuid::Uuid, count: i64) -> Result<i64> {
    let counters = Alias::new("event_counters");
    let last_seq = Alias::new("last_seq");
    let statement = Query::insert()
        .into_table(counters.clone())
        .columns([Alias::new("tenant_id"), last_seq.clone()])
        .values_panic([tenant.into(), count.into()])
        .on_conflict(
            OnConflict::column(Alias::new("tenant_id"))
                .value(
                    last_seq.clone(),
                    Expr::col((counters, last_seq.clone())).add(count),
                )
                .to_owned(),
        )
        .returning_col(last_seq)
        .to_owned();
    let row = db
        .query_one(&statement)
        .await?
        .ok_or_else(|| Error::internal("the event counter returned no row"))?;
    Ok(row.try_get("", "last_seq")?)
}

/// The span of an account's retained feed: the last number retention deleted (a cursor before
/// it is too old) and the last number written (0 and 0 for an account without events).
pub async fn bounds(db: &impl Conn, tenant_id: TenantId) -> Result<(i64, i64)> {
    Ok(event_counter::Entity::find_by_id(tenant_id.0)
        .one(db)
        .await?
        .map_or((0, 0), |row| (row.pruned_through, row.last_seq)))
}

/// Up to `limit` events of the account after `after` and at most `through`, matching `filter`,
/// in order.
pub async fn list(
    db: &impl Conn,
    tenant_id: TenantId,
    after: i64,
    through: i64,
    filter: &EventFilter,
    limit: u64,
) -> Result<Vec<Event>> {
    let mut condition = Condition::all()
        .add(event::Column::TenantId.eq(tenant_id.0))
        .add(event::Column::Seq.gt(after))
        .add(event::Column::Seq.lte(through));
    if !filter.types.is_empty() {
        condition = condition
            .add(event::Column::EventType.is_in(filter.types.iter().map(|kind| kind.as_str())));
    }
    if let Some(target) = filter.target {
        condition = condition.add(event::Column::TargetId.eq(target));
    }
    let rows = event::Entity::find()
        .filter(condition)
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    rows.into_iter().map(to_event).collect()
}

fn to_event(row: event::Model) -> Result<Event> {
    Ok(Event {
        cursor: row.seq,
        id: row.id,
        tenant_id: TenantId(row.tenant_id),
        event_type: row.event_type,
        target_type: row.target_type,
        target_id: row.target_id,
        actor: row.actor_user_id.map(UserId),
        actor_service_account: row.actor_type.as_deref() == Some("service_account"),
        fields: serde_json::from_str(&row.fields).map_err(Error::internal_from)?,
        created_at: row.created_at,
    })
}

/// Deletes the events written before `before`, every account's, and moves each account's
/// `pruned_through` up to the last number deleted; returns how many were deleted. It walks each
/// account's events by number up to the first one written at or after `before` and deletes
/// those before it (numbers follow commit order, times the changes' clocks: an old event just
/// after a young one is kept a little longer, never skipped).
pub async fn prune(db: &impl Conn, before: DateTime<Utc>) -> Result<u64> {
    let counters = event_counter::Entity::find().all(db).await?;
    let mut deleted = 0;
    for counter in counters {
        let first_young: Option<i64> = event::Entity::find()
            .select_only()
            .column(event::Column::Seq)
            .filter(event::Column::TenantId.eq(counter.tenant_id))
            .filter(event::Column::Seq.gt(counter.pruned_through))
            .filter(event::Column::CreatedAt.gte(before))
            .order_by_asc(event::Column::Seq)
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        let through = first_young.map_or(counter.last_seq, |seq| seq - 1);
        if through <= counter.pruned_through {
            continue;
        }
        event_counter::Entity::update_many()
            .col_expr(event_counter::Column::PrunedThrough, Expr::value(through))
            .filter(event_counter::Column::TenantId.eq(counter.tenant_id))
            .filter(event_counter::Column::PrunedThrough.lt(through))
            .exec(db)
            .await?;
        deleted += event::Entity::delete_many()
            .filter(event::Column::TenantId.eq(counter.tenant_id))
            .filter(event::Column::Seq.lte(through))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}
