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

/// A batch with the users whose messages are still to be made.
#[derive(Debug, Clone)]
pub struct InvitationBatch {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    /// Every user of the batch, in import order.
    pub user_ids: Vec<UserId>,
    /// How many of `user_ids` are done.
    pub done: usize,
}

/// Queues a batch for `user_ids` of one account.
pub async fn insert(
    db: &impl Conn,
    tenant_id: TenantId,
    user_ids: &[UserId],
    now: DateTime<Utc>,
) -> Result<()> {
    let packed: Vec<u8> = user_ids.iter().flat_map(|id| *id.0.as_bytes()).collect();
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

/// The oldest batch with work left, locked to this transaction on PostgreSQL (another replica's
/// sender skips it and takes the next); `None` when there is none.
pub async fn next(db: &impl Conn) -> Result<Option<InvitationBatch>> {
    let mut query = invitation_batch::Entity::find().order_by_asc(invitation_batch::Column::Id);
    if db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let Some(row) = query.one(db).await? else {
        return Ok(None);
    };
    let chunks = row.user_ids.chunks_exact(16);
    if !chunks.remainder().is_empty() {
        return Err(Error::internal(format!(
            "invitation batch {}: user ids of {} bytes",
            row.id,
            row.user_ids.len()
        )));
    }
    let user_ids: Vec<UserId> = chunks
        .map(|bytes| {
            let mut id = [0u8; 16];
            id.copy_from_slice(bytes);
            UserId(uuid::Uuid::from_bytes(id))
        })
        .collect();
    Ok(Some(InvitationBatch {
        id: row.id,
        tenant_id: TenantId(row.tenant_id),
        done: usize::try_from(row.done)
            .unwrap_or_default()
            .min(user_ids.len()),
        user_ids,
    }))
}

/// Records that the first `done` users of the batch are done; a finished batch is deleted.
pub async fn advance(db: &impl Conn, batch: &InvitationBatch, done: usize) -> Result<()> {
    if done >= batch.user_ids.len() {
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
