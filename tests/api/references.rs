//! The database's references to users: a deleted user leaves no row behind in any table that
//! names them, whichever way they were deleted, and a row written for a user while the user is
//! being deleted is either refused or deleted with them.
//!
//! On PostgreSQL these references are statement triggers with an advisory lock per account
//! (migration 000016), on SQLite foreign keys; the tests hold for both.

use std::time::Duration;

use roster::api::pb;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

use tonic::Code;

use crate::harness::{TestApp, authed, expect_reason, spawn_app};
use crate::teams::{add_members, team};
use crate::users_support::{
    Org, accepted, all_users, bulk, by_filter, by_ids, deactivate, delete, get, import, member,
    org, pending, reactivate, users,
};

/// The tables whose rows name a user by `(tenant_id, user_id)` and go with them.
const USER_ROWS: [&str; 8] = [
    "user_roles",
    "sessions",
    "action_tokens",
    "team_members",
    "user_tags",
    "two_factor",
    "backup_codes",
    "user_lockouts",
];

pub(crate) fn uuid(text: &str) -> Value {
    Value::from(uuid::Uuid::parse_str(text).expect("a uuid"))
}

pub(crate) fn statement(app: &TestApp, sql: &str, values: Vec<Value>) -> Statement {
    let backend = if app.postgres {
        DbBackend::Postgres
    } else {
        DbBackend::Sqlite
    };
    // The tests write PostgreSQL's `$n`; SQLite takes `?` in the same order.
    let sql = if app.postgres {
        sql.to_owned()
    } else {
        (1..=values.len())
            .rev()
            .fold(sql.to_owned(), |sql, n| sql.replace(&format!("${n}"), "?"))
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The number `sql` (a `SELECT COUNT(*)`) answers.
async fn count_of(app: &TestApp, db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> i64 {
    db.query_one_raw(statement(app, sql, values))
        .await
        .expect("count")
        .expect("a row")
        .try_get_by_index(0)
        .expect("a number")
}

/// How many rows of `table` name `user_id` of `org`.
async fn rows_naming(
    app: &TestApp,
    db: &impl ConnectionTrait,
    table: &str,
    org: &Org,
    user_id: &str,
) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1 AND user_id = $2");
    count_of(
        app,
        db,
        &sql,
        vec![uuid(&org.account.tenant_id), uuid(user_id)],
    )
    .await
}

/// Every table's rows naming `user_id`, by table, leaving out the empty ones.
async fn rows_by_table(
    app: &TestApp,
    db: &DatabaseConnection,
    org: &Org,
    user_id: &str,
) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    for table in USER_ROWS {
        let rows = rows_naming(app, db, table, org, user_id).await;
        if rows > 0 {
            found.push((table, rows));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_deletion_leaves_no_row_that_names_the_deleted_users() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let carl = member(&app, &acme, "carl@acme.test", &["ORDERS"]).await;
    let pat = pending(&app, token, "pat@acme.test", &["ORDERS"]).await;
    let sales = team(&app, token, pb::TeamKind::Team, "Sales").await;
    add_members(
        &app,
        token,
        &sales.id,
        &[&bob.user_id, &carl.user_id],
        pb::TeamRole::Member,
    )
    .await
    .expect("members");
    for user in [&bob.user_id, &carl.user_id] {
        bulk(
            &app,
            token,
            pb::BulkUpdateUsersRequest {
                selection: by_ids(&[user]),
                action: pb::BulkAction::AssignTags as i32,
                tags: vec!["vip".to_owned()],
                ..Default::default()
            },
        )
        .await
        .expect("tag");
    }
    // A failed login starts a lockout count.
    assert!(
        app.login(acme.slug(), "bob@acme.test", "Not-The-Passw0rd")
            .await
            .is_err()
    );

    let db = app.database().await;
    assert_eq!(
        rows_by_table(&app, &db, &acme, &bob.user_id).await,
        [
            ("user_roles", 1),
            ("sessions", 1),
            ("action_tokens", 1),
            ("team_members", 1),
            ("user_tags", 1),
            ("user_lockouts", 1),
        ]
    );
    assert_eq!(
        rows_by_table(&app, &db, &acme, &pat.id).await,
        [("user_roles", 1), ("action_tokens", 1)]
    );
    let carls_rows = rows_by_table(&app, &db, &acme, &carl.user_id).await;

    let response = bulk(
        &app,
        token,
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&bob.user_id, &pat.id]),
            action: pb::BulkAction::Delete as i32,
            ..Default::default()
        },
    )
    .await
    .expect("delete");
    assert_eq!(response.affected, 2);
    assert_eq!(rows_by_table(&app, &db, &acme, &bob.user_id).await, []);
    assert_eq!(rows_by_table(&app, &db, &acme, &pat.id).await, []);
    assert_eq!(
        rows_by_table(&app, &db, &acme, &carl.user_id).await,
        carls_rows,
        "a user left alone keeps their rows"
    );
}

/// roster has no RPC that deletes an account, but an operator may: the account's users go with
/// it, and so does every row naming them, while another account is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_by_hand_deletes_its_users_and_their_rows() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let gus = member(&app, &globex, "gus@globex.test", &["REPORTS"]).await;
    let db = app.database().await;
    let users_of = async |org: &Org| -> i64 {
        let sql = "SELECT COUNT(*) FROM users WHERE tenant_id = $1";
        count_of(&app, &db, sql, vec![uuid(&org.account.tenant_id)]).await
    };
    assert_eq!(users_of(&acme).await, 2);
    let gus_rows = rows_by_table(&app, &db, &globex, &gus.user_id).await;
    db.execute_raw(statement(
        &app,
        "DELETE FROM tenants WHERE id = $1",
        vec![uuid(&acme.account.tenant_id)],
    ))
    .await
    .expect("delete the account");
    assert_eq!(users_of(&acme).await, 0);
    assert_eq!(rows_by_table(&app, &db, &acme, &bob.user_id).await, []);
    assert_eq!(
        rows_by_table(&app, &db, &acme, &acme.owner.user_id).await,
        []
    );
    assert_eq!(users_of(&globex).await, 2);
    assert_eq!(
        rows_by_table(&app, &db, &globex, &gus.user_id).await,
        gus_rows
    );
}

/// A row naming a user, written while the user's deletion is under way in another transaction,
/// either waits and is refused (the deletion came first) or makes the deletion wait and goes
/// with the user (the row came first). Neither order leaves a row naming nobody. A small
/// statement locks the users it names, a large one the account: both are tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_during_its_users_deletion_does_not_outlive_the_user() {
    let app = spawn_app().await;
    if !app.postgres {
        // SQLite has one writer at a time: the two transactions cannot overlap.
        return;
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    for (name, rows) in [("bob", 1), ("dan", 1_500)] {
        let first = member(&app, &acme, &format!("{name}@acme.test"), &["REPORTS"]).await;
        let second = member(&app, &acme, &format!("{name}2@acme.test"), &["REPORTS"]).await;
        write_during_deletion(&app, &acme, &first.user_id, &second.user_id, rows).await;
    }
}

/// Writes `rows` roles of `first` before its deletion commits, and of `second` after its
/// deletion began.
async fn write_during_deletion(app: &TestApp, acme: &Org, first: &str, second: &str, rows: u32) {
    let db = app.database().await;
    let add_roles = |user: &str| {
        statement(
            app,
            &format!(
                "INSERT INTO user_roles (tenant_id, user_id, role) \
                 SELECT $1, $2, 'R' || g FROM generate_series(1, {rows}) g"
            ),
            vec![uuid(&acme.account.tenant_id), uuid(user)],
        )
    };
    let delete_user = |user: &str| {
        statement(
            app,
            "DELETE FROM users WHERE tenant_id = $1 AND id = $2",
            vec![uuid(&acme.account.tenant_id), uuid(user)],
        )
    };

    // The row first: the deletion waits for its commit, then deletes it too.
    let writer = db.begin().await.expect("begin");
    writer.execute_raw(add_roles(first)).await.expect("role");
    let deletion = {
        let db = app.database().await;
        let delete = delete_user(first);
        tokio::spawn(async move {
            let tx = db.begin().await.expect("begin");
            tx.execute_raw(delete).await.expect("delete");
            tx.commit().await.expect("commit");
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !deletion.is_finished(),
        "the deletion went ahead of {rows} uncommitted rows naming the user"
    );
    writer.commit().await.expect("commit the role");
    deletion.await.expect("the deletion");
    assert_eq!(rows_naming(app, &db, "user_roles", acme, first).await, 0);

    // The deletion first: the row waits for its commit, then is refused.
    let deleter = db.begin().await.expect("begin");
    deleter
        .execute_raw(delete_user(second))
        .await
        .expect("delete");
    let write = {
        let db = app.database().await;
        let add = add_roles(second);
        tokio::spawn(async move { db.execute_raw(add).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "{rows} rows naming a user being deleted were written without waiting"
    );
    deleter.commit().await.expect("commit the deletion");
    let written = write.await.expect("the write");
    assert!(
        written
            .as_ref()
            .is_err_and(|err| err.to_string().contains("foreign key")),
        "{rows} rows naming a deleted user were accepted: {written:?}"
    );
    assert_eq!(rows_naming(app, &db, "user_roles", acme, second).await, 0);
}

/// A deletion caught in a deadlock is undone by the database, and the caller is told to try
/// again (ABORTED), not that something broke. Here another transaction holds the user's row and
/// then asks for the account's lock, which the deletion took before deleting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_caught_in_a_deadlock_is_aborted_and_changes_nothing() {
    let app = spawn_app().await;
    if !app.postgres {
        // SQLite has one writer at a time: there is no deadlock to break.
        return;
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let db = app.database().await;
    let account_and_bob = || vec![uuid(&acme.account.tenant_id), uuid(&bob.user_id)];
    let other = db.begin().await.expect("begin");
    other
        .execute_raw(statement(
            &app,
            "SELECT FROM users WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE",
            account_and_bob(),
        ))
        .await
        .expect("hold bob's row");
    let deletion = {
        let mut client = users(&app);
        let request = authed(
            pb::DeleteUserRequest {
                user_id: bob.user_id.clone(),
            },
            acme.token(),
        );
        tokio::spawn(async move { client.delete_user(request).await })
    };
    // The deletion has the account's lock once it waits for bob's row (which it locks before it
    // checks and deletes him).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = count_of(
            &app,
            &db,
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND (query LIKE 'DELETE FROM \"users\"%' OR query LIKE 'SELECT %FOR UPDATE')",
            vec![],
        )
        .await;
        if waiting == 1 {
            break;
        }
        assert!(
            !deletion.is_finished(),
            "the deletion did not wait for bob's row"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Waits for the deletion's lock, which waits for this transaction: PostgreSQL breaks the
    // cycle after a second by undoing the transaction that has waited longest, the deletion's.
    other
        .execute_raw(statement(
            &app,
            "SELECT roster_lock_users_of($1, false)",
            vec![uuid(&acme.account.tenant_id)],
        ))
        .await
        .expect("the account's lock, once the deletion is undone");
    other.commit().await.expect("commit");
    expect_reason(
        deletion.await.expect("the call"),
        Code::Aborted,
        "CONCURRENT_CHANGE",
    );
    assert!(get(&app, acme.token(), &bob.user_id).await.is_ok());
    assert!(accepted(&app, &bob.access_token).await);
}

/// Every table with a `user_id` column either is checked against `users` and emptied with them,
/// or is the role-change log, which is meant to outlive users for a while (migration 000015).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_that_names_users_is_tied_to_them() {
    let app = spawn_app().await;
    let db = app.database().await;
    let sql = if app.postgres {
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_name = 'user_id' ORDER BY 1"
    } else {
        "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND c.name = 'user_id' ORDER BY 1"
    };
    let rows = db
        .query_all_raw(statement(&app, sql, vec![]))
        .await
        .expect("tables");
    let mut tables: Vec<String> = rows
        .iter()
        .map(|row| row.try_get_by_index(0).expect("a name"))
        .collect();
    // user_statuses is kept by users' own triggers (migration 000024): see
    // `user_statuses_mirror_users_through_every_kind_of_write`.
    tables.retain(|table| table != "role_changes" && table != "user_statuses");
    let mut expected: Vec<String> = USER_ROWS.iter().map(|t| (*t).to_owned()).collect();
    expected.sort();
    assert_eq!(tables, expected);

    let count = async |sql: String| count_of(&app, &db, &sql, vec![]).await;
    let deletion = if app.postgres {
        let row = db
            .query_one_raw(statement(
                &app,
                "SELECT prosrc FROM pg_proc WHERE proname = 'roster_delete_user_rows'",
                vec![],
            ))
            .await
            .expect("the deletion's function")
            .expect("a function");
        row.try_get_by_index::<String>(0).expect("its text")
    } else {
        String::new()
    };
    for table in USER_ROWS {
        if app.postgres {
            let checks = count(format!(
                "SELECT COUNT(*) FROM pg_trigger WHERE tgname = '{table}_user_exists'"
            ))
            .await;
            assert_eq!(checks, 1, "{table} is not checked against users");
            assert!(
                deletion.contains(&format!("DELETE FROM {table} ")),
                "{table} is not emptied with the users"
            );
        } else {
            let references = count(format!(
                "SELECT COUNT(DISTINCT id) FROM pragma_foreign_key_list('{table}') \
                 WHERE \"table\" = 'users' AND on_delete = 'CASCADE'"
            ))
            .await;
            assert_eq!(references, 1, "{table} does not reference users");
        }
    }
}

/// Every user has exactly one row in `user_statuses`, with their status, whatever wrote it:
/// sign-up, CreateUser, an import, single and mass status changes, deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_statuses_mirror_users_through_every_kind_of_write() {
    let app = spawn_app().await;
    let db = app.database().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let other = org(&app, "Other", "olga@other.test").await;
    let mirrored = async || {
        let users = count_of(&app, &db, "SELECT COUNT(*) FROM users", vec![]).await;
        let statuses = count_of(&app, &db, "SELECT COUNT(*) FROM user_statuses", vec![]).await;
        let same = count_of(
            &app,
            &db,
            "SELECT COUNT(*) FROM users u JOIN user_statuses s \
             ON s.tenant_id = u.tenant_id AND s.user_id = u.id AND s.status = u.status",
            vec![],
        )
        .await;
        assert_eq!(
            (statuses, same),
            (users, users),
            "user_statuses drifted from users"
        );
        users
    };
    assert_eq!(mirrored().await, 2);
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let carol = pending(&app, acme.token(), "carol@acme.test", &["REPORTS"]).await;
    pending(&app, other.token(), "oscar@other.test", &["REPORTS"]).await;
    let csv = "email,first_name,last_name,roles\n\
               i1@acme.test,I,One,REPORTS\n\
               i2@acme.test,I,Two,REPORTS\n";
    import(&app, acme.token(), csv, 1 << 20, Default::default())
        .await
        .expect("import");
    assert_eq!(mirrored().await, 7);
    deactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("deactivate");
    mirrored().await;
    reactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("reactivate");
    mirrored().await;
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: all_users(),
            action: pb::BulkAction::Deactivate as i32,
            ..Default::default()
        },
    )
    .await
    .expect("mass deactivation");
    mirrored().await;
    let inactive = pb::UserFilter {
        statuses: vec![pb::UserStatus::Inactive as i32],
        ..Default::default()
    };
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_filter(inactive),
            action: pb::BulkAction::Activate as i32,
            ..Default::default()
        },
    )
    .await
    .expect("mass activation");
    mirrored().await;
    delete(&app, acme.token(), &carol.id).await.expect("delete");
    assert_eq!(mirrored().await, 6);
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&bob.user_id]),
            action: pb::BulkAction::Delete as i32,
            ..Default::default()
        },
    )
    .await
    .expect("mass deletion");
    assert_eq!(mirrored().await, 5);
}
