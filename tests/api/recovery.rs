//! "Forgot password": the mailed single-use link.

use tonic::Code;

use crate::harness::{
    expect_bad_fields, expect_code, expect_reason, spawn_app_with, token_from_mail,
};

use crate::security_support::*;

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
