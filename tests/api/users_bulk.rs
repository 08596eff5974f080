//! `roster.v1.UserService` in bulk: ImportUsers (a client stream of CSV chunks) and
//! BulkUpdateUsers (mass actions on selected users, on a filter, or on everyone).

use roster::api::pb;
use sea_orm::{ConnectionTrait, TransactionTrait};
use std::time::Duration;

use tonic::Code;

use crate::harness::{
    PASSWORD, TestApp, expect_bad_fields, expect_code, expect_reason, header, spawn_app,
    token_from_mail,
};
use crate::users_support::{
    ImportOptions, Org, Session, accepted, activate, all_users, bulk, by_filter, by_ids, count,
    emails, flush_mail, get, import, import_errors, list_all, login, member, org, pending,
    principal, query, roles, skips, token_follows_roles,
};

fn errors(expected: &[(i64, &str)]) -> Vec<(i64, String)> {
    expected
        .iter()
        .map(|(l, c)| (*l, (*c).to_owned()))
        .collect()
}

// ------------------------------------------------------------------------------ ImportUsers

/// Three good rows (lines 2, 7, 8) and four bad ones (lines 3 to 6).
const MIXED: &str = "\
email,first_name,last_name,roles,password,timezone
ann.a@acme.test,Ann,Able,REPORTS;ORDERS,,Europe/Berlin
not-an-email,Bad,Email,REPORTS,,
bea@acme.test,Bea,Bee,REPORTS,,Mars/Olympus
cid@acme.test,Cid,Sea,KING,,
dan@acme.test,Dan,Dee,ORDERS,weak,
eve@acme.test,Eve,Eve,TECH_CONFIG,,
fay@acme.test,Fay,Eff,FINANCE,Corr3ct-Horse-Battery,
";

/// Rows are inserted in chunks while the rest of the file is read: a bad row, or a login taken
/// in the account, after the first chunks still leaves nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_late_in_a_large_file_undoes_the_rows_already_inserted() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;
    let good_rows = 45_000;
    let file = |last: &str| {
        let mut csv = String::from("email,first_name,last_name,roles\n");
        for i in 0..good_rows {
            csv.push_str(&format!("r{i}@acme.test,Row,Number{i},REPORTS\n"));
        }
        csv.push_str(last);
        csv
    };
    let no_mail = ImportOptions {
        suppress_emails: true,
        ..Default::default()
    };
    let last_line = good_rows as i64 + 2;

    let report = import(
        &app,
        acme.token(),
        &file("late@acme.test,Late,Row,NO_SUCH_ROLE\n"),
        1 << 20,
        no_mail,
    )
    .await
    .expect("import answers");
    assert_eq!((report.created, report.invalid), (0, 1));
    assert_eq!(
        import_errors(&report),
        vec![(last_line, "roles".to_owned())]
    );
    assert_eq!(count(&app, acme.token()).await, before);

    let report = import(
        &app,
        acme.token(),
        &file("ann@acme.test,Ann,Again,REPORTS\n"),
        1 << 20,
        no_mail,
    )
    .await
    .expect("import answers");
    assert_eq!((report.created, report.invalid), (0, 1));
    assert_eq!(
        import_errors(&report),
        vec![(last_line, "email".to_owned())]
    );
    assert_eq!(count(&app, acme.token()).await, before);

    let report = import(
        &app,
        acme.token(),
        &file("late@acme.test,Late,Row,NO_SUCH_ROLE\n"),
        1 << 20,
        ImportOptions {
            skip_invalid_rows: true,
            ..no_mail
        },
    )
    .await
    .expect("import answers");
    assert_eq!((report.created, report.invalid), (good_rows as i64, 1));
    assert_eq!(count(&app, acme.token()).await, before + good_rows as i64);
    // On PostgreSQL two transactions wrote it; the record of the second is gone with the first's
    // commit.
    assert_eq!(import_parts(&app).await, 0);
}

/// The rows of `import_parts` (see `domain::import::write`); none on SQLite, where no import
/// writes any.
async fn import_parts(app: &TestApp) -> i64 {
    let row = app
        .database()
        .await
        .query_one_raw(crate::references::statement(
            app,
            "SELECT count(*) FROM import_parts",
            vec![],
        ))
        .await
        .expect("count import_parts")
        .expect("a row");
    row.try_get_by_index(0).expect("a count")
}

/// Skipping bad rows, a taken login in the first chunk does not stop the chunks after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_skipping_bad_rows_writes_every_chunk_after_a_taken_login() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;
    let new_rows = 6_000;
    let mut csv =
        String::from("email,first_name,last_name,roles\nann@acme.test,Ann,Again,REPORTS\n");
    for i in 0..new_rows {
        csv.push_str(&format!("s{i}@acme.test,Row,Number{i},REPORTS\n"));
    }
    let report = import(
        &app,
        acme.token(),
        &csv,
        1 << 20,
        ImportOptions {
            skip_invalid_rows: true,
            suppress_emails: true,
            ..Default::default()
        },
    )
    .await
    .expect("import answers");
    assert_eq!((report.created, report.invalid), (new_rows as i64, 1));
    assert_eq!(import_errors(&report), vec![(2, "email".to_owned())]);
    assert_eq!(count(&app, acme.token()).await, before + new_rows as i64);
    let last = format!("s{}@acme.test", new_rows - 1);
    assert_eq!(
        emails(&app, acme.token(), query(&last, pb::MatchMode::Exact)).await,
        vec![last.clone()]
    );
}

/// Two imports of the same file into one account at once (a client retrying, say): on
/// PostgreSQL each is written by two transactions, and they take turns instead of waiting for each
/// other's logins. One creates every user, the other finds every login taken and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_large_file_imported_twice_at_once_is_written_once() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;
    let rows = 6_000;
    let mut csv = String::from("email,first_name,last_name,roles\n");
    for i in 0..rows {
        csv.push_str(&format!("twice{i}@acme.test,Row,Number{i},REPORTS\n"));
    }
    let no_mail = ImportOptions {
        suppress_emails: true,
        ..Default::default()
    };
    let (first, second) = tokio::join!(
        import(&app, acme.token(), &csv, 1 << 20, no_mail),
        import(&app, acme.token(), &csv, 1 << 20, no_mail),
    );
    let mut outcomes = [first.expect("first import"), second.expect("second import")]
        .map(|report| (report.created, report.invalid));
    outcomes.sort();
    assert_eq!(outcomes, [(0, rows as i64), (rows as i64, 0)]);
    assert_eq!(count(&app, acme.token()).await, before + rows as i64);
    assert_eq!(import_parts(&app).await, 0);
}

/// On PostgreSQL, an import whose second transaction committed and whose first never did (the
/// server stopped between the two) is undone at the next start: the users named in its record
/// are deleted, unless an import of the account is writing (it holds the account's import lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stopped_between_its_two_commits_is_undone_by_the_next_server() {
    let app = spawn_app().await;
    if !app.postgres {
        return; // SQLite writes an import in one transaction: there is nothing to undo.
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let csv = "email,roles\nkept@acme.test,REPORTS\norphan1@acme.test,REPORTS\norphan2@acme.test,REPORTS\n";
    let report = import(
        &app,
        acme.token(),
        csv,
        1 << 20,
        ImportOptions {
            suppress_emails: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!(report.created, 3);
    let id_of = async |email: &str| {
        list_all(&app, acme.token(), query(email, pb::MatchMode::Exact)).await[0]
            .id
            .clone()
    };
    let orphans = [
        id_of("orphan1@acme.test").await,
        id_of("orphan2@acme.test").await,
    ];
    // The record the second transaction of an unfinished import leaves.
    let packed: Vec<u8> = orphans
        .iter()
        .flat_map(|id| *uuid::Uuid::parse_str(id).expect("a uuid").as_bytes())
        .collect();
    let db = app.database().await;
    db.execute_raw(crate::references::statement(
        &app,
        "INSERT INTO import_parts (import_id, part, tenant_id, user_ids, created_at) \
         VALUES ($1, 1, $2, $3, now())",
        vec![
            uuid::Uuid::now_v7().into(),
            crate::references::uuid(&acme.account.tenant_id),
            packed.into(),
        ],
    ))
    .await
    .expect("plant the record");
    let remaining = async |app: &TestApp, token: &str| {
        emails(app, token, query("@acme.test", pb::MatchMode::Contains)).await
    };
    let all = vec![
        "ann@acme.test".to_owned(),
        "kept@acme.test".to_owned(),
        "orphan1@acme.test".to_owned(),
        "orphan2@acme.test".to_owned(),
    ];

    // An import of the account is writing (this transaction holds its lock): the next server
    // leaves the record alone.
    let writing = db.begin().await.expect("begin");
    writing
        .execute_raw(crate::references::statement(
            &app,
            "SELECT pg_advisory_xact_lock(1919906677, hashtext($1::text))",
            vec![crate::references::uuid(&acme.account.tenant_id)],
        ))
        .await
        .expect("lock");
    let app = app.restart().await;
    let session = login(&app, &acme, "ann@acme.test", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut listed = remaining(&app, &session.access_token).await;
    listed.sort();
    assert_eq!(listed, all);
    assert_eq!(import_parts(&app).await, 1);

    writing.rollback().await.expect("unlock");
    let app = app.restart().await;
    let session = login(&app, &acme, "ann@acme.test", PASSWORD).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut listed = remaining(&app, &session.access_token).await;
        listed.sort();
        if listed == ["ann@acme.test", "kept@acme.test"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the orphans are still there: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(import_parts(&app).await, 0);
    for id in &orphans {
        expect_code(get(&app, &session.access_token, id).await, Code::NotFound);
    }
}

/// A large import refreshes PostgreSQL's statistics of the users (autovacuum would not, below a
/// tenth of the table), so that the account's next queries are planned for its new size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_refreshes_the_databases_statistics_of_the_users() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: SQLite plans without statistics; skipped on SQLite");
        return;
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let db = app.database().await;
    // Analyses asked for (not autovacuum's, which count apart), of the users and their roles.
    let analyses = || async {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT COALESCE(SUM(analyze_count), 0)::bigint AS n FROM pg_stat_user_tables \
                 WHERE relname IN ('users', 'user_roles')",
            ))
            .await
            .expect("read the statistics views")
            .expect("one row");
        row.try_get::<i64>("", "n").expect("a count")
    };
    let before = analyses().await;
    let rows = roster::domain::import::ANALYZE_AFTER_USERS;
    let mut csv = String::from("email,first_name,last_name,roles\n");
    for i in 0..rows {
        csv.push_str(&format!("s{i}@acme.test,Stat,Row{i},REPORTS\n"));
    }
    let no_mail = ImportOptions {
        suppress_emails: true,
        ..Default::default()
    };
    let report = import(&app, acme.token(), &csv, 1 << 20, no_mail)
        .await
        .expect("import answers");
    assert_eq!(report.created, rows as i64);
    let mut after = analyses().await;
    for _ in 0..100 {
        if after >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = analyses().await;
    }
    assert_eq!(after, before + 2, "users and user_roles analysed once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_bad_rows_reports_each_by_line_and_column_and_writes_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;
    // Chunks of 17 bytes split lines and cells across messages.
    let report = import(&app, acme.token(), MIXED, 17, ImportOptions::default())
        .await
        .expect("import answers");
    assert_eq!(report.rows, 7);
    assert_eq!(report.created, 0);
    assert_eq!(report.invalid, 4);
    assert!(!report.dry_run);
    assert_eq!(
        import_errors(&report),
        errors(&[(3, "email"), (4, "timezone"), (5, "roles"), (6, "password")])
    );
    assert!(report.errors.iter().all(|e| !e.message.is_empty()));
    assert_eq!(count(&app, acme.token()).await, before);

    // The same file, keeping the good rows.
    let report = import(
        &app,
        acme.token(),
        MIXED,
        17,
        ImportOptions {
            skip_invalid_rows: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!((report.rows, report.created, report.invalid), (7, 3, 4));
    assert_eq!(report.errors.len(), 4);
    assert_eq!(
        emails(&app, acme.token(), pb::UserFilter::default()).await,
        vec![
            "ann.a@acme.test",
            "ann@acme.test",
            "eve@acme.test",
            "fay@acme.test"
        ]
    );
    let ann = &list_all(
        &app,
        acme.token(),
        query("ann.a@acme.test", pb::MatchMode::Exact),
    )
    .await[0];
    assert_eq!(ann.roles, roles(&["ORDERS", "REPORTS"]));
    assert_eq!(ann.first_name, "Ann");
    assert_eq!(ann.last_name, "Able");
    assert_eq!(
        pb::UserStatus::try_from(ann.status),
        Ok(pb::UserStatus::PendingConfirmation)
    );
    assert_eq!(
        ann.dialer_profile.as_ref().expect("a profile").timezone,
        "Europe/Berlin"
    );

    // Rows without a password are invited; a row with one gets an activation link.
    for (email, subject) in [
        ("ann.a@acme.test", "invited"),
        ("eve@acme.test", "invited"),
        ("fay@acme.test", "Activate"),
    ] {
        let mail = app.latest_mail_to(email).await;
        assert!(
            header(&mail, "subject").is_some_and(|s| s.contains(subject)),
            "{email}: {mail}"
        );
    }
    let fay_token = token_from_mail(&app.latest_mail_to("fay@acme.test").await);
    activate(&app, &fay_token, "").await.expect("activate fay");
    login(&app, &acme, "fay@acme.test", PASSWORD).await;
    let eve_token = token_from_mail(&app.latest_mail_to("eve@acme.test").await);
    expect_bad_fields(activate(&app, &eve_token, "").await, &["password"]);
    activate(&app, &eve_token, "Eve-Passw0rd")
        .await
        .expect("activate eve");
    login(&app, &acme, "eve@acme.test", "Eve-Passw0rd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_import_reports_what_it_would_do_and_writes_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;
    let good = "\
email,username,first_name,last_name,roles,caller_id_name,caller_id_number,language
a1@acme.test,a1,A,One,REPORTS,Sales,+14155550123,en-US
a2@acme.test,a2,A,Two,ORDERS,,,
a3@acme.test,a3,A,Three,reports;finance,,,
";
    let report = import(
        &app,
        acme.token(),
        good,
        40,
        ImportOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry run");
    assert!(report.dry_run);
    assert_eq!((report.rows, report.created, report.invalid), (3, 0, 0));
    assert!(report.errors.is_empty());
    // A bad row is reported on a dry run too.
    let report = import(
        &app,
        acme.token(),
        &format!("{good}a4@acme.test,a4,A,Four,REPORTS,,12345,\n"),
        1000,
        ImportOptions {
            dry_run: true,
            skip_invalid_rows: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry run");
    assert_eq!((report.rows, report.created, report.invalid), (4, 0, 1));
    assert_eq!(import_errors(&report), errors(&[(5, "caller_id_number")]));
    assert_eq!(count(&app, acme.token()).await, before);
    flush_mail(&app, &acme, "marker@acme.test").await;
    assert!(app.mails_to_now("a1@acme.test").is_empty());

    // For real this time, without mails.
    let report = import(
        &app,
        acme.token(),
        good,
        64,
        ImportOptions {
            suppress_emails: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!(report.created, 3);
    let a1 = &list_all(&app, acme.token(), query("a1", pb::MatchMode::Exact)).await[0];
    let profile = a1.dialer_profile.as_ref().expect("a profile");
    assert_eq!(profile.caller_id_name, "Sales");
    assert_eq!(profile.caller_id_number, "+14155550123");
    assert_eq!(profile.language, "en-US");
    let a3 = &list_all(&app, acme.token(), query("a3", pb::MatchMode::Exact)).await[0];
    assert_eq!(a3.roles, roles(&["FINANCE", "REPORTS"]));
    flush_mail(&app, &acme, "marker2@acme.test").await;
    assert!(app.mails_to_now("a1@acme.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_bcrypt_hash_logs_the_user_in_with_their_old_password_after_activation() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let hash = bcrypt::hash("Legacy-Passw0rd", 4).expect("bcrypt");
    let csv = format!(
        "email,roles,password_hash\nold@acme.test,REPORTS,{hash}\nbad@acme.test,REPORTS,$2b$04$short\n"
    );
    let report = import(
        &app,
        acme.token(),
        &csv,
        25,
        ImportOptions {
            skip_invalid_rows: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!((report.created, report.invalid), (1, 1));
    assert_eq!(import_errors(&report), errors(&[(3, "password_hash")]));
    let mail = app.latest_mail_to("old@acme.test").await;
    assert!(
        header(&mail, "subject").is_some_and(|s| s.contains("Activate")),
        "a user with a password activates without choosing one: {mail}"
    );
    activate(&app, &token_from_mail(&mail), "")
        .await
        .expect("activation");
    let session = login(&app, &acme, "old@acme.test", "Legacy-Passw0rd").await;
    assert!(accepted(&app, &session.access_token).await);
    expect_code(
        app.login(acme.slug(), "old@acme.test", "legacy-passw0rd")
            .await,
        Code::Unauthenticated,
    );
    // Still good on the next login (after any rehash).
    login(&app, &acme, "old@acme.test", "Legacy-Passw0rd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_imports_invitations_reach_every_invited_user_once_and_their_links_work() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = app.mail_count();
    // More rows than the server makes invitations for in one transaction: the batch spans chunks.
    let rows = 2_500;
    let mut csv = String::from("email,first_name,last_name,roles\n");
    for i in 0..rows {
        csv.push_str(&format!("inv{i:05}@acme.test,Inv{i},Person,REPORTS\n"));
    }
    let report = import(
        &app,
        acme.token(),
        &csv,
        64 * 1024,
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.created, rows as i64);
    let recipients = app.wait_for_mail_count(before + rows).await;
    let invited: std::collections::HashSet<&String> = recipients
        .iter()
        .filter(|to| to.contains("@acme.test") && to.contains("inv"))
        .collect();
    assert_eq!(invited.len(), rows, "every invited user gets a message");
    // Nothing more follows: one message each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.mail_count(), before + rows);
    // The first chunk's and the last chunk's links both work.
    for email in ["inv00000@acme.test", "inv02499@acme.test"] {
        let mail = app.latest_mail_to(email).await;
        assert!(header(&mail, "subject").is_some_and(|s| s.contains("invited")));
        activate(&app, &token_from_mail(&mail), "Inv-Passw0rd")
            .await
            .unwrap_or_else(|err| panic!("activate {email}: {err:?}"));
        login(&app, &acme, email, "Inv-Passw0rd").await;
    }
}

/// Acme, where bob@acme.test (pending) and carl@acme.test (username `carl`) exist already.
async fn acme_with_bob_and_carl(app: &TestApp) -> Org {
    let acme = org(app, "Acme", "ann@acme.test").await;
    pending(app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let mut existing = crate::users_support::new_user("carl@acme.test", &["REPORTS"]);
    existing.username = "carl".to_owned();
    crate::users_support::create(app, acme.token(), existing)
        .await
        .expect("create carl");
    acme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reports_duplicates_within_the_file_and_against_existing_users() {
    let app = spawn_app().await;
    let acme = acme_with_bob_and_carl(&app).await;
    let csv = "\
email,username,roles
new1@acme.test,new1,REPORTS
BOB@acme.test,bobby,REPORTS
new2@acme.test,carl,REPORTS
new1@acme.test,other,REPORTS
new3@acme.test,new1,REPORTS
new4@acme.test,new4,REPORTS
";
    let report = import(&app, acme.token(), csv, 30, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.rows, report.created, report.invalid), (6, 0, 4));
    assert_eq!(
        import_errors(&report),
        errors(&[(3, "email"), (4, "username"), (5, "email"), (6, "username")])
    );
    let duplicate = report.errors.iter().find(|e| e.line == 5).expect("line 5");
    assert!(
        duplicate.message.contains("line 2"),
        "{}",
        duplicate.message
    );
    let report = import(
        &app,
        acme.token(),
        csv,
        30,
        ImportOptions {
            skip_invalid_rows: true,
            suppress_emails: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!(report.created, 2);
    assert_eq!(
        emails(&app, acme.token(), query("new", pb::MatchMode::Prefix)).await,
        vec!["new1@acme.test", "new4@acme.test"]
    );
    // Importing the same file again finds everything taken.
    let report = import(&app, acme.token(), csv, 30, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.created, report.invalid), (0, 6));
}

/// A file without a bad row still meets logins taken in the account: the insert finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_whose_rows_are_good_but_taken_writes_nothing_or_only_the_free_ones() {
    let app = spawn_app().await;
    let acme = acme_with_bob_and_carl(&app).await;
    let csv = "\
email,username,roles
free1@acme.test,free1,ORDERS
bob@acme.test,bobby,ORDERS
free2@acme.test,carl,ORDERS
free3@acme.test,free3,ORDERS
";
    let before = count(&app, acme.token()).await;
    let report = import(&app, acme.token(), csv, 30, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.rows, report.created, report.invalid), (4, 0, 2));
    assert_eq!(
        import_errors(&report),
        errors(&[(3, "email"), (4, "username")])
    );
    assert_eq!(count(&app, acme.token()).await, before, "nothing written");

    let report = import(
        &app,
        acme.token(),
        csv,
        30,
        ImportOptions {
            skip_invalid_rows: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!((report.created, report.invalid), (2, 2));
    assert_eq!(
        import_errors(&report),
        errors(&[(3, "email"), (4, "username")])
    );
    let orders = pb::UserFilter {
        roles: roles(&["ORDERS"]),
        ..Default::default()
    };
    assert_eq!(
        emails(&app, acme.token(), orders).await,
        vec!["free1@acme.test", "free3@acme.test"],
        "only the users inserted got their roles"
    );
    // They were invited; Bob (created without a mail), whose row was skipped, was not.
    for email in ["free1@acme.test", "free3@acme.test"] {
        assert!(!token_from_mail(&app.latest_mail_to(email).await).is_empty());
    }
    assert!(app.mails_to_now("bob@acme.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_importing_an_admin_row_gets_an_error_for_that_row() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let reporter = member(&app, &acme, "rex@acme.test", &["REPORTS"]).await;
    let csv = "email,roles\nplain@acme.test,REPORTS\nboss@acme.test,ADMIN;REPORTS\n";
    let options = ImportOptions {
        skip_invalid_rows: true,
        suppress_emails: true,
        ..Default::default()
    };
    let report = import(&app, &admin.access_token, csv, 16, options)
        .await
        .expect("import");
    assert_eq!((report.created, report.invalid), (1, 1));
    assert_eq!(import_errors(&report), errors(&[(3, "roles")]));
    assert!(
        emails(&app, acme.token(), query("boss", pb::MatchMode::Prefix))
            .await
            .is_empty()
    );
    // The owner may.
    let report = import(&app, acme.token(), csv, 16, options)
        .await
        .expect("import");
    assert_eq!(
        (report.created, report.invalid),
        (1, 1),
        "plain is taken now"
    );
    let boss = &list_all(&app, acme.token(), query("boss", pb::MatchMode::Prefix)).await[0];
    assert_eq!(boss.roles, roles(&["ADMIN", "REPORTS"]));
    // Without users.write nobody imports.
    expect_reason(
        import(&app, &reporter.access_token, csv, 16, options).await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_bad_header_or_no_data_is_an_invalid_argument() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let options = ImportOptions::default();
    for csv in [
        "mail,roles\nx@acme.test,REPORTS\n",
        "email,roles,shoe_size\nx@acme.test,REPORTS,44\n",
        "email,email\nx@acme.test,y@acme.test\n",
    ] {
        expect_bad_fields(
            import(&app, acme.token(), csv, 8, options).await,
            &["csv_chunk"],
        );
    }
    expect_bad_fields(
        import(&app, acme.token(), "", 8, options).await,
        &["csv_chunk"],
    );
    // A row with the wrong number of cells is a row error, not a failed call.
    let report = import(
        &app,
        acme.token(),
        "email,roles\nx@acme.test,REPORTS,extra\ny@acme.test,REPORTS\n",
        8,
        options,
    )
    .await
    .expect("import");
    assert_eq!((report.rows, report.invalid, report.created), (2, 1, 0));
    assert_eq!(report.errors[0].line, 2);
}

// -------------------------------------------------------------------------- BulkUpdateUsers

/// An account with an admin and four plain users; two of them (p1, p2) hold ORDERS.
struct Crowd {
    acme: Org,
    admin: Session,
    other_admin: pb::User,
    plain: Vec<Session>,
}

async fn crowd(app: &TestApp) -> Crowd {
    let acme = org(app, "Acme", "ann@acme.test").await;
    let admin = member(app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let other_admin = pending(app, acme.token(), "abe@acme.test", &["ADMIN"]).await;
    let mut plain = Vec::new();
    for (email, role) in [
        ("p1@acme.test", "ORDERS"),
        ("p2@acme.test", "ORDERS"),
        ("p3@acme.test", "REPORTS"),
        ("p4@acme.test", "REPORTS"),
    ] {
        plain.push(member(app, &acme, email, &[role]).await);
    }
    Crowd {
        acme,
        admin,
        other_admin,
        plain,
    }
}

fn request(
    selection: Option<pb::bulk_update_users_request::Selection>,
    action: pb::BulkAction,
    role_keys: &[&str],
    dry_run: bool,
) -> pb::BulkUpdateUsersRequest {
    pb::BulkUpdateUsersRequest {
        selection,
        action: action as i32,
        roles: roles(role_keys),
        dry_run,
        ..Default::default()
    }
}

async fn user_status(app: &TestApp, token: &str, id: &str) -> pb::UserStatus {
    pb::UserStatus::try_from(get(app, token, id).await.expect("get").status).expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_mass_action_counts_and_changes_nothing() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let token = c.acme.token();
    let before = list_all(&app, token, pb::UserFilter::default()).await;
    for action in [
        pb::BulkAction::Deactivate,
        pb::BulkAction::Delete,
        pb::BulkAction::Activate,
    ] {
        let response = bulk(&app, token, request(all_users(), action, &[], true))
            .await
            .expect("dry run");
        assert!(response.dry_run);
        assert_eq!(response.matched, 7, "{action:?}");
        let expected = match action {
            // Everyone but the owner (skipped), the same for deletion.
            pb::BulkAction::Deactivate | pb::BulkAction::Delete => 6,
            // Nobody is inactive.
            _ => 0,
        };
        assert_eq!(response.affected, expected, "{action:?}");
        assert_eq!(
            skips(&response),
            vec![(c.acme.owner.user_id.clone(), "USER_IS_OWNER".to_owned())]
        );
    }
    let response = bulk(
        &app,
        token,
        request(
            by_filter(pb::UserFilter {
                roles: roles(&["ORDERS"]),
                ..Default::default()
            }),
            pb::BulkAction::AssignRoles,
            &["FINANCE"],
            true,
        ),
    )
    .await
    .expect("dry run");
    assert_eq!((response.matched, response.affected), (2, 2));
    assert_eq!(
        list_all(&app, token, pb::UserFilter::default()).await,
        before
    );
    for session in &c.plain {
        assert!(accepted(&app, &session.access_token).await);
    }
}

/// Deactivates the crowd's users holding ORDERS, selected by a role filter.
async fn deactivate_orders(app: &TestApp, token: &str) -> pb::BulkUpdateUsersResponse {
    bulk(
        app,
        token,
        request(
            by_filter(pb::UserFilter {
                roles: roles(&["ORDERS"]),
                ..Default::default()
            }),
            pb::BulkAction::Deactivate,
            &[],
            false,
        ),
    )
    .await
    .expect("deactivate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_ended_by_a_mass_deactivation_stay_refused_after_a_restart() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let response = deactivate_orders(&app, c.acme.token()).await;
    assert_eq!(response.affected, 2);

    let app = app.restart().await;
    for session in &c.plain[..2] {
        assert!(
            !accepted(&app, &session.access_token).await,
            "{} after the restart",
            session.email
        );
    }
    for session in &c.plain[2..] {
        assert!(
            accepted(&app, &session.access_token).await,
            "{} after the restart",
            session.email
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deactivation_by_filter_refuses_the_deactivated_users_tokens_at_once() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let token = c.acme.token();
    let response = deactivate_orders(&app, token).await;
    assert_eq!((response.matched, response.affected), (2, 2));
    assert!(response.skipped.is_empty());
    for session in &c.plain[..2] {
        assert!(
            !accepted(&app, &session.access_token).await,
            "{}",
            session.email
        );
        expect_code(
            app.refresh(&session.refresh_token).await,
            Code::Unauthenticated,
        );
        expect_reason(
            app.login(c.acme.slug(), &session.email, PASSWORD).await,
            Code::FailedPrecondition,
            "ACCOUNT_INACTIVE",
        );
        assert_eq!(
            user_status(&app, token, &session.user_id).await,
            pb::UserStatus::Inactive
        );
    }
    for session in &c.plain[2..] {
        assert!(
            accepted(&app, &session.access_token).await,
            "{}",
            session.email
        );
    }
    assert!(accepted(&app, &c.admin.access_token).await);

    // Deactivating again affects nobody; activating brings them back.
    let again = bulk(
        &app,
        token,
        request(
            by_ids(&[&c.plain[0].user_id, &c.plain[1].user_id]),
            pb::BulkAction::Deactivate,
            &[],
            false,
        ),
    )
    .await
    .expect("again");
    assert_eq!((again.matched, again.affected), (2, 0));
    let back = bulk(
        &app,
        token,
        request(
            by_filter(pb::UserFilter {
                statuses: vec![pb::UserStatus::Inactive as i32],
                ..Default::default()
            }),
            pb::BulkAction::Activate,
            &[],
            false,
        ),
    )
    .await
    .expect("activate");
    assert_eq!((back.matched, back.affected), (2, 2));
    login(&app, &c.acme, &c.plain[0].email, PASSWORD).await;
}

/// A mass activation wakes INACTIVE users only: a user who never confirmed stays pending, and
/// the users active already are matched but not counted, in a dry run and for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_activation_changes_only_inactive_users() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let token = c.acme.token();
    let p1 = c.plain[0].user_id.as_str();
    let deactivated = bulk(
        &app,
        token,
        request(by_ids(&[p1]), pb::BulkAction::Deactivate, &[], false),
    )
    .await
    .expect("deactivate p1");
    assert_eq!((deactivated.matched, deactivated.affected), (1, 1));
    let dry = bulk(
        &app,
        token,
        request(all_users(), pb::BulkAction::Activate, &[], true),
    )
    .await
    .expect("dry run");
    assert_eq!((dry.matched, dry.affected), (7, 1));
    assert_eq!(user_status(&app, token, p1).await, pb::UserStatus::Inactive);
    let activated = bulk(
        &app,
        token,
        request(all_users(), pb::BulkAction::Activate, &[], false),
    )
    .await
    .expect("activate");
    assert_eq!((activated.matched, activated.affected), (7, 1));
    assert_eq!(user_status(&app, token, p1).await, pb::UserStatus::Active);
    assert_eq!(
        user_status(&app, token, &c.other_admin.id).await,
        pb::UserStatus::PendingConfirmation
    );
    let again = bulk(
        &app,
        token,
        request(all_users(), pb::BulkAction::Activate, &[], false),
    )
    .await
    .expect("activate again");
    assert_eq!((again.matched, again.affected), (7, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_mass_action_skips_the_owner_other_admins_and_themself() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let admin = c.admin.access_token.as_str();
    let response = bulk(
        &app,
        admin,
        request(all_users(), pb::BulkAction::Deactivate, &[], false),
    )
    .await
    .expect("deactivate all");
    assert_eq!(response.matched, 7);
    assert_eq!(response.affected, 4);
    let mut expected = vec![
        (c.acme.owner.user_id.clone(), "USER_IS_OWNER".to_owned()),
        (c.admin.user_id.clone(), "SELF".to_owned()),
        (c.other_admin.id.clone(), "USER_IS_ADMIN".to_owned()),
    ];
    expected.sort();
    assert_eq!(skips(&response), expected);
    assert!(response.skipped.iter().all(|s| !s.message.is_empty()));
    assert!(accepted(&app, c.acme.token()).await);
    assert!(accepted(&app, admin).await);
    for session in &c.plain {
        assert!(!accepted(&app, &session.access_token).await);
    }
    assert_eq!(
        user_status(&app, admin, &c.other_admin.id).await,
        pb::UserStatus::PendingConfirmation
    );

    // Role changes skip the owner and other admins but not the admin themself.
    let response = bulk(
        &app,
        admin,
        request(
            all_users(),
            pb::BulkAction::AssignRoles,
            &["FINANCE"],
            false,
        ),
    )
    .await
    .expect("assign");
    assert_eq!(response.affected, 5);
    let mut expected = vec![
        (c.acme.owner.user_id.clone(), "USER_IS_OWNER".to_owned()),
        (c.other_admin.id.clone(), "USER_IS_ADMIN".to_owned()),
    ];
    expected.sort();
    assert_eq!(skips(&response), expected);
    let me = get(&app, c.acme.token(), &c.admin.user_id)
        .await
        .expect("get");
    assert_eq!(me.roles, roles(&["ADMIN", "FINANCE"]));
    let other = get(&app, c.acme.token(), &c.other_admin.id)
        .await
        .expect("get");
    assert_eq!(other.roles, roles(&["ADMIN"]));

    // The owner's own mass action skips only the owner.
    let response = bulk(
        &app,
        c.acme.token(),
        request(all_users(), pb::BulkAction::Delete, &[], true),
    )
    .await
    .expect("dry run");
    assert_eq!(response.affected, 6);
    assert_eq!(
        skips(&response),
        vec![(c.acme.owner.user_id.clone(), "USER_IS_OWNER".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletion_removes_the_selected_users_and_ends_their_sessions() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let token = c.acme.token();
    let targets = [c.plain[0].user_id.as_str(), c.plain[2].user_id.as_str()];
    let response = bulk(
        &app,
        &c.admin.access_token,
        request(by_ids(&targets), pb::BulkAction::Delete, &[], false),
    )
    .await
    .expect("delete");
    assert_eq!((response.matched, response.affected), (2, 2));
    for id in targets {
        expect_code(get(&app, token, id).await, Code::NotFound);
    }
    assert!(!accepted(&app, &c.plain[0].access_token).await);
    assert!(!accepted(&app, &c.plain[2].access_token).await);
    assert!(accepted(&app, &c.plain[1].access_token).await);
    assert_eq!(count(&app, token).await, 5);
    // Deleting them again finds nobody.
    let response = bulk(
        &app,
        token,
        request(by_ids(&targets), pb::BulkAction::Delete, &[], false),
    )
    .await
    .expect("delete again");
    assert_eq!((response.matched, response.affected), (0, 0));
    assert_eq!(
        skips(&response)
            .into_iter()
            .map(|(_, reason)| reason)
            .collect::<Vec<_>>(),
        vec!["NOT_FOUND", "NOT_FOUND"]
    );
    // Deletion needs users.delete.
    expect_reason(
        bulk(
            &app,
            &c.plain[1].access_token,
            request(
                by_ids(&[&c.plain[3].user_id]),
                pb::BulkAction::Delete,
                &[],
                false,
            ),
        )
        .await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
}

/// A restart reads back the role changes younger than an access token, mass ones included, so
/// the tokens issued before them keep following the users' roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_role_change_still_reaches_older_tokens_after_a_restart() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let reporters = by_filter(pb::UserFilter {
        roles: roles(&["REPORTS"]),
        ..Default::default()
    });
    let response = bulk(
        &app,
        &c.admin.access_token,
        request(
            reporters,
            pb::BulkAction::AssignRoles,
            &["TECH_CONFIG"],
            false,
        ),
    )
    .await
    .expect("assign");
    assert_eq!(response.affected, 2);

    let app = app.restart().await;
    for session in &c.plain[2..] {
        assert_eq!(
            principal(&app, &session.access_token).await.roles,
            roles(&["REPORTS", "TECH_CONFIG"]),
            "{} after the restart",
            session.email
        );
    }
    for session in &c.plain[..2] {
        assert_eq!(
            principal(&app, &session.access_token).await.roles,
            roles(&["ORDERS"])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_role_assignment_and_removal_change_roles_and_refresh_permissions() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let token = c.acme.token();
    let reporters = by_filter(pb::UserFilter {
        roles: roles(&["REPORTS"]),
        ..Default::default()
    });
    let response = bulk(
        &app,
        &c.admin.access_token,
        request(
            reporters.clone(),
            pb::BulkAction::AssignRoles,
            &["TECH_CONFIG", "REPORTS"],
            false,
        ),
    )
    .await
    .expect("assign");
    assert_eq!((response.matched, response.affected), (2, 2));
    for session in &c.plain[2..] {
        let user = get(&app, token, &session.user_id).await.expect("get");
        assert_eq!(user.roles, roles(&["REPORTS", "TECH_CONFIG"]));
        token_follows_roles(&app, &session.access_token, &["REPORTS", "TECH_CONFIG"]).await;
        let renewed = app.refresh(&session.refresh_token).await.expect("refresh");
        assert!(
            principal(&app, &renewed.access_token)
                .await
                .permissions
                .iter()
                .any(|p| p == "sip_settings.write")
        );
    }
    for session in &c.plain[..2] {
        assert_eq!(
            get(&app, token, &session.user_id).await.expect("get").roles,
            roles(&["ORDERS"])
        );
    }

    let response = bulk(
        &app,
        &c.admin.access_token,
        request(
            by_ids(&[&c.plain[2].user_id, &c.plain[0].user_id]),
            pb::BulkAction::UnassignRoles,
            &["REPORTS"],
            false,
        ),
    )
    .await
    .expect("unassign");
    assert_eq!((response.matched, response.affected), (2, 2));
    assert_eq!(
        get(&app, token, &c.plain[2].user_id)
            .await
            .expect("get")
            .roles,
        roles(&["TECH_CONFIG"])
    );
    assert_eq!(
        get(&app, token, &c.plain[0].user_id)
            .await
            .expect("get")
            .roles,
        roles(&["ORDERS"])
    );

    expect_bad_fields(
        bulk(
            &app,
            token,
            request(all_users(), pb::BulkAction::AssignRoles, &[], false),
        )
        .await,
        &["roles"],
    );
    expect_bad_fields(
        bulk(
            &app,
            token,
            request(all_users(), pb::BulkAction::AssignRoles, &["KING"], false),
        )
        .await,
        &["roles"],
    );
    expect_bad_fields(
        bulk(
            &app,
            token,
            request(None, pb::BulkAction::Deactivate, &[], false),
        )
        .await,
        &["selection"],
    );
    expect_bad_fields(
        bulk(
            &app,
            token,
            request(all_users(), pb::BulkAction::Unspecified, &[], false),
        )
        .await,
        &["action"],
    );
    expect_bad_fields(
        bulk(
            &app,
            token,
            request(by_ids(&[]), pb::BulkAction::Deactivate, &[], false),
        )
        .await,
        &["user_ids.user_ids"],
    );
    expect_bad_fields(
        bulk(
            &app,
            token,
            request(by_ids(&["nope"]), pb::BulkAction::Deactivate, &[], false),
        )
        .await,
        &["user_ids.user_ids[0]"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_assigns_or_removes_admin_in_a_mass_action() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    for action in [pb::BulkAction::AssignRoles, pb::BulkAction::UnassignRoles] {
        expect_reason(
            bulk(
                &app,
                &c.admin.access_token,
                request(by_ids(&[&c.plain[0].user_id]), action, &["ADMIN"], false),
            )
            .await,
            Code::PermissionDenied,
            "ADMIN_ROLE_OWNER_ONLY",
        );
    }
    assert_eq!(
        get(&app, c.acme.token(), &c.plain[0].user_id)
            .await
            .expect("get")
            .roles,
        roles(&["ORDERS"])
    );
    // A user without users.write makes no mass changes at all.
    expect_reason(
        bulk(
            &app,
            &c.plain[0].access_token,
            request(all_users(), pb::BulkAction::Deactivate, &[], true),
        )
        .await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
    let response = bulk(
        &app,
        c.acme.token(),
        request(
            by_ids(&[&c.plain[0].user_id]),
            pb::BulkAction::AssignRoles,
            &["ADMIN"],
            false,
        ),
    )
    .await
    .expect("the owner grants ADMIN");
    assert_eq!(response.affected, 1);
    assert_eq!(
        get(&app, c.acme.token(), &c.plain[0].user_id)
            .await
            .expect("get")
            .roles,
        roles(&["ADMIN", "ORDERS"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_another_account_are_skipped_as_not_found_and_left_untouched() {
    let app = spawn_app().await;
    let c = crowd(&app).await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let theirs = member(&app, &globex, "gus@globex.test", &["REPORTS"]).await;
    let foreign = [theirs.user_id.as_str(), globex.owner.user_id.as_str()];
    let mine = c.plain[0].user_id.as_str();
    for action in [
        pb::BulkAction::Deactivate,
        pb::BulkAction::Delete,
        pb::BulkAction::AssignRoles,
        pb::BulkAction::UnassignRoles,
        pb::BulkAction::Activate,
    ] {
        let response = bulk(
            &app,
            c.acme.token(),
            request(
                by_ids(&[foreign[0], foreign[1]]),
                action,
                &["REPORTS"],
                false,
            ),
        )
        .await
        .expect("bulk");
        assert_eq!((response.matched, response.affected), (0, 0), "{action:?}");
        let mut expected: Vec<(String, String)> = foreign
            .iter()
            .map(|id| ((*id).to_owned(), "NOT_FOUND".to_owned()))
            .collect();
        expected.sort();
        assert_eq!(skips(&response), expected, "{action:?}");
    }
    // Mixed with an id of the caller's account: only that one is touched.
    let response = bulk(
        &app,
        c.acme.token(),
        request(
            by_ids(&[foreign[0], mine]),
            pb::BulkAction::Deactivate,
            &[],
            false,
        ),
    )
    .await
    .expect("bulk");
    assert_eq!((response.matched, response.affected), (1, 1));
    assert_eq!(
        skips(&response),
        vec![(foreign[0].to_owned(), "NOT_FOUND".to_owned())]
    );
    // All users and filters never reach into the other account either.
    let response = bulk(
        &app,
        c.acme.token(),
        request(all_users(), pb::BulkAction::Deactivate, &[], false),
    )
    .await
    .expect("bulk");
    assert_eq!(response.matched, 7);
    let response = bulk(
        &app,
        c.acme.token(),
        request(
            by_filter(query("globex", pb::MatchMode::Contains)),
            pb::BulkAction::Delete,
            &[],
            false,
        ),
    )
    .await
    .expect("bulk");
    assert_eq!(response.matched, 0);

    let gus = get(&app, globex.token(), &theirs.user_id)
        .await
        .expect("gus");
    assert_eq!(gus.roles, roles(&["REPORTS"]));
    assert_eq!(
        pb::UserStatus::try_from(gus.status),
        Ok(pb::UserStatus::Active)
    );
    assert!(accepted(&app, &theirs.access_token).await);
    assert!(accepted(&app, globex.token()).await);
    assert_eq!(count(&app, globex.token()).await, 2);
}
