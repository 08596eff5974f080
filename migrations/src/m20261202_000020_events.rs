//! The durable event feed. Each account's events are numbered by `event_counters`: a change
//! takes its numbers from its account's row as the last thing before it commits, so the row's
//! lock orders the commits and a number is never seen before a smaller one (see
//! `store::events`). No index on the time: retention walks each account's events by number (see
//! `store::events::prune`), so a mass change's 100,000 events maintain one index, not two.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("event_counters")
                    .col(uuid("tenant_id").primary_key())
                    .col(big_integer("last_seq"))
                    // The highest number retention has deleted: a cursor before it is too old.
                    .col(big_integer("pruned_through").default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("events")
                    .col(uuid("tenant_id"))
                    .col(big_integer("seq"))
                    .col(uuid("id"))
                    .col(string("event_type"))
                    .col(string_null("target_type"))
                    .col(uuid_null("target_id"))
                    .col(uuid_null("actor_user_id"))
                    // "service_account" when the actor is one; null for a user (or none).
                    .col(string_null("actor_type"))
                    .col(text("fields"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("tenant_id").col("seq"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("events").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("event_counters").to_owned())
            .await
    }
}
