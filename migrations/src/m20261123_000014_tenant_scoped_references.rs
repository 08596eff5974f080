//! The tables that hang off a user (roles, sessions, tokens, memberships ...) and the members of
//! a team now reference their parent by `(tenant_id, id)` instead of `id` alone.
//!
//! Deleting a user makes the database delete the rows that reference it. With a reference by
//! `user_id` alone, finding them needs an index that starts with `user_id`, and none does (every
//! key here starts with `tenant_id`), so each deleted user cost a scan of `user_roles`: about
//! 80 ms per user in an account of a million, hours for a mass delete. By `(tenant_id, user_id)`
//! the lookup is a prefix of the keys the tables already have. It also makes the database refuse
//! a row that points at another tenant's user.
//!
//! The parents' `(tenant_id, id)` indexes become unique (they always were, `id` being the
//! primary key), as a reference needs. SQLite cannot change a table's constraints, so there each
//! table is rebuilt from its own definition with the reference replaced, as its manual says.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{DbBackend, Statement},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables that reference a user.
const USER_CHILDREN: [&str; 8] = [
    "user_roles",
    "sessions",
    "action_tokens",
    "team_members",
    "user_tags",
    "two_factor",
    "backup_codes",
    "user_lockouts",
];

/// A reference by id alone, and the same reference scoped by tenant.
struct Reference {
    column: &'static str,
    parent: &'static str,
}

impl Reference {
    const USER: Reference = Reference {
        column: "user_id",
        parent: "users",
    };
    const TEAM: Reference = Reference {
        column: "team_id",
        parent: "teams",
    };

    fn by_id(&self) -> String {
        format!(
            r#"FOREIGN KEY ("{}") REFERENCES "{}" ("id")"#,
            self.column, self.parent
        )
    }

    fn by_tenant_and_id(&self) -> String {
        format!(
            r#"FOREIGN KEY ("tenant_id", "{}") REFERENCES "{}" ("tenant_id", "id")"#,
            self.column, self.parent
        )
    }

    /// PostgreSQL's name for the reference (the same before and after).
    fn constraint(&self, table: &str) -> String {
        format!("{table}_{}_fkey", self.column)
    }
}

/// Each table's references to change.
fn references() -> Vec<(&'static str, Vec<Reference>)> {
    USER_CHILDREN
        .into_iter()
        .map(|table| {
            let mut references = vec![Reference::USER];
            if table == "team_members" {
                references.push(Reference::TEAM);
            }
            (table, references)
        })
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// On SQLite too: a table half rebuilt must not be left behind, and every statement has to
    /// run on the one connection that sees the previous ones.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_parent_keys_unique(manager, true).await?;
        for (table, references) in references() {
            let changes: Vec<(String, String)> = references
                .iter()
                .map(|r| (r.by_id(), r.by_tenant_and_id()))
                .collect();
            change_references(manager, table, &references, &changes).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, references) in references() {
            let changes: Vec<(String, String)> = references
                .iter()
                .map(|r| (r.by_tenant_and_id(), r.by_id()))
                .collect();
            change_references(manager, table, &references, &changes).await?;
        }
        set_parent_keys_unique(manager, false).await
    }
}

/// Makes `users (tenant_id, id)` and `teams (tenant_id, id)` unique indexes, or plain ones again.
async fn set_parent_keys_unique(manager: &SchemaManager<'_>, unique: bool) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let kind = if unique { "UNIQUE INDEX" } else { "INDEX" };
    for table in ["users", "teams"] {
        db.execute_unprepared(&format!(r#"DROP INDEX "{table}_tenant_id""#))
            .await?;
        db.execute_unprepared(&format!(
            r#"CREATE {kind} "{table}_tenant_id" ON "{table}" ("tenant_id", "id")"#
        ))
        .await?;
    }
    Ok(())
}

/// Replaces each `(from, to)` reference clause of `table`.
async fn change_references(
    manager: &SchemaManager<'_>,
    table: &str,
    references: &[Reference],
    changes: &[(String, String)],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    match manager.get_database_backend() {
        DbBackend::Sqlite => {
            let definition = sqlite_definition(manager, "table", table).await?;
            let rebuilt = format!("{table}_rebuilt");
            let mut sql = definition
                .into_iter()
                .next()
                .ok_or_else(|| DbErr::Migration(format!("table {table} is not in the schema")))?;
            sql = sql.replacen(
                &format!(r#"CREATE TABLE "{table}""#),
                &format!(r#"CREATE TABLE "{rebuilt}""#),
                1,
            );
            for (from, to) in changes {
                if !sql.contains(from.as_str()) {
                    return Err(DbErr::Migration(format!(
                        "table {table}: expected {from} in its definition"
                    )));
                }
                sql = sql.replace(from.as_str(), to);
            }
            let indexes = sqlite_definition(manager, "index", table).await?;
            db.execute_unprepared(&sql).await?;
            db.execute_unprepared(&format!(
                r#"INSERT INTO "{rebuilt}" SELECT * FROM "{table}""#
            ))
            .await?;
            db.execute_unprepared(&format!(r#"DROP TABLE "{table}""#))
                .await?;
            db.execute_unprepared(&format!(r#"ALTER TABLE "{rebuilt}" RENAME TO "{table}""#))
                .await?;
            for index in indexes {
                db.execute_unprepared(&index).await?;
            }
        }
        _ => {
            for (reference, (_, to)) in references.iter().zip(changes) {
                let name = reference.constraint(table);
                db.execute_unprepared(&format!(
                    r#"ALTER TABLE "{table}" DROP CONSTRAINT "{name}", ADD CONSTRAINT "{name}" {to} ON DELETE CASCADE"#
                ))
                .await?;
            }
        }
    }
    Ok(())
}

/// The SQL that made the table, or the indexes of the table (not those SQLite makes itself).
async fn sqlite_definition(
    manager: &SchemaManager<'_>,
    kind: &str,
    table: &str,
) -> Result<Vec<String>, DbErr> {
    let rows = manager
        .get_connection()
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = ? AND tbl_name = ? AND sql IS NOT NULL",
            [kind.into(), table.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect()
}
