//! Whether a user's email address is confirmed, and a self-service change of address waiting for
//! the new address to confirm it. A user who never confirmed stays PENDING_CONFIRMATION through a
//! deactivation and reactivation, and no password-reset link goes to an unconfirmed address.
//!
//! Users who logged in once, or are ACTIVE or LOCKED, confirmed their address: the activation
//! link was the only way there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new("email_verified_at")
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new("pending_email").string().null().to_owned(),
        ] {
            manager
                .alter_table(Table::alter().table("users").add_column(column).to_owned())
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE users SET email_verified_at = COALESCE(last_login_at, updated_at) \
                 WHERE status IN ('ACTIVE', 'LOCKED') OR last_login_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["email_verified_at", "pending_email"] {
            manager
                .alter_table(Table::alter().table("users").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
