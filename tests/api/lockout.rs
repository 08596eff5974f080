//! Lockouts after failed passwords or codes, unlocking, and the per-address rate limit.

use roster::api::pb;
use tonic::{Code, Request};

use crate::harness::{
    PASSWORD, actions, expect_code, expect_reason, list_activity, spawn_app_with,
};

use crate::security_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_a_user_until_an_admin_unlocks_them() {
    let app = spawn_app_with(&[("lockout-threshold", "3")]).await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let bob_token = login(&app, &account, "bob@acme.test")
        .await
        .unwrap()
        .access_token;
    two_wrong_passwords(&app, &account.tenant_slug, "bob@acme.test").await;
    expect_reason(
        app.login(&account.tenant_slug, "bob@acme.test", "Wrong-Passw0rd")
            .await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    // Locked: even the right password is refused.
    expect_reason(
        login(&app, &account, "bob@acme.test").await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    assert_eq!(
        get_user(&app, &owner_token, &bob).await.status,
        pb::UserStatus::Locked as i32
    );
    // Bob may not unlock himself (his session still works for what he may do).
    expect_code(unlock(&app, &bob_token, &bob).await, Code::PermissionDenied);
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;
    expect_code(unlock(&app, &other_token, &bob).await, Code::NotFound);

    let unlocked = unlock(&app, &owner_token, &bob)
        .await
        .expect("the owner unlocks");
    assert_eq!(unlocked.status, pb::UserStatus::Active as i32);
    expect_reason(
        unlock(&app, &owner_token, &bob).await,
        Code::FailedPrecondition,
        "USER_NOT_LOCKED",
    );
    assert!(login(&app, &account, "bob@acme.test").await.is_ok());
    // The count starts again after the unlock.
    two_wrong_passwords(&app, &account.tenant_slug, "bob@acme.test").await;
    assert!(login(&app, &account, "bob@acme.test").await.is_ok());
    // That success forgot the two failures: two more still leave Bob below the threshold.
    two_wrong_passwords(&app, &account.tenant_slug, "bob@acme.test").await;
    assert!(login(&app, &account, "bob@acme.test").await.is_ok());
    let trail: Vec<String> = list_activity(
        &app,
        &owner_token,
        actions(&["user.locked", "user.unlocked"]),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|record| record.action)
    .collect();
    assert_eq!(trail, vec!["user.unlocked", "user.locked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_lifts_by_itself_after_the_cooldown() {
    let app = spawn_app_with(&[("lockout-threshold", "2"), ("lockout-cooldown", "10m")]).await;
    let (account, _) = owner(&app, "Acme", "ann@acme.test").await;
    for _ in 0..2 {
        let _ = app
            .login(&account.tenant_slug, &account.email, "Wrong-Passw0rd")
            .await;
    }
    expect_reason(
        login(&app, &account, &account.email).await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    app.clock.advance(9 * MINUTE);
    expect_reason(
        login(&app, &account, &account.email).await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    app.clock.advance(2 * MINUTE);
    let session = login(&app, &account, &account.email)
        .await
        .expect("unlocked");
    let me = app
        .who_am_i(&session.access_token)
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(me.status, pb::UserStatus::Active as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_logins_lock_exactly_like_real_users() {
    let app = spawn_app_with(&[("lockout-threshold", "3")]).await;
    let (account, _) = owner(&app, "Acme", "ann@acme.test").await;
    let mut answers = Vec::new();
    for who in ["ann@acme.test", "nobody@acme.test"] {
        let mut reasons = Vec::new();
        for _ in 0..4 {
            let status = app
                .login(&account.tenant_slug, who, "Wrong-Passw0rd")
                .await
                .expect_err("refused");
            reasons.push((status.code(), crate::harness::reason(&status)));
        }
        answers.push(reasons);
    }
    assert_eq!(
        answers[0], answers[1],
        "a real user and an unknown one look alike"
    );
    assert_eq!(answers[0][3].1.as_deref(), Some("ACCOUNT_LOCKED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_second_factor_codes_count_towards_the_lockout() {
    let app = spawn_app_with(&[("lockout-threshold", "3")]).await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let (secret, _, _) = enrol(&app, &token).await;
    let first = challenge(&app, &account, &account.email).await;
    for _ in 0..2 {
        expect_reason(
            complete(&app, &first, &wrong_code(&app, &secret)).await,
            Code::Unauthenticated,
            "INVALID_CODE",
        );
    }
    expect_reason(
        complete(&app, &first, &wrong_code(&app, &secret)).await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    expect_reason(
        complete(&app, &first, &code_now(&app, &secret)).await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
    expect_reason(
        login(&app, &account, &account.email).await,
        Code::FailedPrecondition,
        "ACCOUNT_LOCKED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_beyond_the_rate_limit_answer_resource_exhausted() {
    let app = spawn_app_with(&[
        ("login-rate-per-minute", "3"),
        ("trusted-proxies", "127.0.0.1/32"),
    ])
    .await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let from = |address: &str| {
        let mut client = app.auth();
        let request = forwarded(
            Request::new(login_request(&account, &account.email, PASSWORD)),
            address,
        );
        async move { client.login(request).await }
    };
    for _ in 0..3 {
        assert!(from("203.0.113.1").await.is_ok());
    }
    let refused = expect_reason(
        from("203.0.113.1").await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    // RetryInfo says when: a bucket of 3 a minute refills one attempt every 20 s.
    let retry = tonic_types::StatusExt::get_error_details(&refused)
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RESOURCE_EXHAUSTED carries google.rpc.RetryInfo");
    assert!(
        retry >= std::time::Duration::from_secs(1) && retry <= std::time::Duration::from_secs(21),
        "retry delay {retry:?}"
    );
    // Refused before the request is even parsed: a bad one gets the same answer.
    expect_reason(
        app.auth()
            .login(forwarded(
                Request::new(pb::LoginRequest::default()),
                "203.0.113.1",
            ))
            .await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
    );
    // Another address has its own allowance.
    assert!(from("203.0.113.2").await.is_ok());
}
