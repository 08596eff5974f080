//! Two-factor authentication (TOTP and backup codes) through the real gRPC interface.

use roster::{
    api::pb::{self},
    model::Clock,
};
use tonic::Code;

use crate::harness::{
    actions, authed, expect_bad_fields, expect_code, expect_reason, list_activity, list_sessions,
    spawn_app,
};

use crate::security_support::*;

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
