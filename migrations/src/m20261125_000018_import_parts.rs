//! An import on PostgreSQL is written by two transactions at once (see `domain::import`). The
//! second commits first and leaves here the users it created; the first, which holds the
//! account's import lock, deletes the row as it commits. A row whose first transaction is gone
//! (the server stopped between the two commits) names users that nothing reported created: a
//! background pass deletes them, and the row, once it can take that lock.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("import_parts")
                    .col(uuid("import_id"))
                    .col(small_integer("part"))
                    .col(uuid("tenant_id"))
                    // The users' ids, 16 bytes each: one value however many users, on both
                    // databases.
                    .col(binary("user_ids"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("import_id").col("part"))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            // Stored as it is: 16-byte ids of one import share their leading bytes, so the
            // default tries to compress them, and that took 10-15 ms of 100,000 users' import
            // for little gain.
            manager
                .get_connection()
                .execute_unprepared("ALTER TABLE import_parts ALTER user_ids SET STORAGE EXTERNAL")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("import_parts").to_owned())
            .await
    }
}
