//! Two-factor authentication (TOTP enrolments and hashed backup codes), failed-login counters for
//! the lockout, and the indexes that session and activity listings page through.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn index(name: &str, table: &str, columns: &[&str]) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(Alias::new(table));
    for column in columns {
        statement.col(Alias::new(*column));
    }
    statement.to_owned()
}

fn user_fk(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, "user_id")
        .to("users", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One TOTP enrolment per user: pending until confirmed with a first code. The secret is
        // stored sealed (AES-256-GCM, see src/domain/two_factor.rs); `last_used_step` refuses a
        // code a second time.
        manager
            .create_table(
                Table::create()
                    .table("two_factor")
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(text("secret"))
                    .col(timestamp_with_time_zone_null("confirmed_at"))
                    .col(big_integer_null("last_used_step"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("tenant_id").col("user_id"))
                    .foreign_key(&mut user_fk("two_factor"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("backup_codes")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("code_hash", 64))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("used_at"))
                    .foreign_key(&mut user_fk("backup_codes"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "backup_codes_tenant_user",
                "backup_codes",
                &["tenant_id", "user_id", "code_hash"],
            ))
            .await?;
        // Failed password and second-factor attempts since the last success.
        manager
            .create_table(
                Table::create()
                    .table("user_lockouts")
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(integer("failed_attempts").default(0))
                    .col(timestamp_with_time_zone_null("last_failed_at"))
                    .col(timestamp_with_time_zone_null("locked_until"))
                    .primary_key(Index::create().col("tenant_id").col("user_id"))
                    .foreign_key(&mut user_fk("user_lockouts"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "sessions_tenant_id",
                "sessions",
                &["tenant_id", "id"],
            ))
            .await?;
        manager
            .create_index(index(
                "activity_tenant_action",
                "activity",
                &["tenant_id", "action", "id"],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("activity_tenant_action")
                    .table("activity")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("sessions_tenant_id")
                    .table("sessions")
                    .to_owned(),
            )
            .await?;
        for table in ["user_lockouts", "backup_codes", "two_factor"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
