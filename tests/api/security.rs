//! Two-factor authentication, sessions, the activity trail and its live feed, the extended IP
//! ACL, lockouts, rate limits and "forgot password", through the real gRPC interface; on
//! PostgreSQL also across two replicas of the server sharing one database.

use std::time::Duration;

use roster::{
    api::pb::{
        self, security_service_client::SecurityServiceClient,
        two_factor_service_client::TwoFactorServiceClient, user_service_client::UserServiceClient,
    },
    model::Clock,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::harness::{
    Account, PASSWORD, TestApp, actions, activity, authed, eventually, expect_bad_fields,
    expect_code, expect_reason, list_activity, list_sessions, sessions, spawn_app, spawn_app_with,
    token_from_mail,
};
use crate::roles::create_role;

const MINUTE: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------ helpers

fn two_factor(app: &TestApp) -> TwoFactorServiceClient<Channel> {
    TwoFactorServiceClient::new(app.channel.clone())
}

fn security(app: &TestApp) -> SecurityServiceClient<Channel> {
    SecurityServiceClient::new(app.channel.clone())
}

fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel.clone())
}

/// An activated account and its owner's access token.
async fn owner(app: &TestApp, name: &str, email: &str) -> (Account, String) {
    let account = app.sign_up_and_activate(name, email).await;
    let token = app.login_owner(&account).await.access_token;
    (account, token)
}

/// Creates a user with [`PASSWORD`] and `roles` (and a Dialer profile, when given) as the holder
/// of `token`, activates them, and returns their id.
async fn member(
    app: &TestApp,
    token: &str,
    email: &str,
    roles: &[&str],
    profile: Option<pb::DialerProfile>,
) -> String {
    let created = users(app)
        .create_user(authed(
            pb::CreateUserRequest {
                email: email.to_owned(),
                first_name: "Member".to_owned(),
                last_name: "Tester".to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                password: PASSWORD.to_owned(),
                dialer_profile: profile,
                return_activation_token: true,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap_or_else(|err| panic!("create {email}: {err:?}"))
        .into_inner();
    app.auth()
        .activate_account(pb::ActivateAccountRequest {
            token: created.activation_token,
            password: String::new(),
        })
        .await
        .expect("activation succeeds");
    created.user.expect("the created user").id
}

async fn login(app: &TestApp, account: &Account, email: &str) -> Result<pb::LoginResponse, Status> {
    app.login(&account.tenant_slug, email, PASSWORD).await
}

/// `message` sent as if from `address` through a proxy (the `x-forwarded-for` header).
fn forwarded<T>(mut request: Request<T>, address: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().expect("ascii address"));
    request
}

fn login_request(account: &Account, email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        tenant: account.tenant_slug.clone(),
        login: email.to_owned(),
        password: password.to_owned(),
    }
}

/// The code an authenticator app shows at `unix_seconds` for a base32 secret.
fn code_at(secret: &str, unix_seconds: i64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    )
    .generate(u64::try_from(unix_seconds).expect("after 1970"))
}

/// The code the app shows now, by the server's clock.
fn code_now(app: &TestApp, secret: &str) -> String {
    code_at(secret, app.clock.now().timestamp())
}

/// A code that is wrong now (the current code plus one, digit-wise).
fn wrong_code(app: &TestApp, secret: &str) -> String {
    code_now(app, secret)
        .chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

/// Enrols the holder of `token`: returns the secret, the backup codes and a fresh token. The
/// clock then moves to the next step, so that the confirming code's step is in the past.
async fn enrol(app: &TestApp, token: &str) -> (String, Vec<String>, String) {
    let begun = two_factor(app)
        .begin_two_factor_enrollment(authed(pb::BeginTwoFactorEnrollmentRequest {}, token))
        .await
        .expect("enrolment begins")
        .into_inner();
    let confirmed = two_factor(app)
        .confirm_two_factor(authed(
            pb::ConfirmTwoFactorRequest {
                code: code_now(app, &begun.secret),
            },
            token,
        ))
        .await
        .expect("enrolment confirms")
        .into_inner();
    app.clock.advance(STEP);
    (begun.secret, confirmed.backup_codes, confirmed.access_token)
}

async fn complete(app: &TestApp, challenge: &str, code: &str) -> Result<pb::LoginResponse, Status> {
    app.auth()
        .complete_login(pb::CompleteLoginRequest {
            challenge: challenge.to_owned(),
            code: code.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Logs in with the password, expecting the second-factor challenge.
async fn challenge(app: &TestApp, account: &Account, email: &str) -> String {
    let answer = login(app, account, email)
        .await
        .expect("the password step passes");
    assert!(answer.second_factor_required, "{answer:?}");
    assert!(answer.access_token.is_empty() && answer.refresh_token.is_empty());
    assert!(answer.challenge.len() >= 32);
    answer.challenge
}

async fn status(app: &TestApp, token: &str, user_id: &str) -> Result<pb::TwoFactorStatus, Status> {
    two_factor(app)
        .get_two_factor_status(authed(
            pb::GetTwoFactorStatusRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn unlock(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, Status> {
    security(app)
        .unlock_user(authed(
            pb::UnlockUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn get_user(app: &TestApp, token: &str, user_id: &str) -> pb::User {
    users(app)
        .get_user(authed(
            pb::GetUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .expect("GetUser answers")
        .into_inner()
}

/// The next record of a live watch, within 10 s.
async fn next_record(
    stream: &mut tonic::Streaming<pb::WatchActivityResponse>,
) -> pb::ActivityRecord {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a record within 10 s")
            .expect("the watch goes on")
            .expect("the watch has not ended");
        if let Some(record) = message.record {
            return record;
        }
    }
}

// --------------------------------------------------------------------- two-factor login

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_shows_a_secret_uri_and_qr_code_and_needs_a_first_code() {
    let app = spawn_app().await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let begun = two_factor(&app)
        .begin_two_factor_enrollment(authed(pb::BeginTwoFactorEnrollmentRequest {}, &token))
        .await
        .expect("enrolment begins")
        .into_inner();
    assert_eq!(begun.secret.len(), 32, "160 bits in base32");
    assert!(
        begun
            .otpauth_uri
            .starts_with("otpauth://totp/Acme:ann%40acme.test?secret="),
        "{}",
        begun.otpauth_uri
    );
    assert!(begun.otpauth_uri.contains(&begun.secret));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(&begun.qr_code_png_base64)
        .expect("base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Pending until confirmed: login still takes one step.
    let pending = status(&app, &token, "").await.expect("status");
    assert!(pending.pending && !pending.enabled);
    assert!(
        !login(&app, &account, &account.email)
            .await
            .unwrap()
            .second_factor_required
    );

    let confirm = |code: String| {
        let mut client = two_factor(&app);
        let token = token.clone();
        async move {
            client
                .confirm_two_factor(authed(pb::ConfirmTwoFactorRequest { code }, &token))
                .await
        }
    };
    expect_bad_fields(confirm(wrong_code(&app, &begun.secret)).await, &["code"]);
    expect_bad_fields(confirm(String::new()).await, &["code"]);
    let confirmed = confirm(code_now(&app, &begun.secret))
        .await
        .expect("the current code confirms")
        .into_inner();
    assert_eq!(confirmed.backup_codes.len(), 10);
    assert!(app.who_am_i(&confirmed.access_token).await.is_ok());
    expect_reason(
        confirm(code_now(&app, &begun.secret)).await,
        Code::FailedPrecondition,
        "TWO_FACTOR_ALREADY_ENABLED",
    );
    expect_reason(
        two_factor(&app)
            .begin_two_factor_enrollment(authed(pb::BeginTwoFactorEnrollmentRequest {}, &token))
            .await,
        Code::FailedPrecondition,
        "TWO_FACTOR_ALREADY_ENABLED",
    );
    let enabled = status(&app, &token, "").await.expect("status");
    assert!(enabled.enabled && !enabled.pending && enabled.enabled_at.is_some());
    assert_eq!(enabled.backup_codes_remaining, 10);
    let recorded = list_activity(&app, &token, actions(&["two_factor.*"]))
        .await
        .expect("activity");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].action, "two_factor.enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_takes_two_steps_and_a_code_is_accepted_only_once() {
    let app = spawn_app().await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let (secret, _, _) = enrol(&app, &token).await;

    let first = challenge(&app, &account, &account.email).await;
    let code = code_now(&app, &secret);
    let session = complete(&app, &first, &code)
        .await
        .expect("the code completes the login");
    assert!(!session.second_factor_required);
    assert!(app.who_am_i(&session.access_token).await.is_ok());
    assert!(app.refresh(&session.refresh_token).await.is_ok());

    // The same code again, within its window: refused.
    let second = challenge(&app, &account, &account.email).await;
    expect_reason(
        complete(&app, &second, &code).await,
        Code::Unauthenticated,
        "INVALID_CODE",
    );
    // So is the previous step's code.
    let previous = code_at(&secret, app.clock.now().timestamp() - 30);
    expect_reason(
        complete(&app, &second, &previous).await,
        Code::Unauthenticated,
        "INVALID_CODE",
    );
    // The next step's code works, with the same (unused) challenge.
    app.clock.advance(STEP);
    assert!(
        complete(&app, &second, &code_now(&app, &secret))
            .await
            .is_ok()
    );
    // A used challenge does not work again, even with a fresh code.
    app.clock.advance(STEP);
    expect_reason(
        complete(&app, &second, &code_now(&app, &secret)).await,
        Code::Unauthenticated,
        "INVALID_CHALLENGE",
    );
    // Nor does an expired one.
    let third = challenge(&app, &account, &account.email).await;
    app.clock.advance(6 * MINUTE);
    expect_reason(
        complete(&app, &third, &code_now(&app, &secret)).await,
        Code::Unauthenticated,
        "INVALID_CHALLENGE",
    );
    expect_reason(
        complete(&app, "made-up-challenge", "123456").await,
        Code::Unauthenticated,
        "INVALID_CHALLENGE",
    );
    expect_bad_fields(complete(&app, "", "").await, &["challenge", "code"]);

    let logins = list_activity(&app, &token, actions(&["auth.login"]))
        .await
        .expect("activity");
    let with_totp = logins
        .iter()
        .filter(|record| {
            record
                .details
                .as_ref()
                .and_then(|d| d.fields.get("second_factor"))
                .is_some()
        })
        .count();
    assert_eq!(with_totp, 2, "{logins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_codes_complete_a_login_once_each() {
    let app = spawn_app().await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let (secret, backup_codes, token) = enrol(&app, &token).await;

    let first = challenge(&app, &account, &account.email).await;
    // Typed loosely: upper case, spaces instead of the dash.
    let typed = backup_codes[0].to_uppercase().replace('-', " ");
    assert!(complete(&app, &first, &typed).await.is_ok());
    let second = challenge(&app, &account, &account.email).await;
    expect_reason(
        complete(&app, &second, &backup_codes[0]).await,
        Code::Unauthenticated,
        "INVALID_CODE",
    );
    assert!(complete(&app, &second, &backup_codes[1]).await.is_ok());
    assert_eq!(
        status(&app, &token, "")
            .await
            .unwrap()
            .backup_codes_remaining,
        8
    );

    // New codes replace the old ones.
    let fresh = two_factor(&app)
        .regenerate_backup_codes(authed(
            pb::RegenerateBackupCodesRequest {
                code: code_now(&app, &secret),
            },
            &token,
        ))
        .await
        .expect("regenerated")
        .into_inner()
        .backup_codes;
    assert_eq!(fresh.len(), 10);
    let third = challenge(&app, &account, &account.email).await;
    expect_reason(
        complete(&app, &third, &backup_codes[2]).await,
        Code::Unauthenticated,
        "INVALID_CODE",
    );
    assert!(complete(&app, &third, &fresh[0]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factor_is_disabled_only_with_a_current_code() {
    let app = spawn_app().await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let (secret, _, token) = enrol(&app, &token).await;
    let disable = |code: String| {
        let mut client = two_factor(&app);
        let token = token.clone();
        async move {
            client
                .disable_two_factor(authed(pb::DisableTwoFactorRequest { code }, &token))
                .await
        }
    };
    expect_bad_fields(disable(wrong_code(&app, &secret)).await, &["code"]);
    assert!(disable(code_now(&app, &secret)).await.is_ok());
    expect_reason(
        disable(code_now(&app, &secret)).await,
        Code::FailedPrecondition,
        "TWO_FACTOR_NOT_ENABLED",
    );
    let answer = login(&app, &account, &account.email).await.unwrap();
    assert!(!answer.second_factor_required && !answer.access_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_resets_a_users_two_factor_which_ends_their_sessions() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let agent_id = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let admin_id = member(&app, &owner_token, "ada@acme.test", &["ADMIN"], None).await;
    let agent_token = login(&app, &account, "bob@acme.test")
        .await
        .unwrap()
        .access_token;
    let (_, _, agent_token) = enrol(&app, &agent_token).await;
    let admin_token = login(&app, &account, "ada@acme.test")
        .await
        .unwrap()
        .access_token;

    let reset = |token: &str, user_id: &str| {
        let mut client = two_factor(&app);
        let request = authed(
            pb::ResetTwoFactorRequest {
                user_id: user_id.to_owned(),
            },
            token,
        );
        async move { client.reset_two_factor(request).await }
    };
    // The agent may not reset anyone, not even themself.
    expect_code(reset(&agent_token, &agent_id).await, Code::PermissionDenied);
    // An admin may not reset the owner.
    expect_reason(
        reset(&admin_token, &account.user_id).await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    assert!(status(&app, &admin_token, &agent_id).await.unwrap().enabled);
    let ended = reset(&admin_token, &agent_id)
        .await
        .expect("the admin resets the agent")
        .into_inner()
        .sessions_ended;
    assert_eq!(ended, 1);
    expect_reason(
        app.who_am_i(&agent_token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!status(&app, &admin_token, &agent_id).await.unwrap().enabled);
    expect_reason(
        reset(&admin_token, &agent_id).await,
        Code::FailedPrecondition,
        "TWO_FACTOR_NOT_ENABLED",
    );
    // One step again, and the agent may enrol anew.
    let again = login(&app, &account, "bob@acme.test").await.unwrap();
    assert!(!again.second_factor_required);
    enrol(&app, &again.access_token).await;

    // Another account's user does not exist here.
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;
    expect_code(reset(&other_token, &agent_id).await, Code::NotFound);
    expect_code(status(&app, &other_token, &admin_id).await, Code::NotFound);
    let records = list_activity(&app, &owner_token, actions(&["two_factor.reset"]))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].target_id, agent_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_requires_two_factor_lets_unenrolled_users_only_enrol() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(&app, &owner_token, "ada@acme.test", &["ADMIN"], None).await;
    let admin = login(&app, &account, "ada@acme.test").await.unwrap();
    let require = |token: &str, value: bool| {
        let mut client = security(&app);
        let request = authed(
            pb::UpdateSecuritySettingsRequest {
                require_two_factor: Some(value),
            },
            token,
        );
        async move { client.update_security_settings(request).await }
    };
    expect_reason(
        require(&admin.access_token, true).await,
        Code::PermissionDenied,
        "OWNER_ONLY",
    );
    assert!(
        require(&owner_token, true)
            .await
            .unwrap()
            .into_inner()
            .require_two_factor
    );

    let restricted = login(&app, &account, "ada@acme.test").await.unwrap();
    assert!(restricted.two_factor_enrollment_required);
    let token = restricted.access_token;
    assert!(app.who_am_i(&token).await.is_ok());
    expect_reason(
        list_activity(&app, &token, pb::ActivityFilter::default()).await,
        Code::FailedPrecondition,
        "TWO_FACTOR_ENROLLMENT_REQUIRED",
    );
    expect_reason(
        list_sessions(&app, &token, pb::ListSessionsRequest::default()).await,
        Code::FailedPrecondition,
        "TWO_FACTOR_ENROLLMENT_REQUIRED",
    );
    assert!(status(&app, &token, "").await.unwrap().required_by_account);
    let (secret, _, token) = enrol(&app, &token).await;
    assert!(
        list_activity(&app, &token, pb::ActivityFilter::default())
            .await
            .is_ok()
    );
    expect_reason(
        two_factor(&app)
            .disable_two_factor(authed(
                pb::DisableTwoFactorRequest {
                    code: code_now(&app, &secret),
                },
                &token,
            ))
            .await,
        Code::FailedPrecondition,
        "TWO_FACTOR_REQUIRED_BY_ACCOUNT",
    );
    // From now on the admin logs in with two steps and a full session.
    let first = challenge(&app, &account, "ada@acme.test").await;
    let full = complete(&app, &first, &code_now(&app, &secret))
        .await
        .unwrap();
    assert!(!full.two_factor_enrollment_required);
    let settings = security(&app)
        .get_security_settings(authed(
            pb::GetSecuritySettingsRequest {},
            &full.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(settings.require_two_factor);
}

// --------------------------------------------------------------------- lockout and unlock

/// Two logins with a wrong password, each refused as INVALID_CREDENTIALS (not locked yet).
async fn two_wrong_passwords(app: &TestApp, tenant: &str, login: &str) {
    for _ in 0..2 {
        expect_reason(
            app.login(tenant, login, "Wrong-Passw0rd").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
}

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
    expect_reason(
        from("203.0.113.1").await,
        Code::ResourceExhausted,
        "TOO_MANY_ATTEMPTS",
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

// ------------------------------------------------------------------------ IP allow-list

fn acl(networks: &[&str]) -> Option<pb::DialerProfile> {
    Some(pb::DialerProfile {
        extended_ip_acl: true,
        allowed_networks: networks.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_allow_list_ignores_forwarded_addresses_from_untrusted_peers() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(
        &app,
        &owner_token,
        "far@acme.test",
        &["REPORTS"],
        acl(&["203.0.113.0/24"]),
    )
    .await;
    member(
        &app,
        &owner_token,
        "near@acme.test",
        &["REPORTS"],
        acl(&["127.0.0.0/8"]),
    )
    .await;

    expect_reason(
        login(&app, &account, "far@acme.test").await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    // The test client is not a trusted proxy: its x-forwarded-for is not believed.
    expect_reason(
        app.auth()
            .login(forwarded(
                Request::new(login_request(&account, "far@acme.test", PASSWORD)),
                "203.0.113.9",
            ))
            .await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    // A wrong password still answers as a wrong password (no hint about the network).
    expect_reason(
        app.login(&account.tenant_slug, "far@acme.test", "Wrong-Passw0rd")
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let near = login(&app, &account, "near@acme.test")
        .await
        .expect("an allowed network");
    assert!(app.who_am_i(&near.access_token).await.is_ok());
    let refused = list_activity(&app, &owner_token, actions(&["auth.login_refused_network"]))
        .await
        .unwrap();
    assert_eq!(refused.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_decides_at_login_and_on_every_call() {
    let app = spawn_app_with(&[("trusted-proxies", "127.0.0.1/32")]).await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(
        &app,
        &owner_token,
        "far@acme.test",
        &["REPORTS"],
        acl(&["203.0.113.0/24"]),
    )
    .await;

    let login_from = |address: &str| {
        let mut client = app.auth();
        let request = forwarded(
            Request::new(login_request(&account, "far@acme.test", PASSWORD)),
            address,
        );
        async move { client.login(request).await.map(tonic::Response::into_inner) }
    };
    expect_reason(
        login_from("198.51.100.7").await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    let session = login_from("203.0.113.9").await.expect("an allowed network");
    let token = session.access_token;
    let who_from = |address: Option<&str>| {
        let mut client = app.auth();
        let request = authed(pb::WhoAmIRequest {}, &token);
        let request = match address {
            Some(address) => forwarded(request, address),
            None => request,
        };
        async move { client.who_am_i(request).await }
    };
    assert!(who_from(Some("203.0.113.200")).await.is_ok());
    // Every call is checked, without the database: from the proxy itself or elsewhere, refused.
    expect_reason(
        who_from(None).await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    expect_reason(
        who_from(Some("198.51.100.7")).await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    // A chain: the right-most untrusted entry is the client.
    assert!(who_from(Some("198.51.100.7, 203.0.113.5")).await.is_ok());
    // Refreshing from elsewhere is refused too.
    expect_reason(
        app.auth()
            .refresh_session(forwarded(
                Request::new(pb::RefreshSessionRequest {
                    refresh_token: session.refresh_token.clone(),
                }),
                "198.51.100.7",
            ))
            .await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
    // Other services can ask with the user's address.
    let validate = |address: &str| {
        let mut client = app.auth();
        let request = pb::ValidateTokenRequest {
            token: token.clone(),
            client_address: address.to_owned(),
        };
        async move {
            client
                .validate_token(request)
                .await
                .unwrap()
                .into_inner()
                .valid
        }
    };
    assert!(validate("203.0.113.1").await);
    assert!(!validate("198.51.100.7").await);
    expect_bad_fields(
        app.auth()
            .validate_token(pb::ValidateTokenRequest {
                token: token.clone(),
                client_address: "not-an-address".to_owned(),
            })
            .await,
        &["client_address"],
    );

    // An admin moves the user to another network: the user's sessions end at once (their
    // refresh token too), and a new login from the new network carries the change.
    let far = session.user.as_ref().expect("the user").id.clone();
    users(&app)
        .update_user(authed(
            pb::UpdateUserRequest {
                user_id: far,
                user: Some(pb::User {
                    dialer_profile: Some(pb::DialerProfile {
                        allowed_networks: vec!["198.51.100.0/24".to_owned()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["dialer_profile.allowed_networks".to_owned()],
                }),
            },
            &owner_token,
        ))
        .await
        .expect("the owner changes the allowed networks");
    expect_code(who_from(Some("203.0.113.200")).await, Code::Unauthenticated);
    expect_code(
        app.auth()
            .refresh_session(forwarded(
                Request::new(pb::RefreshSessionRequest {
                    refresh_token: session.refresh_token.clone(),
                }),
                "198.51.100.7",
            ))
            .await,
        Code::Unauthenticated,
    );
    let moved = login_from("198.51.100.7")
        .await
        .expect("a login from the new network");
    let mut client = app.auth();
    assert!(
        client
            .who_am_i(forwarded(
                authed(pb::WhoAmIRequest {}, &moved.access_token),
                "198.51.100.7"
            ))
            .await
            .is_ok()
    );
    expect_reason(
        client
            .who_am_i(forwarded(
                authed(pb::WhoAmIRequest {}, &moved.access_token),
                "203.0.113.9",
            ))
            .await,
        Code::PermissionDenied,
        "IP_NOT_ALLOWED",
    );
}

// ----------------------------------------------------------------------------- sessions

fn with_agent<T>(mut request: Request<T>, agent: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("user-agent", agent.parse().expect("ascii"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_their_own_sessions_and_admins_everyones() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    let bob_login = login(&app, &account, "bob@acme.test").await.unwrap();
    let _second_owner_session = login(&app, &account, &account.email).await.unwrap();

    let own = list_sessions(
        &app,
        &bob_login.access_token,
        pb::ListSessionsRequest::default(),
    )
    .await
    .unwrap()
    .sessions;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].user_id, bob);
    assert!(own[0].current);
    assert_eq!(own[0].client_address, "127.0.0.1");
    assert!(own[0].created_at.is_some() && own[0].last_used_at.is_some());
    expect_code(
        list_sessions(
            &app,
            &bob_login.access_token,
            pb::ListSessionsRequest {
                all_users: true,
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        list_sessions(
            &app,
            &bob_login.access_token,
            pb::ListSessionsRequest {
                user_id: account.user_id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );

    let all = list_sessions(
        &app,
        &owner_token,
        pb::ListSessionsRequest {
            all_users: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .sessions;
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|s| s.current).count(), 1);
    let bobs = list_sessions(
        &app,
        &owner_token,
        pb::ListSessionsRequest {
            user_id: bob.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .sessions;
    assert_eq!(bobs.len(), 1);

    // Keyset pages of one.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list_sessions(
            &app,
            &owner_token,
            pb::ListSessionsRequest {
                all_users: true,
                page_size: 1,
                page_token: page_token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        seen.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut expected: Vec<String> = all.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(seen, expected);
    expected.sort();
    expected.dedup();
    assert_eq!(expected.len(), 3);
    expect_bad_fields(
        list_sessions(
            &app,
            &owner_token,
            pb::ListSessionsRequest {
                all_users: true,
                user_id: bob.clone(),
                page_token: "nonsense".into(),
                ..Default::default()
            },
        )
        .await,
        &["page_token", "user_id"],
    );

    // The user agent is kept.
    let agent_session = app
        .auth()
        .login(with_agent(
            Request::new(login_request(&account, "bob@acme.test", PASSWORD)),
            "dialer-desktop/2.1",
        ))
        .await
        .unwrap()
        .into_inner();
    let own = list_sessions(
        &app,
        &agent_session.access_token,
        pb::ListSessionsRequest::default(),
    )
    .await
    .unwrap()
    .sessions;
    assert!(
        own.iter()
            .any(|s| s.current && s.user_agent.starts_with("dialer-desktop/2.1")),
        "{own:?}"
    );

    // Another account sees none of it.
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;
    expect_code(
        list_sessions(
            &app,
            &other_token,
            pb::ListSessionsRequest {
                user_id: bob,
                ..Default::default()
            },
        )
        .await,
        Code::NotFound,
    );
    let others = list_sessions(
        &app,
        &other_token,
        pb::ListSessionsRequest {
            all_users: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .sessions;
    assert_eq!(others.len(), 1);
}

async fn revoke(app: &TestApp, token: &str, session_id: &str) -> Result<(), Status> {
    sessions(app)
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: session_id.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_on_the_very_next_call() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    member(&app, &owner_token, "ada@acme.test", &["ADMIN"], None).await;
    let bob = login(&app, &account, "bob@acme.test").await.unwrap();
    let ada = login(&app, &account, "ada@acme.test").await.unwrap();
    let owner_session = login(&app, &account, &account.email).await.unwrap();

    // Bob may not end others' sessions; an admin may not end the owner's.
    expect_code(
        revoke(&app, &bob.access_token, &ada.session_id).await,
        Code::PermissionDenied,
    );
    expect_reason(
        revoke(&app, &ada.access_token, &owner_session.session_id).await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    // Another account's session does not exist here.
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;
    expect_code(
        revoke(&app, &other_token, &bob.session_id).await,
        Code::NotFound,
    );
    expect_bad_fields(revoke(&app, &owner_token, "x").await, &["session_id"]);

    assert!(app.who_am_i(&bob.access_token).await.is_ok());
    revoke(&app, &ada.access_token, &bob.session_id)
        .await
        .expect("an admin ends an agent's session");
    expect_reason(
        app.who_am_i(&bob.access_token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(app.refresh(&bob.refresh_token).await.is_err());
    expect_reason(
        revoke(&app, &ada.access_token, &bob.session_id).await,
        Code::FailedPrecondition,
        "SESSION_ALREADY_ENDED",
    );
    // Everyone may end their own.
    revoke(&app, &ada.access_token, &ada.session_id)
        .await
        .expect("one's own session");
    assert!(app.who_am_i(&ada.access_token).await.is_err());
    let trail = list_activity(&app, &owner_token, actions(&["session.revoked"]))
        .await
        .unwrap();
    assert_eq!(trail.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_users_or_everyones_sessions_logs_them_out() {
    let app = spawn_app().await;
    let (account, owner_token) = owner(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &owner_token, "bob@acme.test", &["REPORTS"], None).await;
    member(&app, &owner_token, "ada@acme.test", &["ADMIN"], None).await;
    let bob_one = login(&app, &account, "bob@acme.test").await.unwrap();
    let bob_two = login(&app, &account, "bob@acme.test").await.unwrap();
    let revoke_user = |token: &str, user_id: &str| {
        let mut client = sessions(&app);
        let request = authed(
            pb::RevokeUserSessionsRequest {
                user_id: user_id.to_owned(),
            },
            token,
        );
        async move {
            client
                .revoke_user_sessions(request)
                .await
                .map(|r| r.into_inner().sessions_ended)
        }
    };
    // Bob logs out his other devices: the calling session stays.
    assert_eq!(revoke_user(&bob_two.access_token, &bob).await.unwrap(), 1);
    assert!(app.who_am_i(&bob_one.access_token).await.is_err());
    assert!(app.who_am_i(&bob_two.access_token).await.is_ok());
    // The owner logs Bob out everywhere.
    assert_eq!(revoke_user(&owner_token, &bob).await.unwrap(), 1);
    assert!(app.who_am_i(&bob_two.access_token).await.is_err());
    let (_, other_token) = owner(&app, "Other", "olga@other.test").await;
    expect_code(revoke_user(&other_token, &bob).await, Code::NotFound);

    // An admin logs everyone out, except the owner, other admins (a custom role with an admin
    // permission makes one) and themself.
    create_role(
        &app,
        &owner_token,
        "ROLE_MANAGER",
        pb::RoleScope::Account,
        &["roles.manage"],
    )
    .await
    .unwrap();
    member(
        &app,
        &owner_token,
        "manny@acme.test",
        &["ROLE_MANAGER"],
        None,
    )
    .await;
    let manny = login(&app, &account, "manny@acme.test").await.unwrap();
    let bob_three = login(&app, &account, "bob@acme.test").await.unwrap();
    let ada = login(&app, &account, "ada@acme.test").await.unwrap();
    let ended = sessions(&app)
        .revoke_all_sessions(authed(pb::RevokeAllSessionsRequest {}, &ada.access_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_ended;
    assert_eq!(ended, 1);
    assert!(app.who_am_i(&bob_three.access_token).await.is_err());
    assert!(app.who_am_i(&owner_token).await.is_ok());
    assert!(app.who_am_i(&ada.access_token).await.is_ok());
    assert!(app.who_am_i(&manny.access_token).await.is_ok());
    // The owner logs everyone out but themself; the other account is untouched.
    let ended = sessions(&app)
        .revoke_all_sessions(authed(pb::RevokeAllSessionsRequest {}, &owner_token))
        .await
        .unwrap()
        .into_inner()
        .sessions_ended;
    assert_eq!(ended, 2);
    assert!(app.who_am_i(&ada.access_token).await.is_err());
    assert!(app.who_am_i(&manny.access_token).await.is_err());
    assert!(app.who_am_i(&owner_token).await.is_ok());
    assert!(app.who_am_i(&other_token).await.is_ok());
    expect_code(
        sessions(&app)
            .revoke_all_sessions(authed(
                pb::RevokeAllSessionsRequest {},
                &bob_two.access_token,
            ))
            .await,
        Code::Unauthenticated,
    );
}

// ----------------------------------------------------------------------------- activity

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

async fn watch(
    app: &TestApp,
    token: &str,
    filter: pb::ActivityFilter,
) -> Result<tonic::Streaming<pb::WatchActivityResponse>, Status> {
    activity(app)
        .watch_activity(authed(
            pb::WatchActivityRequest {
                filter: Some(filter),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
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

// ----------------------------------------------------------------------- forgot password

async fn request_reset(app: &TestApp, tenant: &str, email: &str) -> Result<(), Status> {
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest {
            tenant: tenant.to_owned(),
            email: email.to_owned(),
        })
        .await
        .map(|_| ())
}

async fn reset_with(app: &TestApp, token: &str, password: &str) -> Result<(), Status> {
    app.auth()
        .reset_password_with_token(pb::ResetPasswordWithTokenRequest {
            token: token.to_owned(),
            new_password: password.to_owned(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_password_mails_a_single_use_link_and_never_tells_who_exists() {
    let app = spawn_app_with(&[("lockout-threshold", "2")]).await;
    let (account, token) = owner(&app, "Acme", "ann@acme.test").await;
    let before = app.mails_to_now(&account.email).len();
    // Unknown emails and accounts get the same empty answer, and no mail goes anywhere.
    assert!(
        request_reset(&app, &account.tenant_slug, "nobody@acme.test")
            .await
            .is_ok()
    );
    assert!(
        request_reset(&app, "no-such-account", &account.email)
            .await
            .is_ok()
    );
    expect_bad_fields(
        request_reset(&app, "", "not-an-email").await,
        &["email", "tenant"],
    );

    // Locked out, Ann asks for a link.
    for _ in 0..2 {
        let _ = app
            .login(&account.tenant_slug, &account.email, "Wrong-Passw0rd")
            .await;
    }
    assert!(
        request_reset(&app, &account.tenant_slug, "ANN@acme.test")
            .await
            .is_ok()
    );
    let mail = app
        .wait_for_mails_to(&account.email, before + 1)
        .await
        .pop()
        .unwrap();
    assert!(mail.contains("reset-password?token="), "{mail}");
    assert!(mail.contains("60 minutes"), "{mail}");
    let reset_token = token_from_mail(&mail);
    assert!(app.mails_to_now("nobody@acme.test").is_empty());

    expect_bad_fields(
        reset_with(&app, &reset_token, "weak").await,
        &["new_password"],
    );
    expect_bad_fields(
        reset_with(&app, "made-up", "N3w-Password!").await,
        &["token"],
    );
    reset_with(&app, &reset_token, "N3w-Password!")
        .await
        .expect("the link works");
    expect_bad_fields(
        reset_with(&app, &reset_token, "Other-N3w-Pass").await,
        &["token"],
    );
    // The old session ended, the old password is gone, and the lock was lifted.
    expect_code(app.who_am_i(&token).await, Code::Unauthenticated);
    expect_reason(
        login(&app, &account, &account.email).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert!(
        app.login(&account.tenant_slug, &account.email, "N3w-Password!")
            .await
            .is_ok()
    );

    // A link expires.
    assert!(
        request_reset(&app, &account.tenant_slug, &account.email)
            .await
            .is_ok()
    );
    let mail = app
        .wait_for_mails_to(&account.email, before + 2)
        .await
        .pop()
        .unwrap();
    app.clock.advance(61 * MINUTE);
    expect_reason(
        reset_with(&app, &token_from_mail(&mail), "Later-N3w-Pass").await,
        Code::FailedPrecondition,
        "TOKEN_EXPIRED",
    );
}

// ---------------------------------------------------------------- replicas (PostgreSQL)

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
    let created = next_record(&mut feed).await;
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
