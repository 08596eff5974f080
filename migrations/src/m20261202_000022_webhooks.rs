//! Webhook endpoints and their delivery log. An endpoint follows its account's event feed with a
//! cursor of its own: the feed, written in each change's transaction, is the outbox the
//! deliveries are made from, so a mass change of 100,000 users writes no extra row per endpoint
//! until its events are sent. A delivery row is written when its event is first tried; the
//! unique (endpoint, event) pair keeps one log entry per event and endpoint.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("webhook_endpoints")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(text("url"))
                    .col(string("description"))
                    // Event type names, as a JSON array; empty for all.
                    .col(text("event_types"))
                    .col(boolean("enabled"))
                    .col(text_null("disabled_reason"))
                    // The signing secret, sealed (AES-256-GCM) to its row.
                    .col(text("secret_sealed"))
                    .col(big_integer("cursor"))
                    .col(timestamp_with_time_zone_null("failing_since"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    // A replica delivering to the endpoint holds it until then.
                    .col(timestamp_with_time_zone_null("lease_until"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("webhook_endpoints", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_endpoints_tenant")
                    .table("webhook_endpoints")
                    .col("tenant_id")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("webhook_deliveries")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(uuid("endpoint_id"))
                    .col(big_integer("event_seq"))
                    .col(uuid("event_id"))
                    .col(string("event_type"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(integer_null("response_code"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone_null("next_attempt_at"))
                    .col(boolean("redeliver"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_attempt_at"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("webhook_deliveries", "endpoint_id")
                            .to("webhook_endpoints", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One log entry per event and endpoint; also the log's order (newest first).
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_endpoint_event")
                    .table("webhook_deliveries")
                    .col("endpoint_id")
                    .col("event_seq")
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("webhook_deliveries").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("webhook_endpoints").to_owned())
            .await
    }
}
