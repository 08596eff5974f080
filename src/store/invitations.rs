//! Invitation batches: the activation and invitation emails of an import, queued as one row in
//! the import's transaction and turned into tokens and messages afterwards, a chunk at a time.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, LockBehavior, LockType},
};

use super::{Conn, entity::invitation_batch};
use crate::model::{Error, Result, TenantId, UserId};

/// The next users of a batch whose messages are still to be made.
#[derive(Debug, Clone)]
pub struct InvitationBatch {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    /// How many users the batch holds.
    pub total: usize,
    /// How many of them are done.
    pub done: usize,
    /// The next users, in import order (at most the chunk asked for).
    pub next_users: Vec<UserId>,
}

/// Queues a batch for `user_ids` of one account.
pub async fn insert(
    db: &impl Conn,
    tenant_id: TenantId,
    user_ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<()> {
    let packed = super::pack_user_ids(user_ids);
    invitation_batch::Entity::insert(invitation_batch::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant_id.0),
        user_ids: Set(packed),
        done: Set(0),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The oldest batch with work left and its next `chunk` users, locked to this transaction on
/// PostgreSQL (another replica's sender skips it and takes the next); `None` when there is none.
/// Only the chunk's ids are read, not the whole list (1.6 MB for 100,000 users) each time.
pub async fn next(db: &impl Conn, chunk: usize) -> Result<Option<InvitationBatch>> {
    let mut query = invitation_batch::Entity::find()
        .select_only()
        .column(invitation_batch::Column::Id)
        .column(invitation_batch::Column::TenantId)
        .column(invitation_batch::Column::Done)
        .expr(Expr::cust("CAST(length(user_ids) AS BIGINT)"))
        .expr(Expr::cust(format!(
            "substr(user_ids, done * 16 + 1, {})",
            chunk * 16
        )))
        .order_by_asc(invitation_batch::Column::Id);
    if db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let Some((id, tenant_id, done, bytes, next)) = query
        .into_tuple::<(uuid::Uuid, uuid::Uuid, i32, i64, Vec<u8>)>()
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if bytes % 16 != 0 || next.len() % 16 != 0 {
        return Err(Error::internal(format!(
            "invitation batch {id}: user ids of {bytes} bytes"
        )));
    }
    let total = usize::try_from(bytes / 16).unwrap_or_default();
    Ok(Some(InvitationBatch {
        id,
        tenant_id: TenantId(tenant_id),
        total,
        done: usize::try_from(done).unwrap_or_default().min(total),
        next_users: super::unpack_user_ids(&next),
    }))
}

/// Records that the first `done` users of the batch are done; a finished batch is deleted.
pub async fn advance(db: &impl Conn, batch: &InvitationBatch, done: usize) -> Result<()> {
    if done >= batch.total {
        invitation_batch::Entity::delete_by_id(batch.id)
            .exec(db)
            .await?;
    } else {
        invitation_batch::Entity::update_many()
            .col_expr(invitation_batch::Column::Done, Expr::val(done as i32))
            .filter(invitation_batch::Column::Id.eq(batch.id))
            .exec(db)
            .await?;
    }
    Ok(())
}
