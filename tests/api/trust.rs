//! The rules that must hold under races, faults and hostile input: concurrent calls on one
//! object get exactly one success, a database that goes away answers UNAVAILABLE fast, replicas
//! agree, and a hostile request is the client's error, bounded and named.

use std::time::{Duration, Instant};

use roster::api::pb::{self, role_service_client::RoleServiceClient};
use tonic::{Code, Status};

use crate::harness::{
    TestApp, actions, authed, eventually, expect_bad_fields, expect_code, expect_reason,
    list_activity, list_sessions, spawn_app, spawn_app_behind_proxy, spawn_replicas_at_once,
};
use crate::users_support::{
    ImportOptions, Org, activate, bulk, by_ids, create, deactivate, delete, get, import, list,
    login, member, new_user, org, pending, reactivate, transfer_keeping, update,
};

/// Runs `count` copies of `call` at once and returns their results.
async fn at_once<F, Fut, T>(count: usize, call: F) -> Vec<Result<T, Status>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..count).map(|i| tokio::spawn(call(i))).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// Runs `count` copies at once of a UserService call about `user_id`, as `token`'s holder; the
/// call gets a client, the user id and a request wrapper that carries the token.
async fn at_once_on<F, Fut, T>(
    app: &TestApp,
    token: &str,
    user_id: &str,
    count: usize,
    call: F,
) -> Vec<Result<T, Status>>
where
    F: Fn(UserClient, String, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    at_once(count, |_| {
        call(
            users_on(app.channel.clone()),
            user_id.to_owned(),
            token.to_owned(),
        )
    })
    .await
}

type UserClient = pb::user_service_client::UserServiceClient<tonic::transport::Channel>;

/// Asserts that exactly one of `results` succeeded and every other one answered `others`.
fn exactly_one_ok<T>(results: &[Result<T, Status>], others: Code) {
    let seen = codes(results);
    assert_eq!(
        seen.iter().filter(|c| **c == Code::Ok).count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|c| *c == Code::Ok || *c == others),
        "{seen:?}"
    );
}

fn codes<T>(results: &[Result<T, Status>]) -> Vec<Code> {
    results
        .iter()
        .map(|result| match result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        })
        .collect()
}

async fn records_about(app: &TestApp, org: &Org, action: &str, target: &str) -> usize {
    list_activity(app, org.token(), actions(&[action]))
        .await
        .expect("ListActivity")
        .iter()
        .filter(|record| record.target_id == target)
        .count()
}

// ------------------------------------------------------------------------------ Authorization

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_grants_or_revokes_tenant_superuser_on_every_path() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let agent = pending(&app, acme.token(), "al@acme.test", &["ORDERS"]).await;
    let superuser = |on: bool| pb::User {
        dialer_profile: Some(pb::DialerProfile {
            tenant_superuser: on,
            ..Default::default()
        }),
        ..Default::default()
    };

    // The field alone, and the whole profile that carries it, on another user and on oneself.
    for target in [&agent.id, &admin.user_id] {
        for path in ["dialer_profile.tenant_superuser", "dialer_profile"] {
            expect_reason(
                update(&app, &admin.access_token, target, superuser(true), &[path]).await,
                Code::PermissionDenied,
                "OWNER_ONLY",
            );
        }
    }
    // Creating a user who is a superuser already.
    let mut created = new_user("sue@acme.test", &["ORDERS"]);
    created.dialer_profile = superuser(true).dialer_profile;
    expect_reason(
        create(&app, &admin.access_token, created.clone()).await,
        Code::PermissionDenied,
        "OWNER_ONLY",
    );
    let unchanged = get(&app, acme.token(), &agent.id).await.expect("agent");
    assert!(
        !unchanged
            .dialer_profile
            .unwrap_or_default()
            .tenant_superuser
    );

    // The owner grants it, and then an admin may not take it away either.
    let granted = update(
        &app,
        acme.token(),
        &agent.id,
        superuser(true),
        &["dialer_profile.tenant_superuser"],
    )
    .await
    .expect("the owner grants superuser access");
    assert!(granted.dialer_profile.unwrap().tenant_superuser);
    expect_reason(
        update(
            &app,
            &admin.access_token,
            &agent.id,
            superuser(false),
            &["dialer_profile.tenant_superuser"],
        )
        .await,
        Code::PermissionDenied,
        "OWNER_ONLY",
    );
    create(&app, acme.token(), created)
        .await
        .expect("the owner creates a superuser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_never_confirmed_stays_pending_through_deactivation_and_reactivation() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let created = create(&app, acme.token(), new_user("pat@acme.test", &["ORDERS"]))
        .await
        .expect("create");
    let pat = created.user.expect("user").id;
    let pending_status = pb::UserStatus::PendingConfirmation as i32;

    deactivate(&app, acme.token(), &pat)
        .await
        .expect("deactivate");
    let back = reactivate(&app, acme.token(), &pat)
        .await
        .expect("reactivate");
    assert_eq!(back.status, pending_status);
    expect_reason(
        app.login(acme.slug(), "pat@acme.test", crate::harness::PASSWORD)
            .await,
        Code::FailedPrecondition,
        "ACCOUNT_PENDING_CONFIRMATION",
    );

    // The mass actions' path to the same effect.
    for action in [pb::BulkAction::Deactivate, pb::BulkAction::Activate] {
        bulk(
            &app,
            acme.token(),
            pb::BulkUpdateUsersRequest {
                selection: by_ids(&[&pat]),
                action: action as i32,
                ..Default::default()
            },
        )
        .await
        .expect("mass action");
    }
    let user = get(&app, acme.token(), &pat).await.expect("get");
    assert_eq!(user.status, pending_status);

    // Only the link confirms the address; after it, reactivation makes the user active.
    activate(&app, &created.activation_token, crate::harness::PASSWORD)
        .await
        .expect("activation");
    deactivate(&app, acme.token(), &pat)
        .await
        .expect("deactivate");
    let back = reactivate(&app, acme.token(), &pat)
        .await
        .expect("reactivate");
    assert_eq!(back.status, pb::UserStatus::Active as i32);
    app.login(acme.slug(), "pat@acme.test", crate::harness::PASSWORD)
        .await
        .expect("an active user logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_do_not_see_the_owners_or_other_admins_sessions() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let other_admin = member(&app, &acme, "ada@acme.test", &["ADMIN"]).await;
    let plain = member(&app, &acme, "al@acme.test", &["ORDERS"]).await;

    for target in [&acme.owner.user_id, &other_admin.user_id] {
        expect_code(
            list_sessions(
                &app,
                &admin.access_token,
                pb::ListSessionsRequest {
                    user_id: target.clone(),
                    ..Default::default()
                },
            )
            .await,
            Code::PermissionDenied,
        );
    }
    let all = list_sessions(
        &app,
        &admin.access_token,
        pb::ListSessionsRequest {
            all_users: true,
            ..Default::default()
        },
    )
    .await
    .expect("an admin lists the account's sessions")
    .sessions;
    let mut owners: Vec<&str> = all.iter().map(|s| s.user_id.as_str()).collect();
    owners.sort();
    owners.dedup();
    let mut expected = vec![admin.user_id.as_str(), plain.user_id.as_str()];
    expected.sort();
    assert_eq!(
        owners, expected,
        "only the admin's own and plain users' sessions"
    );

    // The owner sees everyone's.
    let everyone = list_sessions(
        &app,
        acme.token(),
        pb::ListSessionsRequest {
            all_users: true,
            ..Default::default()
        },
    )
    .await
    .expect("the owner lists every session")
    .sessions;
    assert!(
        everyone
            .iter()
            .any(|session| session.user_id == other_admin.user_id)
    );
}

// -------------------------------------------------------------------------------- Concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_ownership_transfers_exactly_one_succeeds() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut candidates = Vec::new();
    for i in 0..8 {
        candidates.push(member(&app, &acme, &format!("c{i}@acme.test"), &["ORDERS"]).await);
    }
    let results = at_once(8, |i| {
        let app_channel = app.channel.clone();
        let token = acme.token().to_owned();
        let target = candidates[i].user_id.clone();
        async move {
            users_on(app_channel)
                .transfer_ownership(authed(
                    pb::TransferOwnershipRequest {
                        new_owner_user_id: target,
                        former_owner: Some(
                            pb::transfer_ownership_request::FormerOwner::FormerOwnerRoles(
                                pb::RoleList {
                                    roles: vec!["ADMIN".to_owned()],
                                },
                            ),
                        ),
                    },
                    &token,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    let codes = codes(&results);
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes
            .iter()
            // The losers find the caller no longer the owner, or their token already ended
            // with the transfer.
            .all(|c| matches!(
                c,
                Code::Ok | Code::PermissionDenied | Code::Unauthenticated | Code::Aborted
            )),
        "{codes:?}"
    );
    let winner = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .and_then(|r| r.new_owner.clone())
        .expect("the new owner");
    let relogged = login(&app, &acme, &winner.email, crate::harness::PASSWORD).await;
    let me = app.who_am_i(&relogged.access_token).await.expect("WhoAmI");
    assert!(me.user.expect("user").is_owner);
    let owners = crate::users_support::list_all(&app, &relogged.access_token, Default::default())
        .await
        .into_iter()
        .filter(|user| user.is_owner)
        .count();
    assert_eq!(owners, 1);
    // A transfer made with the former owner's stale token is refused too.
    expect_code(
        transfer_keeping(&app, acme.token(), &candidates[0].user_id, &["ADMIN"]).await,
        Code::Unauthenticated,
    );
}

fn users_on(
    channel: tonic::transport::Channel,
) -> pb::user_service_client::UserServiceClient<tonic::transport::Channel> {
    pb::user_service_client::UserServiceClient::new(channel)
}

/// The lifecycle verbs a race test repeats on one user.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Deactivate,
    Reactivate,
    Delete,
}

async fn perform(
    mut users: UserClient,
    verb: Verb,
    user_id: String,
    token: String,
) -> Result<(), Status> {
    match verb {
        Verb::Deactivate => users
            .deactivate_user(authed(pb::DeactivateUserRequest { user_id }, &token))
            .await
            .map(|_| ()),
        Verb::Reactivate => users
            .reactivate_user(authed(pb::ReactivateUserRequest { user_id }, &token))
            .await
            .map(|_| ()),
        Verb::Delete => users
            .delete_user(authed(pb::DeleteUserRequest { user_id }, &token))
            .await
            .map(|_| ()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_lifecycle_calls_on_one_user_one_succeeds_and_writes_one_record() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    // The others get the answer they would get after the winner: already in that state, or gone.
    for (verb, others, record) in [
        (
            Verb::Deactivate,
            Code::FailedPrecondition,
            "user.deactivated",
        ),
        (
            Verb::Reactivate,
            Code::FailedPrecondition,
            "user.reactivated",
        ),
        (Verb::Delete, Code::NotFound, "user.deleted"),
    ] {
        let results = at_once_on(&app, acme.token(), &bob.user_id, 8, |users, id, token| {
            perform(users, verb, id, token)
        })
        .await;
        exactly_one_ok(&results, others);
        assert_eq!(
            records_about(&app, &acme, record, &bob.user_id).await,
            1,
            "{verb:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_activations_and_resets_one_stands() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;

    // Activation: one token, eight clicks, one activation.
    let created = create(&app, acme.token(), new_user("pat@acme.test", &["ORDERS"]))
        .await
        .expect("create");
    let pat = created.user.expect("user").id;
    let results = at_once(8, |_| {
        let auth = app.auth();
        let token = created.activation_token.clone();
        async move {
            let mut auth = auth;
            auth.activate_account(pb::ActivateAccountRequest {
                token,
                password: String::new(),
            })
            .await
        }
    })
    .await;
    exactly_one_ok(&results, Code::InvalidArgument);
    assert_eq!(records_about(&app, &acme, "user.activated", &pat).await, 1);

    // Admin password reset: one temporary password stands; the others may retry. (Four, so
    // that the logins with the passwords that lost stay under the lockout threshold.)
    let results = at_once_on(
        &app,
        acme.token(),
        &pat,
        4,
        |mut users, user_id, token| async move {
            users
                .reset_password(authed(
                    pb::ResetPasswordRequest {
                        user_id,
                        require_change: false,
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().temporary_password)
        },
    )
    .await;
    let codes_seen = codes(&results);
    assert!(
        codes_seen
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::Aborted)),
        "{codes_seen:?}"
    );
    let resets = records_about(&app, &acme, "user.password_reset", &pat).await;
    assert_eq!(
        resets,
        codes_seen.iter().filter(|c| **c == Code::Ok).count()
    );
    // The last reset that answered OK is the password that works.
    let working: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut logged_in = 0;
    for password in &working {
        if app
            .login(acme.slug(), "pat@acme.test", password)
            .await
            .is_ok()
        {
            logged_in += 1;
        }
    }
    assert_eq!(logged_in, 1, "exactly one temporary password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_racing_a_deletion_is_done_or_not_found_never_internal() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    for round in 0..4 {
        let victim = pending(
            &app,
            acme.token(),
            &format!("v{round}@acme.test"),
            &["ORDERS"],
        )
        .await;
        let role_change = {
            let channel = app.channel.clone();
            let token = acme.token().to_owned();
            let target = victim.id.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for key in ["REPORTS", "FINANCE", "ORDERS", "REPORTS"] {
                    results.push(
                        RoleServiceClient::new(channel.clone())
                            .change_user_role(authed(
                                pb::ChangeUserRoleRequest {
                                    user_id: target.clone(),
                                    account_roles: Some(pb::RoleKeys {
                                        keys: vec![key.to_owned()],
                                    }),
                                    ..Default::default()
                                },
                                &token,
                            ))
                            .await
                            .map(|_| ()),
                    );
                }
                results
            })
        };
        delete(&app, acme.token(), &victim.id)
            .await
            .expect("delete");
        for result in role_change.await.expect("task") {
            if let Err(status) = result {
                assert!(
                    matches!(status.code(), Code::NotFound | Code::Aborted),
                    "{status:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------- Replicas

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_started_at_once_on_an_empty_database_all_come_up() {
    let replicas = spawn_replicas_at_once(3).await;
    if !replicas[0].postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; one server on SQLite");
    }
    let acme = org(&replicas[0], "Acme", "ann@acme.test").await;
    for replica in &replicas {
        replica
            .who_am_i(acme.token())
            .await
            .expect("every replica serves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_committed_by_a_replica_that_dies_at_once_is_enforced_by_the_others() {
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; skipped on SQLite");
        return;
    }
    let mut doomed = app.replica().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    app.who_am_i(&bob.access_token).await.expect("valid");
    deactivate(&doomed, acme.token(), &bob.user_id)
        .await
        .expect("deactivated on the doomed replica");
    doomed.kill();
    let refused = eventually(Duration::from_secs(1), || async {
        app.who_am_i(&bob.access_token).await.is_err()
    })
    .await;
    assert!(
        refused,
        "the surviving replica refused the token within a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_token_is_unauthenticated_on_every_replica_never_not_found() {
    let app = spawn_app().await;
    let replica = if app.postgres {
        Some(app.replica().await)
    } else {
        None
    };
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    delete(&app, acme.token(), &bob.user_id)
        .await
        .expect("delete");
    for server in std::iter::once(&app).chain(replica.as_ref()) {
        expect_code(
            server.who_am_i(&bob.access_token).await,
            Code::Unauthenticated,
        );
        expect_code(
            get(server, &bob.access_token, &bob.user_id).await,
            Code::Unauthenticated,
        );
    }
}

// ------------------------------------------------------------------------------------ Faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_calls_answer_unavailable_fast_and_recover_after() {
    let Some((app, proxy)) = spawn_app_behind_proxy().await else {
        eprintln!("note: the database goes away only on PostgreSQL; skipped on SQLite");
        return;
    };
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["ORDERS"]).await;

    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        let result = get(&app, acme.token(), &bob.id).await;
        let took = started.elapsed();
        expect_code(result, Code::Unavailable);
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
    }
    // Token-only calls go on.
    let valid = app.validate(acme.token()).await;
    assert!(valid.valid);
    let not_serving = eventually(Duration::from_secs(10), || async {
        app.health
            .clone()
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok_and(|r| {
                r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
            })
    })
    .await;
    assert!(not_serving, "health went NOT_SERVING");

    proxy.restore();
    let back = eventually(Duration::from_secs(15), || async {
        get(&app, acme.token(), &bob.id).await.is_ok()
    })
    .await;
    assert!(back, "calls work again once the database is back");
    // A write acknowledged after the recovery is there.
    deactivate(&app, acme.token(), &bob.id)
        .await
        .expect("deactivate");
    let user = get(&app, acme.token(), &bob.id).await.expect("get");
    assert_eq!(user.status, pb::UserStatus::Inactive as i32);
}

// ------------------------------------------------------------------------------ Hostile input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_field_over_its_bound_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let roles: Vec<String> = (0..100_000).map(|i| format!("ROLE_{i}")).collect();
    let status = expect_bad_fields(
        list(
            &app,
            acme.token(),
            pb::ListUsersRequest {
                filter: Some(pb::UserFilter {
                    roles,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await,
        &["filter.roles"],
    );
    assert!(
        status.message().contains("at most 100"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_header_of_many_unknown_columns_is_one_short_error() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut header: Vec<String> = (0..100_000).map(|i| format!("junk{i}")).collect();
    header.push("email".to_owned());
    let csv = format!(
        "{}\nbob@acme.test{}\n",
        header.join(","),
        ",".repeat(100_000)
    );
    let status = expect_code(
        import(&app, acme.token(), &csv, 1 << 20, ImportOptions::default()).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().len() < 4_096,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("and 99990 more"),
        "{}",
        status.message()
    );
    assert!(
        status.details().len() < 8_192,
        "{} bytes of details",
        status.details().len()
    );
}

/// Sends `body` as the raw message of a unary call to `path`.
async fn raw_call(app: &TestApp, path: &'static str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.expect("ready");
    grpc.unary::<Vec<u8>, Vec<u8>, _>(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("the call fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversize_requests_are_the_clients_errors() {
    let app = spawn_app().await;
    let login = "/roster.v1.AuthService/Login";
    // Random bytes (an invalid wire type), invalid UTF-8 in a string field, deep nesting.
    let garbage: Vec<u8> = (0..64u32).map(|i| (i * 97 % 251) as u8 | 0x07).collect();
    let bad_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    // 5,000 nested groups of an unknown field (start group 15 ... end group 15).
    let mut nested = vec![0x7b; 5_000];
    nested.extend(vec![0x7c; 5_000]);
    for (what, path, body) in [
        ("random bytes", login, garbage),
        ("invalid UTF-8", login, bad_utf8),
        ("5,000 levels of nesting", login, nested),
    ] {
        let status = raw_call(&app, path, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let oversize = vec![0u8; 17 * 1024 * 1024];
    let status = raw_call(&app, login, oversize).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// Sends and receives messages as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

// ------------------------------------------------------------------------- IP allow-list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_allowed_networks_ends_the_users_sessions_refresh_tokens_included() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    update(
        &app,
        acme.token(),
        &bob.user_id,
        pb::User {
            dialer_profile: Some(pb::DialerProfile {
                extended_ip_acl: true,
                allowed_networks: vec!["127.0.0.0/8".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        },
        &[
            "dialer_profile.extended_ip_acl",
            "dialer_profile.allowed_networks",
        ],
    )
    .await
    .expect("update");
    expect_code(app.who_am_i(&bob.access_token).await, Code::Unauthenticated);
    expect_code(app.refresh(&bob.refresh_token).await, Code::Unauthenticated);
    let listed = list_sessions(
        &app,
        acme.token(),
        pb::ListSessionsRequest {
            user_id: bob.user_id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("ListSessions")
    .sessions;
    assert!(listed.is_empty(), "{listed:?}");
}

// ------------------------------------------------------------------------- Email changes

async fn request_reset(app: &TestApp, org: &Org, email: &str) {
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest {
            tenant: org.slug().to_owned(),
            email: email.to_owned(),
        })
        .await
        .expect("RequestPasswordReset always answers OK");
}

async fn confirm(app: &TestApp, token: &str) -> Result<pb::ConfirmEmailResponse, Status> {
    app.auth()
        .confirm_email(pb::ConfirmEmailRequest {
            token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Whether a reset link reached `email`: the request is answered at once and mailed after, so
/// the marker's mail (queued later) tells when everything before it went out.
async fn reset_mailed(app: &TestApp, org: &Org, email: &str, marker: &str) -> bool {
    let before = app.mails_to_now(email).len();
    request_reset(app, org, email).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    crate::users_support::flush_mail(app, org, marker).await;
    app.mails_to_now(email)
        .iter()
        .skip(before)
        .any(|mail| mail.contains("reset-password?token="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_email_change_waits_for_the_new_address_and_the_old_one_is_told() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    let old_mails = app.mails_to_now("bob@acme.test").len();
    let ann_before = app.mails_to_now("ann@acme.test").len();

    let answered = update(
        &app,
        &bob.access_token,
        &bob.user_id,
        pb::User {
            email: "bob@evil.test".to_owned(),
            ..Default::default()
        },
        &["email"],
    );
    // Only a user with users.write may change an address at all; bob may not.
    expect_code(answered.await, Code::PermissionDenied);

    // The owner changes their own address: it waits for the new address.
    let changed = update(
        &app,
        acme.token(),
        &acme.owner.user_id,
        pb::User {
            email: "ann@new.test".to_owned(),
            ..Default::default()
        },
        &["email"],
    )
    .await
    .expect("update");
    assert_eq!(changed.email, "ann@acme.test");
    assert_eq!(changed.pending_email, "ann@new.test");
    assert!(changed.email_verified);
    let notice = app
        .wait_for_mails_to("ann@acme.test", ann_before + 1)
        .await
        .pop()
        .unwrap();
    assert!(notice.contains("ann@new.test"), "{notice}");
    let confirmation = app
        .wait_for_mails_to("ann@new.test", 1)
        .await
        .pop()
        .unwrap();
    assert!(
        confirmation.contains("confirm-email?token="),
        "{confirmation}"
    );
    // Until it confirms, no reset link goes to the new address, and the old one still logs in.
    assert!(!reset_mailed(&app, &acme, "ann@new.test", "m1@acme.test").await);
    app.login(acme.slug(), "ann@acme.test", crate::harness::PASSWORD)
        .await
        .expect("the old address still logs in");

    let token = crate::harness::token_from_mail(&confirmation);
    let confirmed = confirm(&app, &token).await.expect("confirm");
    assert_eq!(confirmed.email, "ann@new.test");
    expect_bad_fields(confirm(&app, &token).await, &["token"]);
    let me = get(&app, acme.token(), &acme.owner.user_id)
        .await
        .expect("get");
    assert_eq!(
        (me.email.as_str(), me.pending_email.as_str()),
        ("ann@new.test", "")
    );
    app.login(acme.slug(), "ann@new.test", crate::harness::PASSWORD)
        .await
        .expect("the new address logs in");
    assert!(reset_mailed(&app, &acme, "ann@new.test", "m2@acme.test").await);
    assert!(app.mails_to_now("bob@acme.test").len() == old_mails);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_email_change_is_unconfirmed_and_gets_no_reset_link_until_confirmed() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    let before = app.mails_to_now("bob@acme.test").len();
    let changed = update(
        &app,
        acme.token(),
        &bob.user_id,
        pb::User {
            email: "bob@typo.test".to_owned(),
            ..Default::default()
        },
        &["email"],
    )
    .await
    .expect("update");
    assert_eq!(changed.email, "bob@typo.test");
    assert!(!changed.email_verified);
    let notice = app
        .wait_for_mails_to("bob@acme.test", before + 1)
        .await
        .pop()
        .unwrap();
    assert!(notice.contains("bob@typo.test"), "{notice}");
    assert!(!reset_mailed(&app, &acme, "bob@typo.test", "m1@acme.test").await);

    let confirmation = app
        .wait_for_mails_to("bob@typo.test", 1)
        .await
        .pop()
        .unwrap();
    confirm(&app, &crate::harness::token_from_mail(&confirmation))
        .await
        .expect("confirm");
    let user = get(&app, acme.token(), &bob.user_id).await.expect("get");
    assert!(user.email_verified);
    assert!(reset_mailed(&app, &acme, "bob@typo.test", "m2@acme.test").await);
}
