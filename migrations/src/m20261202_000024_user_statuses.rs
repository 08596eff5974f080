//! A status filter that reads only the matching users. An index on `users.status` would make
//! every mass status change rewrite each row's entries in all of the table's indexes (the status
//! would be an indexed column, so no update could stay in place; see 000011, which dropped that
//! index for this reason). Instead each user's status is also kept in `user_statuses`, a narrow
//! table indexed by (account, status, user): a mass change of 100,000 statuses updates 100,000
//! narrow rows there and leaves `users` updated in place. Triggers keep it, so no write path can
//! forget it: on PostgreSQL statement triggers with transition tables (one set-based statement
//! per change, whatever its size), on SQLite row triggers.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &[&str] = &[
    "CREATE TABLE user_statuses (tenant_id uuid NOT NULL, user_id uuid NOT NULL, \
     status text NOT NULL, PRIMARY KEY (tenant_id, user_id))",
    "CREATE INDEX user_statuses_by_status ON user_statuses (tenant_id, status, user_id)",
    "INSERT INTO user_statuses (tenant_id, user_id, status) SELECT tenant_id, id, status FROM users",
    r#"CREATE FUNCTION roster_user_statuses_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO user_statuses (tenant_id, user_id, status)
            SELECT tenant_id, id, status FROM inserted_users;
        RETURN NULL;
    END $$"#,
    r#"CREATE FUNCTION roster_user_statuses_updated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- Compared with the kept status, not with old_users: a join of the two transition
        -- tables (which have no statistics) was planned as a nested loop over both.
        UPDATE user_statuses s SET status = n.status
            FROM new_users n
            WHERE s.tenant_id = n.tenant_id AND s.user_id = n.id AND s.status <> n.status;
        RETURN NULL;
    END $$"#,
    r#"CREATE FUNCTION roster_user_statuses_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM user_statuses s USING deleted_users d
            WHERE s.tenant_id = d.tenant_id AND s.user_id = d.id;
        RETURN NULL;
    END $$"#,
    "CREATE TRIGGER users_statuses_inserted AFTER INSERT ON users \
     REFERENCING NEW TABLE AS inserted_users FOR EACH STATEMENT \
     EXECUTE FUNCTION roster_user_statuses_inserted()",
    "CREATE TRIGGER users_statuses_updated AFTER UPDATE ON users \
     REFERENCING NEW TABLE AS new_users FOR EACH STATEMENT \
     EXECUTE FUNCTION roster_user_statuses_updated()",
    "CREATE TRIGGER users_statuses_deleted AFTER DELETE ON users \
     REFERENCING OLD TABLE AS deleted_users FOR EACH STATEMENT \
     EXECUTE FUNCTION roster_user_statuses_deleted()",
];

const SQLITE: &[&str] = &[
    "CREATE TABLE user_statuses (tenant_id uuid_text NOT NULL, user_id uuid_text NOT NULL, \
     status text NOT NULL, PRIMARY KEY (tenant_id, user_id))",
    "CREATE INDEX user_statuses_by_status ON user_statuses (tenant_id, status, user_id)",
    "INSERT INTO user_statuses (tenant_id, user_id, status) SELECT tenant_id, id, status FROM users",
    "CREATE TRIGGER users_statuses_inserted AFTER INSERT ON users BEGIN \
     INSERT INTO user_statuses (tenant_id, user_id, status) \
     VALUES (new.tenant_id, new.id, new.status); END",
    "CREATE TRIGGER users_statuses_updated AFTER UPDATE OF status ON users \
     WHEN old.status <> new.status BEGIN \
     UPDATE user_statuses SET status = new.status \
     WHERE tenant_id = new.tenant_id AND user_id = new.id; END",
    "CREATE TRIGGER users_statuses_deleted AFTER DELETE ON users BEGIN \
     DELETE FROM user_statuses WHERE tenant_id = old.tenant_id AND user_id = old.id; END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES,
            _ => SQLITE,
        };
        for statement in statements {
            manager
                .get_connection()
                .execute_unprepared(statement)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for trigger in [
            "users_statuses_inserted",
            "users_statuses_updated",
            "users_statuses_deleted",
        ] {
            let drop = match manager.get_database_backend() {
                DbBackend::Postgres => format!("DROP TRIGGER IF EXISTS {trigger} ON users"),
                _ => format!("DROP TRIGGER IF EXISTS {trigger}"),
            };
            db.execute_unprepared(&drop).await?;
        }
        db.execute_unprepared("DROP TABLE user_statuses").await?;
        Ok(())
    }
}
