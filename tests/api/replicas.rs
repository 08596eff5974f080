//! Several servers on one PostgreSQL: notifications, revocations and the live feed across
//! replicas.

use std::time::Duration;

use roster::api::pb;
use tonic::Code;

use crate::harness::{actions, authed, eventually, expect_reason, spawn_app};

use crate::security_support::*;

/// A mass action's revocations leave in one statement (hundreds of notifications); every
/// listener gets all of them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_notifications_reaches_a_listener_whole_and_in_order() {
    use roster::store::notify::{Listener, REVOCATION_CHANNEL, notify_all};
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: notifications exist only on PostgreSQL; skipped on SQLite");
        return;
    }
    let mut listener = Listener::connect(app.database_url())
        .await
        .expect("a listener");
    let payloads: Vec<String> = (0..900)
        .map(|n| format!("{{\"test\":{n},\"pad\":\"{}\"}}", "x".repeat(n % 200)))
        .collect();
    notify_all(&app.database().await, REVOCATION_CHANNEL, payloads.clone())
        .await
        .expect("sent");
    let mut received = Vec::new();
    while received.len() < payloads.len() {
        let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("every notification within 5 s")
            .expect("the listener works")
            .expect("no reconnection");
        // The server's own listener is on the same channel; only this test's payloads count.
        if notification.payload.starts_with("{\"test\"") {
            received.push(notification.payload);
        }
    }
    assert_eq!(received, payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_is_refused_by_another_within_a_second() {
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; skipped on SQLite");
        return;
    }
    let replica = app.replica().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let bob = login(&app, &account, "bob@acme.test").await.unwrap();
    assert!(replica.who_am_i(&bob.access_token).await.is_ok());

    // A session ended on the first replica...
    revoke(&app, &owner_token, &bob.session_id).await.unwrap();
    let refused = eventually(Duration::from_secs(1), || async {
        replica.who_am_i(&bob.access_token).await.is_err()
    })
    .await;
    assert!(
        refused,
        "the second replica refused the token within a second"
    );
    expect_reason(
        replica.who_am_i(&bob.access_token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );

    // ... and a deactivation (a user's token generation) on the second.
    let bob_again = login(&app, &account, "bob@acme.test").await.unwrap();
    users(&replica)
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                user_id: bob_again.user.as_ref().unwrap().id.clone(),
                ..Default::default()
            },
            &owner_token,
        ))
        .await
        .expect("deactivated on the replica");
    let refused = eventually(Duration::from_secs(1), || async {
        app.who_am_i(&bob_again.access_token).await.is_err()
    })
    .await;
    assert!(
        refused,
        "the first replica refused the token within a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_of_one_replica_carries_activity_written_by_another() {
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; skipped on SQLite");
        return;
    }
    let replica = app.replica().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let mut feed = watch(
        &replica,
        &owner_token,
        actions(&["auth.login", "user.*", "users.*"]),
    )
    .await
    .unwrap();
    let bob = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    // The owner's login committed just before the watch began; a busy listener may still hand
    // its notification to the watch: pass over it.
    let mut created = next_record(&mut feed).await;
    if created.action == "auth.login" && created.actor_user_id == account.user_id {
        created = next_record(&mut feed).await;
    }
    assert_eq!(created.action, "user.created");
    assert_eq!(created.target_id, bob);
    let activated = next_record(&mut feed).await;
    assert_eq!(activated.action, "user.activated");
    login(&app, &account, "bob@acme.test").await.unwrap();
    let logged_in = next_record(&mut feed).await;
    assert_eq!(logged_in.action, "auth.login");
    assert_eq!(logged_in.actor_user_id, bob);
    // A mass action on the first replica, seen live on the second.
    users(&app)
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                action: pb::BulkAction::Deactivate as i32,
                selection: Some(pb::bulk_update_users_request::Selection::UserIds(
                    pb::UserIdList {
                        user_ids: vec![bob.clone()],
                    },
                )),
                ..Default::default()
            },
            &owner_token,
        ))
        .await
        .expect("the mass action runs");
    let record = next_record(&mut feed).await;
    assert_eq!(record.action, "users.bulk_deactivated");
    // A mass deletion writes one record per user in a multi-row insert: each is announced.
    users(&app)
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                action: pb::BulkAction::Delete as i32,
                selection: Some(pb::bulk_update_users_request::Selection::UserIds(
                    pb::UserIdList {
                        user_ids: vec![bob.clone()],
                    },
                )),
                ..Default::default()
            },
            &owner_token,
        ))
        .await
        .expect("the mass deletion runs");
    let mut seen = vec![
        next_record(&mut feed).await.action,
        next_record(&mut feed).await.action,
    ];
    seen.sort();
    assert_eq!(seen, vec!["user.deleted", "users.bulk_deleted"]);
}
