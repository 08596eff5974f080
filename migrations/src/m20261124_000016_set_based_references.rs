//! On PostgreSQL, the references to a user (and from a user to their account) are checked and
//! followed once per statement instead of once per row.
//!
//! A foreign key is a pair of row triggers: each row written checks its parent with a query of
//! its own and locks it (`FOR KEY SHARE`, a write to the parent's page and to the WAL), and each
//! parent deleted runs a `DELETE` on every child table. On the 1,000,000-user account, measured
//! in psql on 100,000 users:
//! - inserting the users took 3.2-3.7 s, 1.9 s without the check of their account per row;
//! - inserting their roles took 2.0 s, 0.9 s with one check of the whole statement;
//! - deleting them took 11.5 s, of which 10.8 s went to the eight per-row cascades, and 2.2 s
//!   with one `DELETE ... USING` per child table.
//!
//! So each reference becomes statement triggers over transition tables, with the same meaning:
//! - A statement that writes rows naming users checks them all in one anti-join against `users`
//!   and fails with `foreign_key_violation` (SQLSTATE 23503, the same constraint name) when one
//!   is missing: a row filed under another account's user is still refused.
//! - A statement that deletes users deletes the rows that name them, table by table.
//! - The keys of a reference cannot change (no code changes them; a foreign key would refuse it).
//!
//! What the per-row lock did (a user cannot be deleted between the check of a row naming them
//! and its commit) is kept two ways, by the size of the statement:
//! - Up to `ROW_LOCKS_UP_TO` rows (a login's session, a user's roles): the users named are locked
//!   `FOR KEY SHARE` in one statement, as the foreign key locked them one by one.
//! - Above (an import's chunk, a mass assignment): an advisory lock on the account, shared, taken
//!   in memory instead of written to every user's row.
//!
//! A deletion of users waits for both: for the row locks as it deletes, for the advisory lock
//! (taken exclusively) before its trigger deletes the rows naming the users. Each statement of
//! the trigger reads what committed before it (READ COMMITTED), so the rows of a writer it
//! waited for go too; a writer that waited for a deletion finds the user gone and fails. roster
//! deletes users through one function, which takes the exclusive lock before deleting any row,
//! so that it never holds a user's row while it waits for a large writer that might be waiting
//! for that row. A login is never queued behind a deletion waiting for an import: small
//! statements do not take the advisory lock.
//!
//! `users` keeps its per-statement check of the account with a real row lock: it is one account
//! per statement, not one per row.
//!
//! SQLite keeps its foreign keys: its checks are cheap lookups inside the process.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables that name a user by `(tenant_id, user_id)` (as migration 000014 left them: a
/// migration states the schema it changes, and keeps stating it when later ones change it again).
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

/// The functions shared by the triggers.
const FUNCTIONS: &str = r#"
-- The lock that orders the deletion of an account's users after the writes naming them. The
-- first key is roster's class of advisory locks ("rost"), the second the account.
CREATE FUNCTION roster_lock_users_of(account uuid, exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(1919906676, hashtext(account::text));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1919906676, hashtext(account::text));
    END IF;
END $$;

-- After a statement wrote rows naming users: every user named exists in the row's account.
CREATE FUNCTION roster_check_user_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    account uuid;
    missing_account uuid;
    missing_user uuid;
BEGIN
    IF (SELECT count(*) FROM new_rows) <= ROW_LOCKS_UP_TO THEN
        PERFORM FROM users u
            WHERE (u.tenant_id, u.id) IN (SELECT tenant_id, user_id FROM new_rows)
            ORDER BY u.tenant_id, u.id FOR KEY SHARE OF u;
    ELSE
        FOR account IN SELECT DISTINCT tenant_id FROM new_rows ORDER BY 1 LOOP
            PERFORM roster_lock_users_of(account, false);
        END LOOP;
    END IF;
    -- EXECUTE plans with the statement's real row count (a cached plan would keep the first's).
    EXECUTE 'SELECT n.tenant_id, n.user_id FROM new_rows n WHERE NOT EXISTS '
            '(SELECT FROM users u WHERE u.tenant_id = n.tenant_id AND u.id = n.user_id) LIMIT 1'
        INTO missing_account, missing_user;
    IF missing_user IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%_user_id_fkey"',
                TG_TABLE_NAME, TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (tenant_id, user_id)=(%s, %s) is not present in table "users".',
                                  missing_account, missing_user),
                  TABLE = TG_TABLE_NAME,
                  CONSTRAINT = TG_TABLE_NAME || '_user_id_fkey';
    END IF;
    RETURN NULL;
END $$;

-- After a statement wrote users: every account named exists, and stays until the commit.
CREATE FUNCTION roster_check_user_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    PERFORM FROM tenants t WHERE t.id IN (SELECT DISTINCT tenant_id FROM new_rows)
        ORDER BY t.id FOR KEY SHARE;
    SELECT n.tenant_id INTO missing FROM (SELECT DISTINCT tenant_id FROM new_rows) n
        WHERE NOT EXISTS (SELECT FROM tenants t WHERE t.id = n.tenant_id) LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "users" violates foreign key constraint "users_tenant_id_fkey"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (tenant_id)=(%s) is not present in table "tenants".', missing),
                  TABLE = 'users',
                  CONSTRAINT = 'users_tenant_id_fkey';
    END IF;
    RETURN NULL;
END $$;

-- After a statement deleted accounts: their users go (and with them the rows naming them).
CREATE FUNCTION roster_delete_account_users() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM users u USING old_rows o WHERE u.tenant_id = o.id;
    RETURN NULL;
END $$;

-- Before a row's reference would change: refused, as a foreign key would refuse it.
CREATE FUNCTION roster_refuse_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the key of a row of table "%" does not change', TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
END $$;
"#;

/// After a statement deleted users: the rows naming them go, one statement per table.
fn delete_user_rows_function() -> String {
    let deletes: String = USER_CHILDREN
        .iter()
        .map(|table| {
            format!(
                "    EXECUTE 'DELETE FROM {table} c USING old_rows o \
                 WHERE c.tenant_id = o.tenant_id AND c.user_id = o.id';\n"
            )
        })
        .collect();
    format!(
        r#"
CREATE FUNCTION roster_delete_user_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    account uuid;
BEGIN
    FOR account IN SELECT DISTINCT tenant_id FROM old_rows ORDER BY 1 LOOP
        PERFORM roster_lock_users_of(account, true);
    END LOOP;
{deletes}    RETURN NULL;
END $$;
"#
    )
}

/// A row trigger that refuses a change of `columns` (it fires only when they are set).
fn keys_fixed(table: &str, columns: [&str; 2]) -> String {
    let [first, second] = columns;
    format!(
        "CREATE TRIGGER {table}_keys_fixed BEFORE UPDATE OF {first}, {second} ON {table} \
         FOR EACH ROW WHEN (OLD.{first} IS DISTINCT FROM NEW.{first} \
         OR OLD.{second} IS DISTINCT FROM NEW.{second}) \
         EXECUTE FUNCTION roster_refuse_key_change()"
    )
}

/// The largest statement whose users are locked row by row (see the module's comment).
const ROW_LOCKS_UP_TO: u32 = 1_000;

fn up_statements() -> Vec<String> {
    let functions = FUNCTIONS.replace("ROW_LOCKS_UP_TO", &ROW_LOCKS_UP_TO.to_string());
    let mut statements = vec![functions, delete_user_rows_function()];
    for table in USER_CHILDREN {
        statements.push(format!(
            "ALTER TABLE {table} DROP CONSTRAINT {table}_user_id_fkey"
        ));
        statements.push(format!(
            "CREATE TRIGGER {table}_user_exists AFTER INSERT ON {table} \
             REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
             EXECUTE FUNCTION roster_check_user_references()"
        ));
        statements.push(keys_fixed(table, ["tenant_id", "user_id"]));
    }
    statements.extend([
        "ALTER TABLE users DROP CONSTRAINT users_tenant_id_fkey".to_owned(),
        "CREATE TRIGGER users_account_exists AFTER INSERT ON users \
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION roster_check_user_accounts()"
            .to_owned(),
        "CREATE TRIGGER users_delete_rows AFTER DELETE ON users \
         REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION roster_delete_user_rows()"
            .to_owned(),
        keys_fixed("users", ["tenant_id", "id"]),
        "CREATE TRIGGER tenants_delete_users AFTER DELETE ON tenants \
         REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION roster_delete_account_users()"
            .to_owned(),
        "CREATE TRIGGER tenants_keys_fixed BEFORE UPDATE OF id ON tenants FOR EACH ROW \
         WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION roster_refuse_key_change()"
            .to_owned(),
    ]);
    statements
}

fn down_statements() -> Vec<String> {
    let mut statements = vec![
        "DROP TRIGGER tenants_keys_fixed ON tenants".to_owned(),
        "DROP TRIGGER tenants_delete_users ON tenants".to_owned(),
        "DROP TRIGGER users_keys_fixed ON users".to_owned(),
        "DROP TRIGGER users_delete_rows ON users".to_owned(),
        "DROP TRIGGER users_account_exists ON users".to_owned(),
        "ALTER TABLE users ADD CONSTRAINT users_tenant_id_fkey FOREIGN KEY (tenant_id) \
         REFERENCES tenants (id) ON DELETE CASCADE"
            .to_owned(),
    ];
    for table in USER_CHILDREN {
        statements.push(format!("DROP TRIGGER {table}_keys_fixed ON {table}"));
        statements.push(format!("DROP TRIGGER {table}_user_exists ON {table}"));
        statements.push(format!(
            "ALTER TABLE {table} ADD CONSTRAINT {table}_user_id_fkey \
             FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE"
        ));
    }
    statements.push(
        "DROP FUNCTION roster_delete_user_rows(), roster_refuse_key_change(), \
         roster_delete_account_users(), roster_check_user_accounts(), \
         roster_check_user_references(), roster_lock_users_of(uuid, boolean)"
            .to_owned(),
    );
    statements
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, up_statements()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, down_statements()).await
    }
}

async fn run_on_postgres(
    manager: &SchemaManager<'_>,
    statements: Vec<String>,
) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(&statement).await?;
    }
    Ok(())
}
