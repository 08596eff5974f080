//! Accounts, users, roles, sessions, single-use tokens, the activity trail, the mail outbox and
//! server keys.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn index(name: &str, table: &str, columns: &[&str], unique: bool) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(Alias::new(table));
    for column in columns {
        statement.col(Alias::new(*column));
    }
    if unique {
        statement.unique();
    }
    statement.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenants")
                    .col(uuid("id").primary_key())
                    .col(string_len_uniq("slug", 64))
                    .col(string_len("name", 200))
                    .col(uuid_null("owner_user_id"))
                    .col(boolean("require_two_factor").default(false))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(string_len("email", 254))
                    .col(string_len("username", 254))
                    .col(string_len("first_name", 100))
                    .col(string_len("last_name", 100))
                    .col(string_len("status", 32))
                    .col(text_null("password_hash"))
                    .col(boolean("password_change_required").default(false))
                    // Access tokens issued before this instant are refused (revokes every session).
                    .col(timestamp_with_time_zone_null("tokens_valid_after"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("last_login_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("users", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "users_tenant_email",
                "users",
                &["tenant_id", "email"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "users_tenant_username",
                "users",
                &["tenant_id", "username"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "users_tenant_id",
                "users",
                &["tenant_id", "id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("user_roles")
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("role", 64))
                    .primary_key(Index::create().col("tenant_id").col("user_id").col("role"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("user_roles", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "user_roles_tenant_role",
                "user_roles",
                &["tenant_id", "role", "user_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("sessions")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("refresh_token_hash", 64))
                    .col(string_len_null("previous_refresh_token_hash", 64))
                    .col(string_len_null("client_address", 64))
                    .col(string_len_null("user_agent", 512))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("last_used_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .col(string_len_null("revoked_reason", 64))
                    .foreign_key(
                        ForeignKey::create()
                            .from("sessions", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "sessions_tenant_user",
                "sessions",
                &["tenant_id", "user_id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "sessions_revoked_at",
                "sessions",
                &["revoked_at"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("action_tokens")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("purpose", 32))
                    .col(string_len_uniq("token_hash", 64))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("used_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("action_tokens", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "action_tokens_tenant_user",
                "action_tokens",
                &["tenant_id", "user_id", "purpose"],
                false,
            ))
            .await?;

        // No foreign keys: the trail outlives the users it names.
        manager
            .create_table(
                Table::create()
                    .table("activity")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(uuid_null("actor_user_id"))
                    .col(string_len("action", 64))
                    .col(string_len_null("target_type", 32))
                    .col(uuid_null("target_id"))
                    .col(string_len_null("client_address", 64))
                    .col(string_len_null("user_agent", 512))
                    .col(text("details"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "activity_tenant_id",
                "activity",
                &["tenant_id", "id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "activity_tenant_target",
                "activity",
                &["tenant_id", "target_id", "id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "activity_tenant_actor",
                "activity",
                &["tenant_id", "actor_user_id", "id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("outbox")
                    .col(uuid("id").primary_key())
                    .col(uuid_null("tenant_id"))
                    .col(string_len("recipient", 254))
                    .col(string_len("subject", 300))
                    .col(text("body"))
                    .col(integer("attempts").default(0))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(timestamp_with_time_zone_null("sent_at"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "outbox_pending",
                "outbox",
                &["sent_at", "next_attempt_at"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("server_keys")
                    .col(string_len("name", 64).primary_key())
                    .col(text("secret"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "server_keys",
            "outbox",
            "activity",
            "action_tokens",
            "sessions",
            "user_roles",
            "users",
            "tenants",
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
