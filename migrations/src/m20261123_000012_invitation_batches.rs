//! Invitation batches: an import queues its activation and invitation emails as one row, and the
//! server mints each user's token and message afterwards, a chunk per transaction.
//!
//! Writing 100,000 tokens and messages inside the import's transaction took longer than writing
//! the users themselves; as a batch the import commits in about half the time, and each token's
//! lifetime starts when its message is made rather than when the import began.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("invitation_batches")
                    .col(ColumnDef::new("id").uuid().not_null().primary_key())
                    .col(ColumnDef::new("tenant_id").uuid().not_null())
                    // The users' ids, 16 bytes each, in import order.
                    .col(ColumnDef::new("user_ids").blob().not_null())
                    // How many of them have had their message made.
                    .col(ColumnDef::new("done").integer().not_null().default(0))
                    .col(
                        ColumnDef::new("created_at")
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("invitation_batches", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("invitation_batches").to_owned())
            .await
    }
}
