//! Dialer profiles, write-only profile secrets, token generations and list indexes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            text_null("dialer_profile"),
            text_null("caldav_token"),
            text_null("pbx_password"),
            big_integer("token_generation").default(0).to_owned(),
        ] {
            manager
                .alter_table(Table::alter().table("users").add_column(column).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("users_tenant_last_name")
                    .table("users")
                    .col("tenant_id")
                    .col("last_name")
                    .col("id")
                    .to_owned(),
            )
            .await?;
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in ["users_tenant_status", "users_tenant_last_name"] {
            manager
                .drop_index(Index::drop().name(index).table("users").to_owned())
                .await?;
        }
        for column in [
            "token_generation",
            "pbx_password",
            "caldav_token",
            "dialer_profile",
        ] {
            manager
                .alter_table(Table::alter().table("users").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
