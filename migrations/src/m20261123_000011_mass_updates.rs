//! Room for mass updates of users, and an index for the revocations read back at start.
//!
//! A mass action (deactivating 100,000 users by a filter) rewrites every matched row. PostgreSQL
//! can do that in place, without a new entry in each of the table's indexes (a HOT update), only
//! when no indexed column changes and the row's page has room for the new version. So the status
//! index goes (a status filter walks the account's id index instead, which is in the order the
//! listing pages through anyway) and users' pages are filled to half at insert time, so that a
//! mass update of every row of a page still fits in it.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("users_tenant_status")
                    .table("users")
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("ALTER TABLE users SET (fillfactor = 50)")
                .await?;
        }
        // The users whose tokens were revoked one by one, read back at start and at every
        // revocation catch-up; only they are in the index, so imports do not write to it.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX users_tokens_revoked ON users (tokens_valid_after) \
                 WHERE tokens_valid_after IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("users_tokens_revoked")
                    .table("users")
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("ALTER TABLE users RESET (fillfactor)")
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("users_tenant_status")
                    .table("users")
                    .col("tenant_id")
                    .col("status")
                    .col("id")
                    .to_owned(),
            )
            .await
    }
}
