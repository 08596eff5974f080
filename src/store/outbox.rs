//! The transactional mail outbox: messages are written with the change that causes them and sent
//! by a background task.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, ExprTrait},
};

use super::{Conn, entity::outbox};
use crate::model::{Result, TenantId};

/// A message waiting to be sent.
#[derive(Debug, Clone)]
pub struct PendingMail {
    pub id: uuid::Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
}

/// Queues a message.
pub async fn enqueue(
    db: &impl Conn,
    tenant_id: Option<TenantId>,
    recipient: &str,
    subject: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    outbox::Entity::insert(outbox::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.map(|id| id.0)),
        recipient: Set(recipient.to_owned()),
        subject: Set(subject.to_owned()),
        body: Set(body.to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        sent_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        bulk: Set(false),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Messages due for a (re)try: single messages first, then those of bulk runs; oldest first.
pub async fn due(
    db: &impl Conn,
    now: DateTime<Utc>,
    max_attempts: i32,
    limit: u64,
) -> Result<Vec<PendingMail>> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .filter(outbox::Column::NextAttemptAt.lte(now))
        .filter(outbox::Column::Attempts.lt(max_attempts))
        .order_by_asc(outbox::Column::Bulk)
        .order_by_asc(outbox::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|row| PendingMail {
            id: row.id,
            recipient: row.recipient,
            subject: row.subject,
            body: row.body,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
        })
        .collect())
}

/// Records a failed attempt and when to try again.
pub async fn mark_failed(
    db: &impl Conn,
    id: uuid::Uuid,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<()> {
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(outbox::Column::LastError, Expr::value(error))
        .col_expr(outbox::Column::NextAttemptAt, Expr::value(retry_at))
        .filter(outbox::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Queues the many messages of a bulk run (an import's invitations) with multi-row statements;
/// they are sent after every single message that is due.
pub async fn enqueue_many(
    db: &impl Conn,
    tenant_id: Option<TenantId>,
    mails: &[(String, String, String)],
    now: DateTime<Utc>,
) -> Result<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        // One array per column, as for users (see `users::insert_many`).
        const MAILS: &str = r#"INSERT INTO outbox (id, tenant_id, recipient, subject, body,
            attempts, next_attempt_at, created_at, bulk)
            SELECT m.id, $1, m.recipient, m.subject, m.body, 0, $2, $2, TRUE
            FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[])
                AS m(id, recipient, subject, body)"#;
        for chunk in mails.chunks(20_000) {
            let ids: Vec<uuid::Uuid> = chunk.iter().map(|_| uuid::Uuid::now_v7()).collect();
            let mut columns: [Vec<String>; 3] = Default::default();
            for (recipient, subject, body) in chunk {
                columns[0].push(recipient.clone());
                columns[1].push(subject.clone());
                columns[2].push(body.clone());
            }
            let [recipients, subjects, bodies] = columns;
            let values: [Value; 6] = [
                tenant_id.map(|id| id.0).into(),
                now.into(),
                ids.into(),
                recipients.into(),
                subjects.into(),
                bodies.into(),
            ];
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                MAILS,
                values,
            ))
            .await?;
        }
        return Ok(());
    }
    for chunk in mails.chunks(2_000) {
        let rows = chunk
            .iter()
            .map(|(recipient, subject, body)| outbox::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                tenant_id: Set(tenant_id.map(|id| id.0)),
                recipient: Set(recipient.clone()),
                subject: Set(subject.clone()),
                body: Set(body.clone()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                sent_at: Set(None),
                last_error: Set(None),
                created_at: Set(now),
                bulk: Set(true),
            });
        outbox::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Claims a batch of due messages for this sender in one statement; returns the ids it got (a
/// concurrent replica may have claimed some first).
pub async fn claim_many(
    db: &impl Conn,
    mails: &[PendingMail],
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<std::collections::HashSet<uuid::Uuid>> {
    let claimed = outbox::Entity::update_many()
        .col_expr(outbox::Column::NextAttemptAt, Expr::value(until))
        .filter(outbox::Column::Id.is_in(mails.iter().map(|mail| mail.id)))
        .filter(outbox::Column::NextAttemptAt.lte(now))
        .filter(outbox::Column::SentAt.is_null())
        .exec_with_returning(db)
        .await?;
    Ok(claimed.into_iter().map(|row| row.id).collect())
}

/// Records many deliveries in one statement.
pub async fn mark_sent_many(db: &impl Conn, ids: &[uuid::Uuid], now: DateTime<Utc>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::update_many()
        .col_expr(outbox::Column::SentAt, Expr::value(now))
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(
            outbox::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(outbox::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// Unsent messages and the creation time of the oldest (read through the `outbox_unsent`
/// partial index).
pub async fn backlog(db: &impl Conn) -> Result<(u64, Option<DateTime<Utc>>)> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = outbox::Entity::find()
        .select_only()
        .column_as(Expr::col(outbox::Column::Id).count(), "count")
        .column_as(Expr::col(outbox::Column::CreatedAt).min(), "oldest")
        .filter(outbox::Column::SentAt.is_null())
        .into_tuple()
        .one(db)
        .await?;
    Ok(row.map_or((0, None), |(count, oldest)| {
        (u64::try_from(count).unwrap_or(0), oldest)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_single_message_goes_before_a_bulk_run_queued_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let store = Store::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        let now = Utc::now();
        let run: Vec<(String, String, String)> = (0..3)
            .map(|i| (format!("invited{i}@acme.test"), "s".into(), "b".into()))
            .collect();
        enqueue_many(store.db(), None, &run, now).await.unwrap();
        enqueue(store.db(), None, "reset@acme.test", "s", "b", now)
            .await
            .unwrap();
        let due = due(store.db(), now, 10, 2).await.unwrap();
        let recipients: Vec<&str> = due.iter().map(|mail| mail.recipient.as_str()).collect();
        assert_eq!(recipients, ["reset@acme.test", "invited0@acme.test"]);
    }
}
