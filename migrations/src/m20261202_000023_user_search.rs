//! Search that uses an index. `users.search_text` holds what ListUsers' text query matches, each
//! part between two unit separators (U+001F): `\x1f first \x1f last \x1f email \x1f username
//! \x1f`, names lower-cased by Rust's full Unicode rules (`str::to_lowercase`, the same as the
//! query's), so matching does not depend on the database's locale (PostgreSQL's `lower()` under
//! the C locale, and SQLite's, fold ASCII only). Contains is `LIKE '%q%'`, prefix
//! `LIKE '%\x1fq%'`, exact `LIKE '%\x1fq\x1f%'`: a query never holds the separator, so a match
//! never spans two parts. PostgreSQL answers them from a `pg_trgm` GIN index (the extension is
//! trusted: the database owner may create it). The column is written with every change of a
//! user's names, email or username (`store::users`); here it is filled for existing users.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DbBackend, Statement, Value},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Rows filled per statement.
const BATCH: u64 = 5_000;

/// The stored search text of a user (`model::user::search_text` is the same; a unit test of the
/// server checks that they agree).
pub fn search_text(first_name: &str, last_name: &str, email: &str, username: &str) -> String {
    let mut text = String::with_capacity(
        first_name.len() + last_name.len() + email.len() + username.len() + 5,
    );
    for part in [first_name, last_name, email, username] {
        text.push('\u{1f}');
        text.extend(
            part.chars()
                .filter(|c| *c != '\u{1f}')
                .flat_map(char::to_lowercase),
        );
    }
    text.push('\u{1f}');
    text
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let postgres = manager.get_database_backend() == DbBackend::Postgres;
        if postgres {
            db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                .await
                .map_err(|err| {
                    DbErr::Migration(format!(
                        "the search index needs the pg_trgm extension (PostgreSQL contrib): {err}"
                    ))
                })?;
        }
        db.execute_unprepared("ALTER TABLE users ADD COLUMN search_text TEXT NOT NULL DEFAULT ''")
            .await?;
        let backend = manager.get_database_backend();
        let mut after: Option<uuid::Uuid> = None;
        loop {
            let (sql, values): (&str, Vec<Value>) = match (after, postgres) {
                (None, _) => (
                    "SELECT id, first_name, last_name, email, username FROM users ORDER BY id LIMIT $1",
                    vec![(BATCH as i64).into()],
                ),
                (Some(after), _) => (
                    "SELECT id, first_name, last_name, email, username FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                    vec![after.into(), (BATCH as i64).into()],
                ),
            };
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut texts = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: uuid::Uuid = row.try_get_by_index(0)?;
                let parts: [String; 4] = [
                    row.try_get_by_index(1)?,
                    row.try_get_by_index(2)?,
                    row.try_get_by_index(3)?,
                    row.try_get_by_index(4)?,
                ];
                ids.push(id);
                texts.push(search_text(&parts[0], &parts[1], &parts[2], &parts[3]));
            }
            after = ids.last().copied();
            if postgres {
                db.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "UPDATE users SET search_text = v.text FROM unnest($1::uuid[], $2::text[]) \
                     AS v(id, text) WHERE users.id = v.id",
                    [ids.into(), texts.into()],
                ))
                .await?;
            } else {
                for (id, text) in ids.into_iter().zip(texts) {
                    db.execute_raw(Statement::from_sql_and_values(
                        backend,
                        "UPDATE users SET search_text = $1 WHERE id = $2",
                        [text.into(), id.into()],
                    ))
                    .await?;
                }
            }
        }
        if postgres {
            // Contains: trigrams. Exact and prefix: a btree per part (text_pattern_ops serves
            // both `=` and `LIKE 'q%'`), where trigrams shared by every row of an account (its
            // mail domain) would make the trigram index read most of its lists. None of these
            // columns changes in a mass status update, which stays in place (HOT, see 000011).
            for statement in [
                "CREATE INDEX users_search_trgm ON users USING gin (search_text gin_trgm_ops)",
                "CREATE INDEX users_search_first ON users \
                 (tenant_id, split_part(search_text, chr(31), 2) text_pattern_ops)",
                "CREATE INDEX users_search_last ON users \
                 (tenant_id, split_part(search_text, chr(31), 3) text_pattern_ops)",
                "CREATE INDEX users_search_email ON users (tenant_id, email text_pattern_ops)",
                "CREATE INDEX users_search_username ON users (tenant_id, username text_pattern_ops)",
            ] {
                db.execute_unprepared(statement).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            for index in [
                "users_search_trgm",
                "users_search_first",
                "users_search_last",
                "users_search_email",
                "users_search_username",
            ] {
                db.execute_unprepared(&format!("DROP INDEX IF EXISTS {index}"))
                    .await?;
            }
        }
        db.execute_unprepared("ALTER TABLE users DROP COLUMN search_text")
            .await?;
        Ok(())
    }
}
