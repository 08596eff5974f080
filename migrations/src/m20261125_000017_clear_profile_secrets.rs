//! The Dialer profile's CalDAV token and PBX password are stored sealed (`v1.` and base64, see
//! `domain::sealing`). This partial index holds the users with a value in clear, written by a
//! version before sealing (or by one still running during a rolling upgrade), so that every start
//! finds them without reading `users`; it is empty once they are sealed. Mass updates of other
//! columns stay in place (the index names only these two columns).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The predicate is spelled exactly as `store::users::clear_profile_secrets` queries it,
        // so that both databases' planners match the query to the index.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX users_clear_secrets ON users (tenant_id, id) \
                 WHERE caldav_token NOT LIKE 'v1.%' OR pbx_password NOT LIKE 'v1.%'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("users_clear_secrets")
                    .table("users")
                    .to_owned(),
            )
            .await
    }
}
