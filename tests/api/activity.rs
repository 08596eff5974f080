//! The activity trail and its live feed.

use std::time::Duration;

use roster::{
    api::pb::{self},
    model::Clock,
};
use tonic::Code;

use crate::harness::{
    actions, activity, authed, expect_bad_fields, expect_code, list_activity, spawn_app,
};

use crate::security_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_filters_by_actor_target_action_and_time_a_page_at_a_time() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let start = app.clock.now();
    app.clock.advance(MINUTE);
    let bob_token = login(&app, &account, "bob@acme.test")
        .await
        .unwrap()
        .access_token;
    let _ = app
        .login(&account.tenant_slug, "bob@acme.test", "Wrong-Passw0rd")
        .await;
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;

    let everything = list_activity(&app, &owner_token, pb::ActivityFilter::default())
        .await
        .unwrap();
    assert!(everything.len() >= 6, "{everything:?}");
    assert!(
        everything.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let about_bob = list_activity(
        &app,
        &owner_token,
        pb::ActivityFilter {
            target_user_id: bob.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(about_bob.iter().all(|r| r.target_id == bob));
    let by_bob = list_activity(
        &app,
        &owner_token,
        pb::ActivityFilter {
            actor_user_id: bob.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!by_bob.is_empty() && by_bob.iter().all(|r| r.actor_user_id == bob));
    let logins = list_activity(&app, &owner_token, actions(&["auth.login"]))
        .await
        .unwrap();
    assert!(logins.iter().all(|r| r.action == "auth.login"));
    let auth = list_activity(&app, &owner_token, actions(&["auth.*"]))
        .await
        .unwrap();
    assert!(auth.iter().any(|r| r.action == "auth.login_failed"));
    assert!(auth.len() > logins.len());
    let failed = &auth
        .iter()
        .find(|r| r.action == "auth.login_failed")
        .unwrap();
    assert_eq!(failed.client_address, "127.0.0.1");
    assert!(failed.actor_user_id.is_empty());
    let timestamp = |at: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    };
    // Everything before `start` is older than this boundary, everything after it newer.
    let boundary = timestamp(start + chrono::Duration::seconds(30));
    let before = list_activity(
        &app,
        &owner_token,
        pb::ActivityFilter {
            until: Some(boundary),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let after = list_activity(
        &app,
        &owner_token,
        pb::ActivityFilter {
            since: Some(boundary),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(before.len() + after.len(), everything.len());
    assert!(after.iter().any(|r| r.action == "auth.login_failed"));
    assert!(!before.iter().any(|r| r.action == "auth.login_failed"));

    // Pages of two, in order, covering everything once.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = activity(&app)
            .list_activity(authed(
                pb::ListActivityRequest {
                    filter: None,
                    page_size: 2,
                    page_token: page_token.clone(),
                },
                &owner_token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.records.len() <= 2);
        paged.extend(page.records.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        paged,
        everything.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );

    // Bob (no activity.read) sees only what is by or about him; the other account nothing here.
    let bobs_view = list_activity(&app, &bob_token, pb::ActivityFilter::default())
        .await
        .unwrap();
    assert!(!bobs_view.is_empty());
    assert!(
        bobs_view
            .iter()
            .all(|r| r.actor_user_id == bob || r.target_id == bob)
    );
    let theirs = list_activity(&app, &other_token, pb::ActivityFilter::default())
        .await
        .unwrap();
    assert!(
        theirs
            .iter()
            .all(|r| !everything.iter().any(|mine| mine.id == r.id))
    );
    expect_bad_fields(
        list_activity(
            &app,
            &owner_token,
            pb::ActivityFilter {
                actor_user_id: "x".into(),
                actions: vec!["DROP TABLE".into(), "auth.login".into()],
                ..Default::default()
            },
        )
        .await,
        &["filter.actions[0]", "filter.actor_user_id"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_carries_the_accounts_new_records_only() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let (other, _) = owner(&app, "Other", "olga@other.test").await;
    let bob_token = login(&app, &account, "bob@acme.test")
        .await
        .unwrap()
        .access_token;
    expect_code(
        watch(&app, &bob_token, pb::ActivityFilter::default()).await,
        Code::PermissionDenied,
    );

    let mut feed = watch(&app, &owner_token, actions(&["auth.*"]))
        .await
        .unwrap();
    // Another account's login is not shown; this account's is, once it has committed.
    app.login_owner(&other).await;
    let bob = login(&app, &account, "bob@acme.test").await.unwrap();
    let record = next_record(&mut feed).await;
    assert_eq!(record.action, "auth.login");
    assert_eq!(record.actor_user_id, bob.user.unwrap().id);
    assert_eq!(record.client_address, "127.0.0.1");
    // Filtered: a user change is not an auth.* record.
    users(&app)
        .delete_user(authed(
            pb::DeleteUserRequest {
                user_id: record.actor_user_id.clone(),
            },
            &owner_token,
        ))
        .await
        .expect("the owner deletes Bob");
    let _ = app
        .login(&account.tenant_slug, "nobody@acme.test", "Wrong-Passw0rd")
        .await;
    let _ = app
        .login(&account.tenant_slug, &account.email, "Wrong-Passw0rd")
        .await;
    // On PostgreSQL a busy listener may hand the watch the notification of Bob's first login
    // (committed just before the watch began) late: pass over Bob's logins.
    let mut record = next_record(&mut feed).await;
    for _ in 0..2 {
        if record.action != "auth.login" || record.target_id == account.user_id {
            break;
        }
        record = next_record(&mut feed).await;
    }
    assert_eq!(record.action, "auth.login_failed");
    assert_eq!(record.target_id, account.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_watch_ends_when_its_session_is_revoked_and_when_the_server_stops() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let watcher = login(&app, &account, &account.email).await.unwrap();
    let mut feed = watch(&app, &watcher.access_token, pb::ActivityFilter::default())
        .await
        .unwrap();
    revoke(&app, &owner_token, &watcher.session_id)
        .await
        .unwrap();
    // The revocation itself is the next record; then the stream ends with the refusal.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match feed.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the watch ends within 15 s")
    .expect("with a status");
    assert_eq!(ended.code(), Code::Unauthenticated);

    let mut open = watch(&app, &owner_token, pb::ActivityFilter::default())
        .await
        .unwrap();
    let mut app = app;
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("a live watch does not hold up shutdown");
    assert!(matches!(open.message().await, Ok(None) | Err(_)));
}
