//! ServiceAccountService: machine callers with API keys, and what they may do with them.

use std::time::Duration;

use roster::api::pb::{
    self, event_service_client::EventServiceClient,
    service_account_service_client::ServiceAccountServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};

use crate::harness::{
    TestApp, authed, eventually, expect_bad_fields, expect_code, expect_reason, list_activity,
    spawn_app,
};
use crate::roles::create_role;
use crate::users_support::*;

fn accounts(app: &TestApp) -> ServiceAccountServiceClient<Channel> {
    ServiceAccountServiceClient::new(app.channel.clone())
}

/// Calls CreateServiceAccount.
async fn create_account(
    app: &TestApp,
    token: &str,
    name: &str,
    roles: &[&str],
) -> Result<pb::ServiceAccount, Status> {
    accounts(app)
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                name: name.to_owned(),
                description: format!("The {name}"),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls CreateApiKey.
async fn create_key(
    app: &TestApp,
    token: &str,
    account: &str,
    expire_time: Option<prost_types::Timestamp>,
) -> Result<pb::CreateApiKeyResponse, Status> {
    accounts(app)
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                service_account_id: account.to_owned(),
                expire_time,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_keys(app: &TestApp, token: &str, account: &str) -> Result<Vec<pb::ApiKey>, Status> {
    accounts(app)
        .list_api_keys(authed(
            pb::ListApiKeysRequest {
                service_account_id: account.to_owned(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().keys)
}

async fn revoke_key(app: &TestApp, token: &str, account: &str, key: &str) -> Result<(), Status> {
    accounts(app)
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest {
                service_account_id: account.to_owned(),
                key_id: key.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn delete_account(app: &TestApp, token: &str, account: &str) -> Result<(), Status> {
    accounts(app)
        .delete_service_account(authed(
            pb::DeleteServiceAccountRequest {
                service_account_id: account.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// An account with a custom role that reads users and the feed, and a service account holding
/// it with a key.
async fn lead_service(app: &TestApp, acme: &Org) -> (pb::ServiceAccount, String) {
    create_role(
        app,
        acme.token(),
        "LEAD_SERVICE",
        pb::RoleScope::Account,
        &["users.read", "events.read"],
    )
    .await
    .unwrap();
    let account = create_account(app, acme.token(), "lead service", &["LEAD_SERVICE"])
        .await
        .unwrap();
    let key = create_key(app, acme.token(), &account.id, None)
        .await
        .unwrap()
        .api_key;
    (account, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_lists_users_batch_gets_them_and_follows_the_feed_with_its_key() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let (account, key) = lead_service(&app, &acme).await;
    assert!(key.starts_with("rsk_"), "{key}");

    let listed = list_all(&app, &key, pb::UserFilter::default()).await;
    assert_eq!(listed.len(), 2);
    let batch = users(&app)
        .batch_get_users(authed(
            pb::BatchGetUsersRequest {
                user_ids: vec![bob.user_id.clone()],
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.users[0].email, "bob@acme.test");

    let validation = app.validate(&key).await;
    assert!(validation.valid);
    let principal = validation.principal.unwrap();
    assert_eq!(principal.service_account_id, account.id);
    assert!(principal.user_id.is_empty() && principal.session_id.is_empty());
    assert_eq!(principal.tenant_id, acme.account.tenant_id);
    assert_eq!(principal.roles, ["LEAD_SERVICE"]);
    assert!(principal.permissions.contains(&"users.read".to_owned()));
    assert!(!principal.api_key_id.is_empty());

    // It follows the feed: the owner deletes Bob, the service hears it.
    let mut watch = EventServiceClient::new(app.channel.clone())
        .watch_events(authed(
            pb::WatchEventsRequest {
                after: String::new(),
                filter: Some(pb::EventFilter {
                    types: vec!["user.deleted".into()],
                    ..Default::default()
                }),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    delete(&app, acme.token(), &bob.user_id).await.unwrap();
    let deleted = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the deletion comes")
            .unwrap()
            .unwrap();
        if let Some(event) = message.event {
            break event;
        }
    };
    assert_eq!(deleted.target_id, bob.user_id);

    // No user behind it: what is a user's own is refused, not confused with a user.
    let me = app
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &key))
        .await;
    expect_reason(me, Code::PermissionDenied, "SERVICE_ACCOUNT");
    let password = app
        .auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: "x".into(),
                new_password: "Another-Passw0rd".into(),
            },
            &key,
        ))
        .await;
    expect_reason(password, Code::PermissionDenied, "SERVICE_ACCOUNT");
    // Its role reads users but changes nothing.
    expect_code(
        create(&app, &key, new_user("eve@acme.test", &["REPORTS"])).await,
        Code::PermissionDenied,
    );

    // The key is listed by its prefix, never its secret; its use shows.
    let keys = list_keys(&app, acme.token(), &account.id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(key.starts_with(&format!("rsk_{}_", keys[0].prefix)));
    assert!(keys[0].last_used_at.is_some());
    assert!(!format!("{keys:?}").contains(&key[17..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_is_named_as_the_actor_of_what_it_changes() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    // Admin on a service account: the owner's to grant.
    let account = create_account(&app, acme.token(), "provisioner", &["ADMIN"])
        .await
        .unwrap();
    let key = create_key(&app, acme.token(), &account.id, None)
        .await
        .unwrap()
        .api_key;
    let created = create(&app, &key, new_user("eve@acme.test", &["REPORTS"]))
        .await
        .unwrap()
        .user
        .unwrap();
    let events = EventServiceClient::new(app.channel.clone())
        .list_events(authed(
            pb::ListEventsRequest {
                filter: Some(pb::EventFilter {
                    target_id: created.id.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor_service_account_id, account.id);
    assert!(events[0].actor_user_id.is_empty());
    let records = list_activity(
        &app,
        acme.token(),
        pb::ActivityFilter {
            target_user_id: created.id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let record = records.iter().find(|r| r.action == "user.created").unwrap();
    assert_eq!(record.actor_service_account_id, account.id);
    assert!(record.actor_user_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_or_deleting_its_account_refuses_it_on_the_next_call() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let (account, key) = lead_service(&app, &acme).await;
    let second = create_key(&app, acme.token(), &account.id, None)
        .await
        .unwrap();
    assert!(app.validate(&key).await.valid);
    assert!(app.validate(&second.api_key).await.valid);
    let first_id = list_keys(&app, acme.token(), &account.id)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id != second.key.as_ref().unwrap().id)
        .unwrap()
        .id;
    revoke_key(&app, acme.token(), &account.id, &first_id)
        .await
        .unwrap();
    assert!(!app.validate(&key).await.valid);
    expect_code(
        list(&app, &key, pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );
    assert!(
        app.validate(&second.api_key).await.valid,
        "the other key works"
    );
    expect_code(
        revoke_key(&app, acme.token(), &account.id, &first_id).await,
        Code::NotFound,
    );
    delete_account(&app, acme.token(), &account.id)
        .await
        .unwrap();
    assert!(!app.validate(&second.api_key).await.valid);

    // A forged key with a real prefix is refused too.
    let third_account = create_account(&app, acme.token(), "other", &["REPORTS"])
        .await
        .unwrap();
    let third = create_key(&app, acme.token(), &third_account.id, None)
        .await
        .unwrap()
        .api_key;
    // rsk_ and 12 visible characters; the secret follows the next '_'.
    let prefix = &third[..16];
    let forged = format!("{prefix}_{}", "A".repeat(43));
    assert!(!app.validate(&forged).await.valid);
    assert!(app.validate(&third).await.valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_replica_is_refused_on_the_other_at_once() {
    let app = spawn_app().await;
    if !app.postgres {
        return;
    }
    let replica = app.replica().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let (account, key) = lead_service(&app, &acme).await;
    // The replica has checked the key and keeps it in memory.
    assert!(replica.validate(&key).await.valid);
    let key_id = list_keys(&app, acme.token(), &account.id).await.unwrap()[0]
        .id
        .clone();
    revoke_key(&app, acme.token(), &account.id, &key_id)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            !replica.validate(&key).await.valid
        })
        .await,
        "the replica still accepts a revoked key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_and_changed_roles_bite_on_the_next_call() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let (account, key) = lead_service(&app, &acme).await;
    let in_an_hour = app.clock_now_plus(Duration::from_secs(3600));
    let expiring = create_key(&app, acme.token(), &account.id, Some(in_an_hour))
        .await
        .unwrap();
    assert!(expiring.key.as_ref().unwrap().expire_time.is_some());
    assert!(app.validate(&expiring.api_key).await.valid);
    expect_bad_fields(
        create_key(
            &app,
            acme.token(),
            &account.id,
            Some(app.clock_now_plus(Duration::ZERO)),
        )
        .await,
        &["expire_time"],
    );

    // Without events.read the feed is refused at once.
    accounts(&app)
        .update_service_account(authed(
            pb::UpdateServiceAccountRequest {
                service_account_id: account.id.clone(),
                service_account: Some(pb::ServiceAccount {
                    roles: vec!["REPORTS".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["roles"]),
            },
            acme.token(),
        ))
        .await
        .unwrap();
    let feed = EventServiceClient::new(app.channel.clone())
        .list_events(authed(pb::ListEventsRequest::default(), &key))
        .await;
    expect_code(feed, Code::PermissionDenied);

    app.clock.advance(Duration::from_secs(2 * 3600));
    assert!(!app.validate(&expiring.api_key).await.valid);
    assert!(app.validate(&key).await.valid, "a key without expiry stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_manages_admin_grade_service_accounts_and_accounts_stay_apart() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let other = org(&app, "Other", "olga@other.test").await;
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let reports = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;

    expect_reason(
        create_account(&app, &admin.access_token, "powerful", &["ADMIN"]).await,
        Code::PermissionDenied,
        "ADMIN_ROLE_OWNER_ONLY",
    );
    let plain = create_account(&app, &admin.access_token, "reporter", &["REPORTS"])
        .await
        .unwrap();
    assert!(
        create_key(&app, &admin.access_token, &plain.id, None)
            .await
            .is_ok()
    );
    let powerful = create_account(&app, acme.token(), "powerful", &["ADMIN"])
        .await
        .unwrap();
    expect_reason(
        create_key(&app, &admin.access_token, &powerful.id, None).await,
        Code::PermissionDenied,
        "SERVICE_ACCOUNT_IS_ADMIN",
    );
    expect_reason(
        delete_account(&app, &admin.access_token, &powerful.id).await,
        Code::PermissionDenied,
        "SERVICE_ACCOUNT_IS_ADMIN",
    );
    // Without service_accounts.manage: nothing.
    expect_code(
        accounts(&app)
            .list_service_accounts(authed(
                pb::ListServiceAccountsRequest::default(),
                &reports.access_token,
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        create_account(&app, &reports.access_token, "mine", &["REPORTS"]).await,
        Code::PermissionDenied,
    );

    // Another account sees none of them, and their ids are NOT_FOUND everywhere.
    let theirs = accounts(&app)
        .list_service_accounts(authed(
            pb::ListServiceAccountsRequest::default(),
            other.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.service_accounts.is_empty());
    let get = accounts(&app)
        .get_service_account(authed(
            pb::GetServiceAccountRequest {
                service_account_id: plain.id.clone(),
            },
            other.token(),
        ))
        .await;
    expect_code(get, Code::NotFound);
    expect_code(
        create_key(&app, other.token(), &plain.id, None).await,
        Code::NotFound,
    );
    expect_code(
        list_keys(&app, other.token(), &plain.id).await,
        Code::NotFound,
    );
    expect_code(
        delete_account(&app, other.token(), &plain.id).await,
        Code::NotFound,
    );
    // A key of Acme's lists Acme's users only.
    let key = create_key(&app, acme.token(), &powerful.id, None)
        .await
        .unwrap()
        .api_key;
    let seen = list_all(&app, &key, pb::UserFilter::default()).await;
    assert!(seen.iter().all(|u| u.tenant_id == acme.account.tenant_id));
    expect_code(
        get_user(&app, &key, &other.owner.user_id).await,
        Code::NotFound,
    );

    // Bad input names its fields; names are unique in the account.
    expect_bad_fields(
        accounts(&app)
            .create_service_account(authed(
                pb::CreateServiceAccountRequest {
                    name: " ".into(),
                    description: "d".repeat(401),
                    roles: vec![],
                },
                acme.token(),
            ))
            .await,
        &["name", "description"],
    );
    expect_bad_fields(
        create_account(&app, acme.token(), "x", &["NO_SUCH_ROLE"]).await,
        &["roles"],
    );
    expect_code(
        create_account(&app, acme.token(), "reporter", &["REPORTS"]).await,
        Code::AlreadyExists,
    );
    expect_bad_fields(
        create_key(&app, acme.token(), "nope", None).await,
        &["service_account_id"],
    );
    let listed = accounts(&app)
        .list_service_accounts(authed(
            pb::ListServiceAccountsRequest {
                page_size: 1,
                ..Default::default()
            },
            acme.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.service_accounts.len(), 1);
    assert!(!listed.next_page_token.is_empty());
}

async fn get_user(app: &TestApp, token: &str, id: &str) -> Result<pb::User, Status> {
    crate::users_support::get(app, token, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_role_changed_bites_on_the_keys_of_its_holders_at_once() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let (_, key) = lead_service(&app, &acme).await;
    assert!(
        !list_all(&app, &key, pb::UserFilter::default())
            .await
            .is_empty()
    );
    crate::roles::update_role(
        &app,
        acme.token(),
        "LEAD_SERVICE",
        "Lead service",
        &["events.read"],
    )
    .await
    .unwrap();
    expect_code(
        list(&app, &key, pb::ListUsersRequest::default()).await,
        Code::PermissionDenied,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_resumes_the_feed_from_its_cursor_after_roster_restarts() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let (_, key) = lead_service(&app, &acme).await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let feed = |app: &TestApp, after: String| {
        let channel = app.channel.clone();
        let key = key.clone();
        async move {
            EventServiceClient::new(channel)
                .list_events(authed(
                    pb::ListEventsRequest {
                        after,
                        ..Default::default()
                    },
                    &key,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let seen = feed(&app, String::new()).await;
    let cursor = seen.next_cursor.clone();
    assert_eq!(seen.events.last().unwrap().target_id, bob.id);
    delete(&app, acme.token(), &bob.id).await.unwrap();
    let app = app.restart().await;
    let rest = feed(&app, cursor).await;
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.events[0].r#type, "user.deleted");
    assert_eq!(rest.events[0].target_id, bob.id);
}
