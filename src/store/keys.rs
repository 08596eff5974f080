//! Server-wide secrets shared by every replica (the access-token signing key).

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, EntityTrait};

use super::{Conn, entity::server_key};
use crate::model::{Error, Result};

/// Returns the secret stored under `name`, storing `generated` first when there is none. Replicas
/// starting together agree on one value: the first insert wins and everyone reads it back.
pub async fn get_or_create(
    db: &impl Conn,
    name: &str,
    generated: String,
    now: DateTime<Utc>,
) -> Result<String> {
    if let Some(row) = server_key::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
    {
        return Ok(row.secret);
    }
    // A concurrent replica may win the insert; the read below settles it either way.
    let _ = server_key::Entity::insert(server_key::ActiveModel {
        name: Set(name.to_owned()),
        secret: Set(generated),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await;
    server_key::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map(|row| row.secret)
        .ok_or_else(|| Error::internal(format!("server key {name} could not be stored")))
}
