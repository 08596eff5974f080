//! Webhook endpoints and their delivery log, tenant first. The dispatcher's own queries (due
//! endpoints, leases) span accounts: it serves them all.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use super::{
    Conn,
    entity::{webhook_delivery, webhook_endpoint},
};
use crate::model::{
    DeliveryStatus, Error, EventType, Result, TenantId, WebhookDelivery, WebhookDeliveryId,
    WebhookEndpoint, WebhookEndpointId,
};

fn to_endpoint(row: webhook_endpoint::Model) -> Result<WebhookEndpoint> {
    let names: Vec<String> =
        serde_json::from_str(&row.event_types).map_err(Error::internal_from)?;
    Ok(WebhookEndpoint {
        id: WebhookEndpointId(row.id),
        tenant_id: TenantId(row.tenant_id),
        url: url::Url::parse(&row.url).map_err(Error::internal_from)?,
        description: row.description,
        // A type a later version dropped is ignored rather than breaking the endpoint.
        event_types: names
            .iter()
            .filter_map(|name| {
                EventType::ALL
                    .into_iter()
                    .find(|kind| kind.as_str() == name)
            })
            .collect(),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason,
        cursor: row.cursor,
        failing_since: row.failing_since,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn to_delivery(row: webhook_delivery::Model) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: WebhookDeliveryId(row.id),
        tenant_id: TenantId(row.tenant_id),
        endpoint_id: WebhookEndpointId(row.endpoint_id),
        event_id: row.event_id,
        event_cursor: row.event_seq,
        event_type: row.event_type,
        status: DeliveryStatus::parse(&row.status)?,
        attempts: row.attempts,
        response_code: row.response_code,
        last_error: row.last_error,
        next_attempt_at: row.next_attempt_at,
        redeliver: row.redeliver,
        created_at: row.created_at,
        last_attempt_at: row.last_attempt_at,
        delivered_at: row.delivered_at,
    })
}

fn types_json(types: &[EventType]) -> Result<String> {
    serde_json::to_string(&types.iter().map(|kind| kind.as_str()).collect::<Vec<_>>())
        .map_err(Error::internal_from)
}

/// Stores a new endpoint with its sealed signing secret.
pub async fn insert_endpoint(
    db: &impl Conn,
    endpoint: &WebhookEndpoint,
    secret_sealed: &str,
) -> Result<()> {
    webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel {
        id: Set(endpoint.id.0),
        tenant_id: Set(endpoint.tenant_id.0),
        url: Set(endpoint.url.to_string()),
        description: Set(endpoint.description.clone()),
        event_types: Set(types_json(&endpoint.event_types)?),
        enabled: Set(endpoint.enabled),
        disabled_reason: Set(endpoint.disabled_reason.clone()),
        secret_sealed: Set(secret_sealed.to_owned()),
        cursor: Set(endpoint.cursor),
        failing_since: Set(endpoint.failing_since),
        next_attempt_at: Set(endpoint.created_at),
        lease_until: Set(None),
        created_at: Set(endpoint.created_at),
        updated_at: Set(endpoint.updated_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// One endpoint of the account.
pub async fn get_endpoint(
    db: &impl Conn,
    tenant_id: TenantId,
    id: WebhookEndpointId,
) -> Result<Option<WebhookEndpoint>> {
    webhook_endpoint::Entity::find_by_id(id.0)
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id.0))
        .one(db)
        .await?
        .map(to_endpoint)
        .transpose()
}

/// A keyset page of the account's endpoints, by id.
pub async fn list_endpoints(
    db: &impl Conn,
    tenant_id: TenantId,
    after: Option<WebhookEndpointId>,
    limit: u64,
) -> Result<Vec<WebhookEndpoint>> {
    let mut query =
        webhook_endpoint::Entity::find().filter(webhook_endpoint::Column::TenantId.eq(tenant_id.0));
    if let Some(after) = after {
        query = query.filter(webhook_endpoint::Column::Id.gt(after.0));
    }
    query
        .order_by_asc(webhook_endpoint::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_endpoint)
        .collect()
}

/// How many endpoints the account has.
pub async fn count_endpoints(db: &impl Conn, tenant_id: TenantId) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id.0))
        .count(db)
        .await?)
}

/// Writes an endpoint's editable fields back; enabling it clears its failure and makes it due.
pub async fn update_endpoint(
    db: &impl Conn,
    endpoint: &WebhookEndpoint,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut update = webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::Url,
            Expr::value(endpoint.url.to_string()),
        )
        .col_expr(
            webhook_endpoint::Column::Description,
            Expr::value(endpoint.description.clone()),
        )
        .col_expr(
            webhook_endpoint::Column::EventTypes,
            Expr::value(types_json(&endpoint.event_types)?),
        )
        .col_expr(
            webhook_endpoint::Column::Enabled,
            Expr::value(endpoint.enabled),
        )
        .col_expr(
            webhook_endpoint::Column::DisabledReason,
            Expr::value(endpoint.disabled_reason.clone()),
        )
        .col_expr(
            webhook_endpoint::Column::FailingSince,
            Expr::value(endpoint.failing_since),
        )
        .col_expr(
            webhook_endpoint::Column::UpdatedAt,
            Expr::value(endpoint.updated_at),
        );
    if endpoint.enabled {
        update = update.col_expr(webhook_endpoint::Column::NextAttemptAt, Expr::value(now));
    }
    update
        .filter(webhook_endpoint::Column::TenantId.eq(endpoint.tenant_id.0))
        .filter(webhook_endpoint::Column::Id.eq(endpoint.id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes an endpoint and its log; false when there was none.
pub async fn delete_endpoint(
    db: &impl Conn,
    tenant_id: TenantId,
    id: WebhookEndpointId,
) -> Result<bool> {
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id.0))
        .filter(webhook_delivery::Column::EndpointId.eq(id.0))
        .exec(db)
        .await?;
    Ok(webhook_endpoint::Entity::delete_many()
        .filter(webhook_endpoint::Column::TenantId.eq(tenant_id.0))
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// An endpoint as the dispatcher needs it: with its sealed secret.
#[derive(Debug, Clone)]
pub struct DueEndpoint {
    pub endpoint: WebhookEndpoint,
    pub secret_sealed: String,
}

/// Enabled endpoints of every account whose next attempt is due and that no replica holds.
pub async fn due_endpoints(
    db: &impl Conn,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<DueEndpoint>> {
    webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .filter(webhook_endpoint::Column::NextAttemptAt.lte(now))
        .filter(
            Condition::any()
                .add(webhook_endpoint::Column::LeaseUntil.is_null())
                .add(webhook_endpoint::Column::LeaseUntil.lt(now)),
        )
        .order_by_asc(webhook_endpoint::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|row| {
            let secret_sealed = row.secret_sealed.clone();
            Ok(DueEndpoint {
                endpoint: to_endpoint(row)?,
                secret_sealed,
            })
        })
        .collect()
}

/// Takes the endpoint for this replica until `until`; false when another replica holds it or it
/// was disabled or deleted meanwhile.
pub async fn claim(
    db: &impl Conn,
    id: WebhookEndpointId,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool> {
    Ok(webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::LeaseUntil, Expr::value(until))
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .filter(
            Condition::any()
                .add(webhook_endpoint::Column::LeaseUntil.is_null())
                .add(webhook_endpoint::Column::LeaseUntil.lt(now)),
        )
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// Gives the endpoint back.
pub async fn release(db: &impl Conn, id: WebhookEndpointId) -> Result<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(
            webhook_endpoint::Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Moves the endpoint's cursor forward to `cursor` (never back) after a success or past events
/// its types do not want; clears its failure.
pub async fn advance(db: &impl Conn, id: WebhookEndpointId, cursor: i64) -> Result<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::Cursor, Expr::value(cursor))
        .col_expr(
            webhook_endpoint::Column::FailingSince,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .filter(webhook_endpoint::Column::Cursor.lt(cursor))
        .exec(db)
        .await?;
    Ok(())
}

/// Records that the endpoint is failing since `since` and waits until `retry_at`.
pub async fn set_failing(
    db: &impl Conn,
    id: WebhookEndpointId,
    since: DateTime<Utc>,
    retry_at: DateTime<Utc>,
) -> Result<()> {
    webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::FailingSince, Expr::value(since))
        .col_expr(
            webhook_endpoint::Column::NextAttemptAt,
            Expr::value(retry_at),
        )
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Disables a failing endpoint; false when it was disabled or deleted meanwhile.
pub async fn disable(
    db: &impl Conn,
    id: WebhookEndpointId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::Enabled, Expr::value(false))
        .col_expr(
            webhook_endpoint::Column::DisabledReason,
            Expr::value(reason),
        )
        .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
        .filter(webhook_endpoint::Column::Id.eq(id.0))
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .exec(db)
        .await?
        .rows_affected
        == 1)
}

/// The endpoint's log entries of the events with these cursors.
pub async fn deliveries_of(
    db: &impl Conn,
    endpoint_id: WebhookEndpointId,
    cursors: &[i64],
) -> Result<Vec<WebhookDelivery>> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0))
        .filter(webhook_delivery::Column::EventSeq.is_in(cursors.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(to_delivery)
        .collect()
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: DeliveryStatus,
    pub response_code: Option<i32>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Writes an attempt at delivering event `event_cursor` to the log: the event's entry is made on
/// its first attempt and updated on every later one.
pub async fn record_attempt(
    db: &impl Conn,
    tenant_id: TenantId,
    endpoint_id: WebhookEndpointId,
    event: (i64, uuid::Uuid, &str),
    attempt: &Attempt,
) -> Result<()> {
    let (event_seq, event_id, event_type) = event;
    let delivered_at = (attempt.status == DeliveryStatus::Delivered).then_some(attempt.at);
    let updated = webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Attempts,
            Expr::col(webhook_delivery::Column::Attempts).add(1),
        )
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(attempt.status.as_str()),
        )
        .col_expr(
            webhook_delivery::Column::ResponseCode,
            Expr::value(attempt.response_code),
        )
        .col_expr(
            webhook_delivery::Column::LastError,
            Expr::value(attempt.error.clone()),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(attempt.next_attempt_at),
        )
        .col_expr(webhook_delivery::Column::Redeliver, Expr::value(false))
        .col_expr(
            webhook_delivery::Column::LastAttemptAt,
            Expr::value(attempt.at),
        )
        .col_expr(
            webhook_delivery::Column::DeliveredAt,
            Expr::value(delivered_at),
        )
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0))
        .filter(webhook_delivery::Column::EventSeq.eq(event_seq))
        .exec(db)
        .await?;
    if updated.rows_affected > 0 {
        return Ok(());
    }
    webhook_delivery::Entity::insert(webhook_delivery::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.0),
        endpoint_id: Set(endpoint_id.0),
        event_seq: Set(event_seq),
        event_id: Set(event_id),
        event_type: Set(event_type.to_owned()),
        status: Set(attempt.status.as_str().to_owned()),
        attempts: Set(1),
        response_code: Set(attempt.response_code),
        last_error: Set(attempt.error.clone()),
        next_attempt_at: Set(attempt.next_attempt_at),
        redeliver: Set(false),
        created_at: Set(attempt.at),
        last_attempt_at: Set(Some(attempt.at)),
        delivered_at: Set(delivered_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Marks the endpoint's pending entry, if any, as given up (the endpoint was disabled).
pub async fn give_up_pending(db: &impl Conn, endpoint_id: WebhookEndpointId) -> Result<()> {
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::Status,
            Expr::value(DeliveryStatus::Failed.as_str()),
        )
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(webhook_delivery::Column::Redeliver.eq(false))
        .exec(db)
        .await?;
    Ok(())
}

/// One log entry of the account's endpoint.
pub async fn get_delivery(
    db: &impl Conn,
    tenant_id: TenantId,
    endpoint_id: WebhookEndpointId,
    id: WebhookDeliveryId,
) -> Result<Option<WebhookDelivery>> {
    webhook_delivery::Entity::find_by_id(id.0)
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id.0))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0))
        .one(db)
        .await?
        .map(to_delivery)
        .transpose()
}

/// A page of the endpoint's log, newest event first, before cursor `before`.
pub async fn list_deliveries(
    db: &impl Conn,
    tenant_id: TenantId,
    endpoint_id: WebhookEndpointId,
    status: Option<DeliveryStatus>,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<WebhookDelivery>> {
    let mut query = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::TenantId.eq(tenant_id.0))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0));
    if let Some(status) = status {
        query = query.filter(webhook_delivery::Column::Status.eq(status.as_str()));
    }
    if let Some(before) = before {
        query = query.filter(webhook_delivery::Column::EventSeq.lt(before));
    }
    query
        .order_by_desc(webhook_delivery::Column::EventSeq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_delivery)
        .collect()
}

/// Queues a log entry for another delivery, out of the feed's order.
pub async fn queue_redelivery(
    db: &impl Conn,
    id: WebhookDeliveryId,
    now: DateTime<Utc>,
) -> Result<()> {
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Redeliver, Expr::value(true))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
        .filter(webhook_delivery::Column::Id.eq(id.0))
        .exec(db)
        .await?;
    // The endpoint is due now.
    webhook_endpoint::Entity::update_many()
        .col_expr(webhook_endpoint::Column::NextAttemptAt, Expr::value(now))
        .filter(
            webhook_endpoint::Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(webhook_delivery::Column::EndpointId)
                    .from(webhook_delivery::Entity)
                    .and_where(webhook_delivery::Column::Id.eq(id.0))
                    .to_owned(),
            ),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// The endpoint's entries queued by RedeliverWebhook, oldest event first.
pub async fn redeliveries(
    db: &impl Conn,
    endpoint_id: WebhookEndpointId,
    limit: u64,
) -> Result<Vec<WebhookDelivery>> {
    webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id.0))
        .filter(webhook_delivery::Column::Redeliver.eq(true))
        .order_by_asc(webhook_delivery::Column::EventSeq)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_delivery)
        .collect()
}

/// Deletes log entries made before `before` (as retention deletes their events).
pub async fn prune_deliveries(db: &impl Conn, before: DateTime<Utc>) -> Result<u64> {
    Ok(webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::CreatedAt.lt(before))
        .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending.as_str()))
        .exec(db)
        .await?
        .rows_affected)
}
