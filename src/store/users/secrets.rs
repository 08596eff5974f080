//! The Dialer profile's secrets left in clear by older versions, found and sealed.

use sea_orm::{ColumnTrait, QueryFilter, Statement, sea_query::Expr};

use crate::model::{
    ProfileSecrets, Result, SEALED_PREFIX, SealedSecrets, Secret, TenantId, UserId,
};
use crate::store::{Conn, entity::user};

use super::*;

/// A user whose Dialer secrets (some of them) are stored in clear, by a version before sealing.
#[derive(Debug)]
pub struct ClearSecrets {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// Only the values in clear; a sealed one is `None`.
    pub secrets: ProfileSecrets,
}

/// The users with a Dialer secret in clear (not [`SEALED_PREFIX`], `v1.`), through the partial
/// index `users_clear_secrets` (migration 000017), whose predicate this query repeats.
pub async fn clear_profile_secrets(db: &impl Conn) -> Result<Vec<ClearSecrets>> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT tenant_id, id, caldav_token, pbx_password FROM users \
             WHERE caldav_token NOT LIKE 'v1.%' OR pbx_password NOT LIKE 'v1.%'",
        ))
        .await?;
    let in_clear = |value: Option<String>| {
        value
            .filter(|value| !value.starts_with(SEALED_PREFIX))
            .map(Secret::new)
    };
    rows.into_iter()
        .map(|row| {
            Ok(ClearSecrets {
                tenant_id: TenantId(row.try_get_by_index(0)?),
                user_id: UserId(row.try_get_by_index(1)?),
                secrets: ProfileSecrets {
                    caldav_token: in_clear(row.try_get_by_index(2)?),
                    pbx_password: in_clear(row.try_get_by_index(3)?),
                },
            })
        })
        .collect()
}

/// Replaces a user's clear Dialer secrets by their sealed form, each only if it still holds the
/// clear value (one changed meanwhile is left alone); returns the values replaced.
pub async fn replace_clear_profile_secrets(
    db: &impl Conn,
    tenant_id: TenantId,
    user_id: UserId,
    clear: &ProfileSecrets,
    sealed: &SealedSecrets,
) -> Result<u64> {
    let mut replaced = 0;
    for (column, clear, sealed) in [
        (
            user::Column::CaldavToken,
            &clear.caldav_token,
            &sealed.caldav_token,
        ),
        (
            user::Column::PbxPassword,
            &clear.pbx_password,
            &sealed.pbx_password,
        ),
    ] {
        let (Some(clear), Some(sealed)) = (clear, sealed) else {
            continue;
        };
        replaced += update_one(tenant_id, user_id)
            .col_expr(column, Expr::value(sealed.as_str()))
            .filter(column.eq(clear.expose()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(replaced)
}
