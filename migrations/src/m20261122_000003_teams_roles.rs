//! Teams (and departments, desks, skill groups, spaces) with a role per membership, user tags,
//! custom roles, and the instant a user's roles last changed.

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
                    .table("teams")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(string_len("kind", 32))
                    .col(string_len("name", 200))
                    .col(string_len("description", 1000).default(""))
                    .col(uuid_null("space_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("teams", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "teams_tenant_kind_name",
                "teams",
                &["tenant_id", "kind", "name"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "teams_tenant_id",
                "teams",
                &["tenant_id", "id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("team_members")
                    .col(uuid("tenant_id"))
                    .col(uuid("team_id"))
                    .col(uuid("user_id"))
                    .col(string_len("role", 64))
                    .col(timestamp_with_time_zone("added_at"))
                    .primary_key(
                        Index::create()
                            .col("tenant_id")
                            .col("team_id")
                            .col("user_id"),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("team_members", "team_id")
                            .to("teams", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from("team_members", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "team_members_tenant_user",
                "team_members",
                &["tenant_id", "user_id", "team_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("user_tags")
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("tag", 64))
                    .primary_key(Index::create().col("tenant_id").col("user_id").col("tag"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("user_tags", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "user_tags_tenant_tag",
                "user_tags",
                &["tenant_id", "tag", "user_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("roles")
                    .col(uuid("id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(string_len("key", 64))
                    .col(string_len("name", 100))
                    .col(string_len("scope", 16))
                    .col(text("permissions"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("roles", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "roles_tenant_key",
                "roles",
                &["tenant_id", "key"],
                true,
            ))
            .await?;

        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .add_column(timestamp_with_time_zone_null("roles_changed_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .drop_column("roles_changed_at")
                    .to_owned(),
            )
            .await?;
        for table in ["roles", "user_tags", "team_members", "teams"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
