//! `roster.v1.AuthService`: sign-up, activation, login, the session lifecycle and password
//! change, each through the real gRPC interface, success and refusal paths.

use std::time::Duration;

use roster::api::pb;
use tonic::Code;

use crate::harness::{
    PASSWORD, authed, body, expect_bad_fields, expect_code, expect_reason, header, link_from_mail,
    sign_up_request, spawn_app, token_from_mail,
};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn seconds(timestamp: Option<prost_types::Timestamp>) -> i64 {
    timestamp.expect("timestamp is set").seconds
}

fn now_seconds(app: &crate::harness::TestApp) -> i64 {
    use roster::model::Clock;
    app.clock.now().timestamp()
}

// ---------------------------------------------------------------------------------- SignUp

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_creates_the_account_and_mails_its_owner_an_activation_link() {
    let app = spawn_app().await;
    let response = app
        .auth()
        .sign_up(sign_up_request(
            "Acme Call-Center, Ltd.",
            "Ann@Example.COM",
            PASSWORD,
        ))
        .await
        .expect("sign-up succeeds")
        .into_inner();
    assert_eq!(response.tenant_slug, "acme-call-center-ltd");
    let tenant_id = uuid::Uuid::parse_str(&response.tenant_id).expect("tenant id is a UUID");
    let user_id = uuid::Uuid::parse_str(&response.user_id).expect("user id is a UUID");
    assert_eq!(tenant_id.get_version_num(), 7);
    assert_eq!(user_id.get_version_num(), 7);

    // The address is normalised, and the message is a plain RFC 5322 file with a usable link.
    let mail = app.latest_mail_to("ann@example.com").await;
    let subject = header(&mail, "subject").expect("a subject");
    assert!(subject.contains("Acme Call-Center, Ltd."), "{subject}");
    assert!(
        header(&mail, "from").is_some_and(|from| from.contains("no-reply@roster.localhost")),
        "{mail}"
    );
    assert!(body(&mail).contains("Hello Ann"), "{mail}");
    assert!(body(&mail).contains("72 hours"), "{mail}");
    let link = link_from_mail(&mail);
    assert!(
        link.starts_with("http://localhost:50051/activate?token="),
        "{link}"
    );
    assert!(token_from_mail(&mail).len() >= 32, "{link}");
    assert_eq!(app.mails_to_now("ann@example.com").len(), 1);

    // Not active yet.
    expect_reason(
        app.login(&response.tenant_slug, "ann@example.com", PASSWORD)
            .await,
        Code::FailedPrecondition,
        "ACCOUNT_PENDING_CONFIRMATION",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_names_every_invalid_field_and_writes_nothing() {
    let app = spawn_app().await;
    let status = expect_bad_fields(
        app.auth()
            .sign_up(pb::SignUpRequest {
                account_name: "   ".to_owned(),
                first_name: "x".repeat(101),
                last_name: "Bell\u{7}".to_owned(),
                email: "not-an-email".to_owned(),
                password: "short".to_owned(),
                ..Default::default()
            })
            .await,
        &[
            "account_name",
            "email",
            "first_name",
            "last_name",
            "password",
        ],
    );
    assert_eq!(
        crate::harness::reason(&status).as_deref(),
        Some("INVALID_ARGUMENT")
    );
    // The message names the fields too, for people reading logs.
    for field in ["account_name", "email", "password"] {
        assert!(status.message().contains(field), "{}", status.message());
    }

    // Only the password is wrong: still nothing is written.
    expect_bad_fields(
        app.auth()
            .sign_up(sign_up_request(
                "Nothing Ltd",
                "ann@example.com",
                "alllowercase1",
            ))
            .await,
        &["password"],
    );
    expect_reason(
        app.login("nothing-ltd", "ann@example.com", "alllowercase1")
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    assert!(app.mails_to_now("ann@example.com").is_empty());

    // The slug was not taken by the refused attempts.
    let account = app.sign_up("Nothing Ltd", "ann@example.com").await;
    assert_eq!(account.tenant_slug, "nothing-ltd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_account_with_the_same_name_gets_its_own_slug() {
    let app = spawn_app().await;
    let first = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let second = app.sign_up_and_activate("ACME", "bob@acme.test").await;
    assert_eq!(first.tenant_slug, "acme");
    assert_ne!(second.tenant_slug, first.tenant_slug);
    assert!(
        second.tenant_slug.starts_with("acme-"),
        "{}",
        second.tenant_slug
    );
    assert_ne!(second.tenant_id, first.tenant_id);
    // Each slug leads to its own account.
    let tokens = app.login_owner(&second).await;
    assert_eq!(tokens.user.expect("user").tenant_id, second.tenant_id);
    expect_reason(
        app.login(&first.tenant_slug, "bob@acme.test", PASSWORD)
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_refuses_an_email_address_that_no_mail_could_reach() {
    let app = spawn_app().await;
    // Each of these was accepted, and its activation mail was never sent: lettre refuses the
    // address (RFC 5321 dot-atom local part, RFC 1035 labels), so the owner could never activate.
    for (i, email) in [
        "ann.@example.com",
        ".ann@example.com",
        "a..b@example.com",
        "ann@-example.com",
    ]
    .into_iter()
    .enumerate()
    {
        expect_bad_fields(
            app.auth()
                .sign_up(sign_up_request(&format!("Probe {i}"), email, PASSWORD))
                .await,
            &["email"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_any_script_reach_the_activation_mail_and_the_profile_intact() {
    let app = spawn_app().await;
    let response = app
        .auth()
        .sign_up(pb::SignUpRequest {
            account_name: "Café Zürich".to_owned(),
            first_name: "Zoë".to_owned(),
            last_name: "Ōsaka-Łukasz".to_owned(),
            email: "zoe@example.com".to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        })
        .await
        .expect("sign-up succeeds")
        .into_inner();
    assert!(
        !response.tenant_slug.is_empty()
            && response
                .tenant_slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{}",
        response.tenant_slug
    );
    let mail = app.latest_mail_to("zoe@example.com").await;
    assert!(body(&mail).contains("Hello Zoë"), "{mail}");
    app.auth()
        .activate_account(pb::ActivateAccountRequest {
            token: token_from_mail(&mail),
            password: String::new(),
            ..Default::default()
        })
        .await
        .expect("the link in a non-ASCII message works");
    let session = app
        .login(&response.tenant_slug, "zoe@example.com", PASSWORD)
        .await
        .expect("login");
    let me = app.who_am_i(&session.access_token).await.expect("who am i");
    let user = me.user.expect("user");
    assert_eq!(user.first_name, "Zoë");
    assert_eq!(user.last_name, "Ōsaka-Łukasz");
    assert_eq!(me.tenant.expect("tenant").name, "Café Zürich");
}

// ------------------------------------------------------------------------- ActivateAccount

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_makes_the_owner_active_and_able_to_log_in() {
    let app = spawn_app().await;
    let account = app.sign_up("Acme", "ann@acme.test").await;
    let token = token_from_mail(&app.latest_mail_to("ann@acme.test").await);
    let user = app
        .auth()
        .activate_account(pb::ActivateAccountRequest {
            token,
            password: String::new(),
            ..Default::default()
        })
        .await
        .expect("activation succeeds")
        .into_inner()
        .user
        .expect("the activated user");
    assert_eq!(user.id, account.user_id);
    assert_eq!(user.tenant_id, account.tenant_id);
    assert_eq!(user.status, pb::UserStatus::Active as i32);
    assert!(user.is_owner);
    assert_eq!(user.email, "ann@acme.test");
    assert_eq!(user.first_name, "Ann");
    assert_eq!(user.last_name, "Owner");
    app.login_owner(&account).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_token_works_only_once() {
    let app = spawn_app().await;
    app.sign_up("Acme", "ann@acme.test").await;
    let token = token_from_mail(&app.latest_mail_to("ann@acme.test").await);
    let activate = |token: String| {
        let mut client = app.auth();
        async move {
            client
                .activate_account(pb::ActivateAccountRequest {
                    token,
                    password: String::new(),
                    ..Default::default()
                })
                .await
        }
    };
    activate(token.clone()).await.expect("first use succeeds");
    expect_bad_fields(activate(token).await, &["token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_link_expires_after_72_hours() {
    let app = spawn_app().await;
    let early = app.sign_up("Early Ltd", "early@acme.test").await;
    let late = app.sign_up("Late Ltd", "late@acme.test").await;
    let early_token = token_from_mail(&app.latest_mail_to("early@acme.test").await);
    let late_token = token_from_mail(&app.latest_mail_to("late@acme.test").await);
    let activate = |token: String| {
        let mut client = app.auth();
        async move {
            client
                .activate_account(pb::ActivateAccountRequest {
                    token,
                    password: String::new(),
                    ..Default::default()
                })
                .await
        }
    };

    app.clock.advance(71 * HOUR + 58 * MINUTE);
    activate(early_token)
        .await
        .expect("a link just short of 72 hours old works");
    app.login_owner(&early).await;

    app.clock.advance(3 * MINUTE);
    expect_reason(
        activate(late_token).await,
        Code::FailedPrecondition,
        "TOKEN_EXPIRED",
    );
    expect_reason(
        app.login(&late.tenant_slug, &late.email, PASSWORD).await,
        Code::FailedPrecondition,
        "ACCOUNT_PENDING_CONFIRMATION",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_or_missing_activation_token_is_an_invalid_argument() {
    let app = spawn_app().await;
    app.sign_up("Acme", "ann@acme.test").await;
    let real = token_from_mail(&app.latest_mail_to("ann@acme.test").await);
    for token in [
        "garbage".to_owned(),
        String::new(),
        "   ".to_owned(),
        format!("{real}x"),
    ] {
        let status = expect_bad_fields(
            app.auth()
                .activate_account(pb::ActivateAccountRequest {
                    token: token.clone(),
                    password: String::new(),
                    ..Default::default()
                })
                .await,
            &["token"],
        );
        assert!(!status.message().is_empty(), "{token:?}");
    }
}

// ----------------------------------------------------------------------------------- Login

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_accepts_the_account_slug_or_id_and_the_email_or_username() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "Ann@Acme.test").await;
    let username = app
        .who_am_i(&app.login_owner(&account).await.access_token)
        .await
        .expect("who am i")
        .user
        .expect("user")
        .username;
    assert!(!username.is_empty());

    for (tenant, login) in [
        (account.tenant_slug.clone(), account.email.clone()),
        (account.tenant_id.clone(), account.email.clone()),
        (
            account.tenant_slug.to_uppercase(),
            "ANN@acme.TEST".to_owned(),
        ),
        (account.tenant_slug.clone(), username.clone()),
        (account.tenant_id.clone(), format!("  {username}  ")),
    ] {
        let response = app
            .login(&tenant, &login, PASSWORD)
            .await
            .unwrap_or_else(|err| panic!("login {tenant:?} / {login:?}: {err:?}"));
        let user = response.user.expect("the user");
        assert_eq!(user.id, account.user_id);
        assert_eq!(user.tenant_id, account.tenant_id);
        assert!(user.last_login_at.is_some());
        assert!(!response.access_token.is_empty());
        assert!(!response.refresh_token.is_empty());
        assert_ne!(response.access_token, response.refresh_token);
        uuid::Uuid::parse_str(&response.session_id).expect("session id is a UUID");
        // Default lifetimes: 15 minutes for access, 30 days for the session.
        let now = now_seconds(&app);
        let access = seconds(response.access_token_expires_at) - now;
        let refresh = seconds(response.refresh_token_expires_at) - now;
        assert!((14 * 60..=15 * 60).contains(&access), "{access}");
        assert!(
            (30 * 86400 - 60..=30 * 86400).contains(&refresh),
            "{refresh}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_user_with_the_right_password_is_told_to_activate_first() {
    let app = spawn_app().await;
    let account = app.sign_up("Acme", "ann@acme.test").await;
    let status = expect_reason(
        app.login(&account.tenant_slug, &account.email, PASSWORD)
            .await,
        Code::FailedPrecondition,
        "ACCOUNT_PENDING_CONFIRMATION",
    );
    assert!(status.message().contains("activat"), "{}", status.message());
    // A wrong password reveals nothing about the state of the account.
    expect_reason(
        app.login(&account.tenant_slug, &account.email, "Wr0ng-password")
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_unknown_user_and_an_unknown_account_get_the_same_answer() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let attempts = [
        (
            account.tenant_slug.clone(),
            account.email.clone(),
            "Wr0ng-password",
        ),
        (
            account.tenant_slug.clone(),
            "nobody@acme.test".to_owned(),
            PASSWORD,
        ),
        (
            "no-such-account".to_owned(),
            account.email.clone(),
            PASSWORD,
        ),
        (
            uuid::Uuid::now_v7().to_string(),
            account.email.clone(),
            PASSWORD,
        ),
    ];
    let mut answers = Vec::new();
    for (tenant, login, password) in attempts {
        let status = expect_reason(
            app.login(&tenant, &login, password).await,
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        );
        answers.push((status.code(), status.message().to_owned()));
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "{answers:?}"
    );
    // And the right password still works afterwards.
    app.login_owner(&account).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_missing_fields_names_each_of_them() {
    let app = spawn_app().await;
    expect_bad_fields(
        app.login("", "  ", "").await,
        &["login", "password", "tenant"],
    );
}

// -------------------------------------------------------------------------- RefreshSession

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_rotates_the_tokens_and_the_new_access_token_works() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let first = app.login_owner(&account).await;
    app.clock.advance(MINUTE);
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert!(seconds(second.access_token_expires_at) > seconds(first.access_token_expires_at));
    // The session's lifetime does not grow with each refresh.
    assert_eq!(
        seconds(second.refresh_token_expires_at),
        seconds(first.refresh_token_expires_at)
    );
    assert_eq!(second.user.expect("user").id, account.user_id);
    let me = app.who_am_i(&second.access_token).await.expect("who am i");
    assert_eq!(me.user.expect("user").id, account.user_id);

    // The newest refresh token rotates again.
    let third = app.refresh(&second.refresh_token).await.expect("refresh");
    app.who_am_i(&third.access_token).await.expect("who am i");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_refresh_token_ends_the_whole_session() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let other_session = app.login_owner(&account).await;
    let first = app.login_owner(&account).await;
    let second = app.refresh(&first.refresh_token).await.expect("refresh");

    // Someone replays the spent token.
    expect_reason(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_REFRESH_TOKEN",
    );
    // The session is over at once: its current tokens stop working too.
    expect_code(
        app.who_am_i(&second.access_token).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.who_am_i(&first.access_token).await,
        Code::Unauthenticated,
    );
    assert!(!app.validate(&second.access_token).await.valid);
    expect_reason(
        app.refresh(&second.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_REFRESH_TOKEN",
    );
    // Other sessions of the same user are not affected.
    app.who_am_i(&other_session.access_token)
        .await
        .expect("the other session works");
    app.refresh(&other_session.refresh_token)
        .await
        .expect("the other session refreshes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_refresh_token_two_rotations_old_also_ends_the_session() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let first = app.login_owner(&account).await;
    // Whoever holds the stolen token rotated twice before the replay is noticed.
    let second = app.refresh(&first.refresh_token).await.expect("refresh");
    let third = app.refresh(&second.refresh_token).await.expect("refresh");
    expect_code(
        app.refresh(&first.refresh_token).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.who_am_i(&third.access_token).await,
        Code::Unauthenticated,
    );
    expect_code(
        app.refresh(&third.refresh_token).await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_presented_twice_at_once_ends_the_session() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let first = app.login_owner(&account).await;
    let (a, b) = tokio::join!(
        app.refresh(&first.refresh_token),
        app.refresh(&first.refresh_token)
    );
    let winners: Vec<_> = [a, b].into_iter().filter_map(Result::ok).collect();
    assert!(winners.len() <= 1, "both refreshes succeeded");
    for winner in winners {
        expect_code(
            app.who_am_i(&winner.access_token).await,
            Code::Unauthenticated,
        );
        expect_code(
            app.refresh(&winner.refresh_token).await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_missing_refresh_token_is_refused() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    expect_bad_fields(app.refresh("").await, &["refresh_token"]);
    for token in [
        "garbage".to_owned(),
        session.access_token.clone(),
        format!("{}x", session.refresh_token),
    ] {
        expect_reason(
            app.refresh(&token).await,
            Code::Unauthenticated,
            "INVALID_REFRESH_TOKEN",
        );
    }
    // A forged token naming the session neither works nor ends the session.
    app.refresh(&session.refresh_token)
        .await
        .expect("the real token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_after_30_days_even_if_refreshed() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let mut tokens = app.login_owner(&account).await;
    for _ in 0..3 {
        app.clock.advance(9 * 24 * HOUR);
        tokens = app.refresh(&tokens.refresh_token).await.expect("refresh");
    }
    app.clock.advance(3 * 24 * HOUR + MINUTE);
    expect_reason(
        app.refresh(&tokens.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_REFRESH_TOKEN",
    );
}

// ---------------------------------------------------------------------------------- Logout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_logout_the_sessions_tokens_are_refused_on_the_next_call() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let other_session = app.login_owner(&account).await;
    let session = app.login_owner(&account).await;
    app.auth()
        .logout(authed(pb::LogoutRequest::default(), &session.access_token))
        .await
        .expect("logout");
    expect_reason(
        app.who_am_i(&session.access_token).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    let validation = app.validate(&session.access_token).await;
    assert!(!validation.valid);
    assert!(validation.principal.is_none());
    expect_reason(
        app.refresh(&session.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_REFRESH_TOKEN",
    );
    expect_code(
        app.auth()
            .logout(authed(pb::LogoutRequest::default(), &session.access_token))
            .await,
        Code::Unauthenticated,
    );
    // Only that session ended.
    app.who_am_i(&other_session.access_token)
        .await
        .expect("the other session works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_a_token_is_unauthenticated() {
    let app = spawn_app().await;
    expect_reason(
        app.auth().logout(pb::LogoutRequest::default()).await,
        Code::Unauthenticated,
        "MISSING_TOKEN",
    );
}

// --------------------------------------------------------------------------- ValidateToken

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_token_describes_the_principal_behind_a_valid_token() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    let validation = app.validate(&session.access_token).await;
    assert!(validation.valid);
    let principal = validation.principal.expect("a principal");
    assert_eq!(principal.tenant_id, account.tenant_id);
    assert_eq!(principal.user_id, account.user_id);
    assert_eq!(principal.session_id, session.session_id);
    assert!(principal.is_owner);
    assert_eq!(principal.expires_at, session.access_token_expires_at);
    // The owner holds every permission, the everyone-permission support.contact included.
    for (permission, _) in roster::model::ALL_PERMISSIONS {
        assert!(
            principal.permissions.iter().any(|p| p == permission),
            "{permission} missing from {:?}",
            principal.permissions
        );
    }
    assert!(principal.permissions.iter().any(|p| p == "support.contact"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_token_answers_invalid_for_garbage_instead_of_failing() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    let mut tampered = session.access_token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for token in [
        "",
        "garbage",
        "rat1.e30.c2ln",
        tampered.as_str(),
        session.refresh_token.as_str(),
    ] {
        let validation = app.validate(token).await;
        assert!(!validation.valid, "{token:?} was accepted");
        assert!(validation.principal.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_expires_after_its_lifetime_but_the_session_goes_on() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    app.clock.advance(14 * MINUTE);
    assert!(app.validate(&session.access_token).await.valid);
    app.clock.advance(MINUTE + Duration::from_secs(1));
    let validation = app.validate(&session.access_token).await;
    assert!(!validation.valid);
    assert!(validation.principal.is_none());
    expect_reason(
        app.who_am_i(&session.access_token).await,
        Code::Unauthenticated,
        "TOKEN_EXPIRED",
    );
    let renewed = app.refresh(&session.refresh_token).await.expect("refresh");
    assert!(app.validate(&renewed.access_token).await.valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_access_token_lifetime_is_honoured() {
    let app = crate::harness::spawn_app_with(&[("access-token-ttl", "2m")]).await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    let lifetime = seconds(session.access_token_expires_at) - now_seconds(&app);
    assert!((60..=120).contains(&lifetime), "{lifetime}");
    app.clock.advance(2 * MINUTE + Duration::from_secs(1));
    assert!(!app.validate(&session.access_token).await.valid);
}

// ---------------------------------------------------------------------------------- WhoAmI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_returns_the_callers_user_and_account() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme Ltd", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    let me = app.who_am_i(&session.access_token).await.expect("who am i");
    let user = me.user.expect("user");
    let tenant = me.tenant.expect("tenant");
    assert_eq!(user.id, account.user_id);
    assert_eq!(user.tenant_id, account.tenant_id);
    assert_eq!(user.email, "ann@acme.test");
    assert_eq!(user.first_name, "Ann");
    assert_eq!(user.last_name, "Owner");
    assert_eq!(user.status, pb::UserStatus::Active as i32);
    assert!(user.is_owner);
    assert!(!user.password_change_required);
    assert!(user.created_at.is_some());
    assert!(user.last_login_at.is_some());
    assert_eq!(tenant.id, account.tenant_id);
    assert_eq!(tenant.slug, account.tenant_slug);
    assert_eq!(tenant.name, "Acme Ltd");
    assert_eq!(tenant.owner_user_id, account.user_id);
    assert!(tenant.created_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_without_a_valid_bearer_token_is_unauthenticated() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    expect_reason(
        app.auth().who_am_i(pb::WhoAmIRequest::default()).await,
        Code::Unauthenticated,
        "MISSING_TOKEN",
    );
    expect_reason(
        app.who_am_i("garbage").await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    expect_reason(
        app.who_am_i(&session.refresh_token).await,
        Code::Unauthenticated,
        "INVALID_TOKEN",
    );
    let mut basic = tonic::Request::new(pb::WhoAmIRequest::default());
    basic.metadata_mut().insert(
        "authorization",
        format!("Basic {}", session.access_token)
            .parse()
            .expect("ascii"),
    );
    expect_reason(
        app.auth().who_am_i(basic).await,
        Code::Unauthenticated,
        "MISSING_TOKEN",
    );
    // The scheme is case-insensitive.
    let mut lower = tonic::Request::new(pb::WhoAmIRequest::default());
    lower.metadata_mut().insert(
        "authorization",
        format!("bearer {}", session.access_token)
            .parse()
            .expect("ascii"),
    );
    app.auth().who_am_i(lower).await.expect("bearer works");
}

// ------------------------------------------------------------------------- ChangePassword

async fn change_password(
    app: &crate::harness::TestApp,
    access_token: &str,
    current: &str,
    new: &str,
) -> Result<pb::ChangePasswordResponse, tonic::Status> {
    app.auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: current.to_owned(),
                new_password: new.to_owned(),
                ..Default::default()
            },
            access_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_refuses_a_wrong_current_password() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    expect_bad_fields(
        change_password(
            &app,
            &session.access_token,
            "Wr0ng-password",
            "N3w-Password",
        )
        .await,
        &["current_password"],
    );
    app.login_owner(&account).await;
    expect_code(
        app.login(&account.tenant_slug, &account.email, "N3w-Password")
            .await,
        Code::Unauthenticated,
    );
    app.who_am_i(&session.access_token)
        .await
        .expect("the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_refuses_a_weak_or_unchanged_new_password() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let session = app.login_owner(&account).await;
    for weak in [
        "short1A",
        "alllowercase1",
        "ALLUPPERCASE1",
        "NoDigitsHere",
        "",
    ] {
        expect_bad_fields(
            change_password(&app, &session.access_token, PASSWORD, weak).await,
            &["new_password"],
        );
    }
    expect_bad_fields(
        change_password(&app, &session.access_token, PASSWORD, PASSWORD).await,
        &["new_password"],
    );
    expect_bad_fields(
        change_password(&app, &session.access_token, "", "").await,
        &["current_password", "new_password"],
    );
    app.login_owner(&account).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_replaces_the_password_and_ends_the_other_sessions_at_once() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let other = app.login_owner(&account).await;
    let caller = app.login_owner(&account).await;
    let changed = change_password(&app, &caller.access_token, PASSWORD, "N3w-Password")
        .await
        .expect("password changed");
    // The answer carries a fresh access token for the calling session.
    let principal = app
        .validate(&changed.access_token)
        .await
        .principal
        .expect("the fresh access token is valid");
    assert_eq!(principal.session_id, caller.session_id);
    assert!(changed.access_token_expires_at.is_some());

    // The other session is refused on its very next call, and cannot be refreshed.
    expect_code(
        app.who_am_i(&other.access_token).await,
        Code::Unauthenticated,
    );
    assert!(!app.validate(&other.access_token).await.valid);
    expect_code(
        app.refresh(&other.refresh_token).await,
        Code::Unauthenticated,
    );
    // The calling session keeps working.
    app.who_am_i(&caller.access_token)
        .await
        .expect("the calling session works");
    let renewed = app
        .refresh(&caller.refresh_token)
        .await
        .expect("the calling session refreshes");
    app.who_am_i(&renewed.access_token)
        .await
        .expect("renewed access works");

    expect_reason(
        app.login(&account.tenant_slug, &account.email, PASSWORD)
            .await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let fresh = app
        .login(&account.tenant_slug, &account.email, "N3w-Password")
        .await
        .expect("the new password logs in");
    app.who_am_i(&fresh.access_token)
        .await
        .expect("new session works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_without_a_token_is_unauthenticated() {
    let app = spawn_app().await;
    expect_code(
        app.auth()
            .change_password(pb::ChangePasswordRequest {
                current_password: PASSWORD.to_owned(),
                new_password: "N3w-Password".to_owned(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
}

// ----------------------------------------------------------------------- Across restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_revocations_survive_a_restart_of_the_server() {
    let app = spawn_app().await;
    let account = app.sign_up_and_activate("Acme", "ann@acme.test").await;
    let kept = app.login_owner(&account).await;
    let ended = app.login_owner(&account).await;
    app.auth()
        .logout(authed(pb::LogoutRequest::default(), &ended.access_token))
        .await
        .expect("logout");

    let app = app.restart().await;
    app.clock.advance(MINUTE);
    let me = app
        .who_am_i(&kept.access_token)
        .await
        .expect("an access token from before the restart still works");
    assert_eq!(me.user.expect("user").id, account.user_id);
    assert!(app.validate(&kept.access_token).await.valid);
    expect_code(
        app.who_am_i(&ended.access_token).await,
        Code::Unauthenticated,
    );
    assert!(!app.validate(&ended.access_token).await.valid);
    expect_code(
        app.refresh(&ended.refresh_token).await,
        Code::Unauthenticated,
    );
    let renewed = app
        .refresh(&kept.refresh_token)
        .await
        .expect("a refresh token from before the restart still works");
    app.who_am_i(&renewed.access_token)
        .await
        .expect("renewed access works");
    app.login_owner(&account).await;
}

// ------------------------------------------------------------------------ Tenant isolation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_email_in_two_accounts_belongs_to_two_separate_users() {
    let app = spawn_app().await;
    let a = app
        .sign_up_and_activate_as("Alpha", "ann@shared.test", "Alpha-Passw0rd")
        .await;
    let b = app
        .sign_up_and_activate_as("Beta", "ann@shared.test", "Beta-Passw0rd")
        .await;
    assert_ne!(a.user_id, b.user_id);
    assert_ne!(a.tenant_id, b.tenant_id);

    // B's password does not open A, nor the other way round.
    expect_reason(
        app.login(&a.tenant_slug, &a.email, &b.password).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    expect_reason(
        app.login(&b.tenant_id, &b.email, &a.password).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );

    // Each token carries its own account, and sees only that account.
    for account in [&a, &b] {
        let session = app.login_owner(account).await;
        let principal = app
            .validate(&session.access_token)
            .await
            .principal
            .expect("principal");
        assert_eq!(principal.tenant_id, account.tenant_id);
        assert_eq!(principal.user_id, account.user_id);
        let me = app.who_am_i(&session.access_token).await.expect("who am i");
        assert_eq!(me.tenant.expect("tenant").id, account.tenant_id);
        assert_eq!(me.user.expect("user").id, account.user_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_or_changing_a_password_in_one_account_leaves_the_other_alone() {
    let app = spawn_app().await;
    let a = app.sign_up_and_activate("Alpha", "ann@shared.test").await;
    let b = app.sign_up_and_activate("Beta", "ann@shared.test").await;
    let a_session = app.login_owner(&a).await;
    let b_session = app.login_owner(&b).await;
    change_password(&app, &a_session.access_token, PASSWORD, "N3w-Password")
        .await
        .expect("password changed");
    app.auth()
        .logout(authed(
            pb::LogoutRequest::default(),
            &a_session.access_token,
        ))
        .await
        .expect("logout");
    app.who_am_i(&b_session.access_token)
        .await
        .expect("the other account's session works");
    app.login_owner(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_another_script_keeps_its_letters_in_the_slug() {
    let app = spawn_app().await;
    let account = app
        .sign_up_and_activate("Müller & Söhne Télécom", "anna@mueller.test")
        .await;
    assert_eq!(account.tenant_slug, "muller-sohne-telecom");
    // The slug is what people sign in with.
    let tokens = app.login_owner(&account).await;
    assert_eq!(tokens.user.expect("user").tenant_id, account.tenant_id);
}
