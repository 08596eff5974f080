//! Helpers of the security tests (two-factor, lockout, rate limits, IP allow-list, sessions,
//! activity, recovery, replicas): accounts with a logged-in owner, TOTP codes, and thin wrappers
//! over the calls they repeat.

#![allow(dead_code)]

use std::time::Duration;

use roster::{
    api::pb::{
        self, security_service_client::SecurityServiceClient,
        two_factor_service_client::TwoFactorServiceClient, user_service_client::UserServiceClient,
    },
    model::Clock,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::harness::{Account, PASSWORD, TestApp, activity, authed, expect_reason, sessions};

pub const MINUTE: Duration = Duration::from_secs(60);
pub const STEP: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------ helpers

pub fn two_factor(app: &TestApp) -> TwoFactorServiceClient<Channel> {
    TwoFactorServiceClient::new(app.channel.clone())
}

pub fn security(app: &TestApp) -> SecurityServiceClient<Channel> {
    SecurityServiceClient::new(app.channel.clone())
}

pub fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel.clone())
}

/// An activated account and its owner's access token.
pub async fn owner(app: &TestApp, name: &str, email: &str) -> (Account, String) {
    let account = app.sign_up_and_activate(name, email).await;
    let token = app.login_owner(&account).await.access_token;
    (account, token)
}

/// Creates a user with [`PASSWORD`] and `roles` (and a Dialer profile, when given) as the holder
/// of `token`, activates them, and returns their id.
pub async fn member(
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

pub async fn login(
    app: &TestApp,
    account: &Account,
    email: &str,
) -> Result<pb::LoginResponse, Status> {
    app.login(&account.tenant_slug, email, PASSWORD).await
}

/// `message` sent as if from `address` through a proxy (the `x-forwarded-for` header).
pub fn forwarded<T>(mut request: Request<T>, address: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().expect("ascii address"));
    request
}

pub fn login_request(account: &Account, email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        tenant: account.tenant_slug.clone(),
        login: email.to_owned(),
        password: password.to_owned(),
    }
}

/// The code an authenticator app shows at `unix_seconds` for a base32 secret.
pub fn code_at(secret: &str, unix_seconds: i64) -> String {
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
pub fn code_now(app: &TestApp, secret: &str) -> String {
    code_at(secret, app.clock.now().timestamp())
}

/// A code that is wrong now (the current code plus one, digit-wise).
pub fn wrong_code(app: &TestApp, secret: &str) -> String {
    code_now(app, secret)
        .chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

/// Enrols the holder of `token`: returns the secret, the backup codes and a fresh token. The
/// clock then moves to the next step, so that the confirming code's step is in the past.
pub async fn enrol(app: &TestApp, token: &str) -> (String, Vec<String>, String) {
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

pub async fn complete(
    app: &TestApp,
    challenge: &str,
    code: &str,
) -> Result<pb::LoginResponse, Status> {
    app.auth()
        .complete_login(pb::CompleteLoginRequest {
            challenge: challenge.to_owned(),
            code: code.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Logs in with the password, expecting the second-factor challenge.
pub async fn challenge(app: &TestApp, account: &Account, email: &str) -> String {
    let answer = login(app, account, email)
        .await
        .expect("the password step passes");
    assert!(answer.second_factor_required, "{answer:?}");
    assert!(answer.access_token.is_empty() && answer.refresh_token.is_empty());
    assert!(answer.challenge.len() >= 32);
    answer.challenge
}

pub async fn status(
    app: &TestApp,
    token: &str,
    user_id: &str,
) -> Result<pb::TwoFactorStatus, Status> {
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

pub async fn unlock(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, Status> {
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

pub async fn get_user(app: &TestApp, token: &str, user_id: &str) -> pb::User {
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
pub async fn next_record(
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

/// Two logins with a wrong password, each refused as INVALID_CREDENTIALS (not locked yet).
pub async fn two_wrong_passwords(app: &TestApp, tenant: &str, login: &str) {
    for _ in 0..2 {
        expect_reason(
            app.login(tenant, login, "Wrong-Passw0rd").await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
    }
}

pub fn acl(networks: &[&str]) -> Option<pb::DialerProfile> {
    Some(pb::DialerProfile {
        extended_ip_acl: true,
        allowed_networks: networks.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    })
}

pub fn with_agent<T>(mut request: Request<T>, agent: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("user-agent", agent.parse().expect("ascii"));
    request
}

pub async fn revoke(app: &TestApp, token: &str, session_id: &str) -> Result<(), Status> {
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

pub async fn watch(
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

pub async fn request_reset(app: &TestApp, tenant: &str, email: &str) -> Result<(), Status> {
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest {
            tenant: tenant.to_owned(),
            email: email.to_owned(),
        })
        .await
        .map(|_| ())
}

pub async fn reset_with(app: &TestApp, token: &str, password: &str) -> Result<(), Status> {
    app.auth()
        .reset_password_with_token(pb::ResetPasswordWithTokenRequest {
            token: token.to_owned(),
            new_password: password.to_owned(),
        })
        .await
        .map(|_| ())
}
