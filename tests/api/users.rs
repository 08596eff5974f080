//! `roster.v1.UserService`, one user at a time: creation and activation, reading and searching,
//! updates, deletion, deactivation, invitations, password resets and ownership transfer.

use roster::api::pb;
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::harness::{
    PASSWORD, TestApp, body, expect_bad_fields, expect_code, expect_reason, header, link_from_mail,
    spawn_app, token_from_mail,
};
use crate::references::{statement, uuid};
use crate::users_support::{
    Org, accepted, activate, count, create, deactivate, delete, emails, flush_mail, get, list,
    list_all, login, member, member_by, new_user, org, pending, principal, query, reactivate,
    resend, reset_password, roles, token_follows_roles, transfer, transfer_keeping, update,
};

fn status(user: &pb::User) -> pb::UserStatus {
    pb::UserStatus::try_from(user.status).expect("a known status")
}

async fn who_am_i(app: &TestApp, token: &str) -> pb::User {
    app.who_am_i(token)
        .await
        .expect("WhoAmI")
        .user
        .expect("user")
}

/// A Dialer profile with every field set, secrets included.
fn full_profile() -> pb::DialerProfile {
    pb::DialerProfile {
        oauth_email: "agent7@gmail.test".to_owned(),
        caldav_token: "caldav-s3cret-token".to_owned(),
        caldav_token_set: false,
        active: true,
        assign_leads: true,
        extended_ip_acl: true,
        allowed_networks: vec![
            "203.0.113.0/24".to_owned(),
            "2001:db8::/32".to_owned(),
            "198.51.100.7".to_owned(),
        ],
        auto_dial: pb::AutoDialMode::Always as i32,
        caller_id_name: "Acme Sales".to_owned(),
        caller_id_number: "+493012345678".to_owned(),
        virtual_extension: "1234".to_owned(),
        timezone: "Europe/Berlin".to_owned(),
        language: "de-DE".to_owned(),
        tenant_superuser: false,
        sip: Some(pb::SipSettings {
            option: Some(pb::sip_settings::Option::Pbx(pb::Pbx {
                username: "agent7".to_owned(),
                password: "pbx-s3cret-password".to_owned(),
                password_set: false,
                extension: Some(pb::pbx::Extension::Number("2001".to_owned())),
            })),
        }),
    }
}

fn custom_uri(uri: &str) -> Option<pb::SipSettings> {
    Some(pb::SipSettings {
        option: Some(pb::sip_settings::Option::CustomUri(pb::CustomSipUri {
            uri: uri.to_owned(),
        })),
    })
}

fn webrtc() -> Option<pb::SipSettings> {
    Some(pb::SipSettings {
        option: Some(pb::sip_settings::Option::Webrtc(pb::WebRtc {})),
    })
}

fn with_profile(profile: pb::DialerProfile) -> pb::User {
    pb::User {
        dialer_profile: Some(profile),
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------ CreateUser

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_with_a_password_is_pending_until_they_follow_the_activation_link() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut request = new_user("Bob@Acme.test", &["reports", "ORDERS"]);
    request.first_name = "Bob".to_owned();
    request.last_name = "Builder".to_owned();
    request.return_activation_token = false;
    let response = create(&app, acme.token(), request).await.expect("created");
    assert!(response.activation_token.is_empty());
    let bob = response.user.expect("user");
    assert_eq!(status(&bob), pb::UserStatus::PendingConfirmation);
    assert_eq!(bob.email, "bob@acme.test");
    assert_eq!(
        bob.username, "bob@acme.test",
        "the username defaults to the email"
    );
    assert_eq!(bob.tenant_id, acme.account.tenant_id);
    assert_eq!(bob.roles, roles(&["ORDERS", "REPORTS"]));
    assert!(!bob.is_owner);
    assert!(bob.last_login_at.is_none());
    assert_eq!(
        uuid::Uuid::parse_str(&bob.id)
            .expect("a UUID")
            .get_version_num(),
        7
    );

    let mail = app.latest_mail_to("bob@acme.test").await;
    assert!(
        header(&mail, "subject").is_some_and(|s| s.contains("Activate")),
        "{mail}"
    );
    assert!(body(&mail).contains("Hello Bob"), "{mail}");
    assert!(link_from_mail(&mail).contains("token="));
    expect_reason(
        app.login(acme.slug(), "bob@acme.test", PASSWORD).await,
        Code::FailedPrecondition,
        "ACCOUNT_PENDING_CONFIRMATION",
    );

    let activated = activate(&app, &token_from_mail(&mail), "")
        .await
        .expect("activation")
        .user
        .expect("user");
    assert_eq!(activated.id, bob.id);
    assert_eq!(status(&activated), pb::UserStatus::Active);
    let session = login(&app, &acme, "bob@acme.test", PASSWORD).await;
    assert_eq!(session.user_id, bob.id);
    assert_eq!(
        status(&get(&app, acme.token(), &bob.id).await.expect("get")),
        pb::UserStatus::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_without_a_password_is_invited_and_chooses_one_on_activation() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut request = new_user("cy@acme.test", &["REPORTS"]);
    request.password = String::new();
    request.return_activation_token = false;
    let cy = create(&app, acme.token(), request)
        .await
        .expect("created")
        .user
        .expect("user");
    assert_eq!(status(&cy), pb::UserStatus::PendingConfirmation);

    let mail = app.latest_mail_to("cy@acme.test").await;
    assert!(
        header(&mail, "subject").is_some_and(|s| s.contains("invited")),
        "{mail}"
    );
    let token = token_from_mail(&mail);
    expect_bad_fields(activate(&app, &token, "").await, &["password"]);
    expect_bad_fields(activate(&app, &token, "weak").await, &["password"]);
    // The refused attempts did not spend the token.
    let activated = activate(&app, &token, "Ch0sen-by-Cy")
        .await
        .expect("activation with a password")
        .user
        .expect("user");
    assert_eq!(status(&activated), pb::UserStatus::Active);
    login(&app, &acme, "cy@acme.test", "Ch0sen-by-Cy").await;
    expect_reason(
        app.login(acme.slug(), "cy@acme.test", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_activation_token_hands_the_token_back_and_sends_no_mail() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let response = create(&app, acme.token(), new_user("dee@acme.test", &["ORDERS"]))
        .await
        .expect("created");
    assert!(response.activation_token.len() >= 32);
    // A later message has gone out, so one for dee would have too.
    flush_mail(&app, &acme, "marker@acme.test").await;
    assert!(app.mails_to_now("dee@acme.test").is_empty());
    activate(&app, &response.activation_token, "")
        .await
        .expect("the returned token activates");
    login(&app, &acme, "dee@acme.test", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_profile_round_trips_and_its_secrets_are_never_returned() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut request = new_user("agent7@acme.test", &["ORDERS"]);
    request.username = "agent7".to_owned();
    request.dialer_profile = Some(full_profile());
    let created = create(&app, acme.token(), request)
        .await
        .expect("created")
        .user
        .expect("user");
    let fetched = get(&app, acme.token(), &created.id).await.expect("get");
    let listed = list_all(&app, acme.token(), query("agent7", pb::MatchMode::Exact)).await;
    assert_eq!(listed.len(), 1);
    for user in [&created, &fetched, &listed[0]] {
        assert_eq!(user.username, "agent7");
        let profile = user.dialer_profile.clone().expect("a dialer profile");
        let expected = pb::DialerProfile {
            caldav_token: String::new(),
            caldav_token_set: true,
            // A bare address is stored as a one-address network.
            allowed_networks: vec![
                "203.0.113.0/24".to_owned(),
                "2001:db8::/32".to_owned(),
                "198.51.100.7/32".to_owned(),
            ],
            sip: Some(pb::SipSettings {
                option: Some(pb::sip_settings::Option::Pbx(pb::Pbx {
                    username: "agent7".to_owned(),
                    password: String::new(),
                    password_set: true,
                    extension: Some(pb::pbx::Extension::Number("2001".to_owned())),
                })),
            }),
            ..full_profile()
        };
        assert_eq!(profile, expected);
        let printed = format!("{user:?}");
        assert!(!printed.contains("s3cret"), "a secret leaked: {printed}");
    }

    // Each SIP option in turn; the stored PBX password stays when an update does not send one.
    let updated = update(
        &app,
        acme.token(),
        &created.id,
        with_profile(pb::DialerProfile {
            sip: custom_uri("sip:agent7@pbx.example.com"),
            ..Default::default()
        }),
        &["dialer_profile.sip"],
    )
    .await
    .expect("custom URI");
    let profile = updated.dialer_profile.expect("profile");
    assert_eq!(profile.sip, custom_uri("sip:agent7@pbx.example.com"));
    assert_eq!(profile.timezone, "Europe/Berlin", "other fields stay");
    let updated = update(
        &app,
        acme.token(),
        &created.id,
        with_profile(pb::DialerProfile {
            sip: webrtc(),
            ..Default::default()
        }),
        &["dialer_profile.sip"],
    )
    .await
    .expect("WebRTC");
    assert_eq!(updated.dialer_profile.expect("profile").sip, webrtc());
    let dynamic_pbx = Some(pb::SipSettings {
        option: Some(pb::sip_settings::Option::Pbx(pb::Pbx {
            username: String::new(),
            password: String::new(),
            password_set: false,
            extension: Some(pb::pbx::Extension::Dynamic(true)),
        })),
    });
    let updated = update(
        &app,
        acme.token(),
        &created.id,
        with_profile(pb::DialerProfile {
            sip: dynamic_pbx,
            ..Default::default()
        }),
        &["dialer_profile.sip"],
    )
    .await
    .expect("PBX with a dynamic extension");
    match updated
        .dialer_profile
        .expect("profile")
        .sip
        .and_then(|s| s.option)
    {
        Some(pb::sip_settings::Option::Pbx(pbx)) => {
            assert!(pbx.password.is_empty());
            assert!(pbx.password_set, "the stored PBX password is kept");
            assert_eq!(pbx.extension, Some(pb::pbx::Extension::Dynamic(true)));
        }
        other => panic!("expected PBX settings, got {other:?}"),
    }
}

/// A user of `org` with [`full_profile`], secrets included.
async fn create_dialer_user(app: &TestApp, org: &Org, email: &str) -> pb::User {
    let mut request = new_user(email, &["ORDERS"]);
    request.dialer_profile = Some(full_profile());
    create(app, org.token(), request)
        .await
        .expect("created")
        .user
        .expect("user")
}

/// The Dialer secrets of `user_id` as the database holds them.
async fn stored_secrets(app: &TestApp, org: &Org, user_id: &str) -> (String, String) {
    let db = app.database().await;
    let row = db
        .query_one_raw(statement(
            app,
            "SELECT caldav_token, pbx_password FROM users WHERE tenant_id = $1 AND id = $2",
            vec![uuid(&org.account.tenant_id), uuid(user_id)],
        ))
        .await
        .expect("the user's row")
        .expect("a row");
    (
        row.try_get_by_index(0).expect("a CalDAV token"),
        row.try_get_by_index(1).expect("a PBX password"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_secrets_are_stored_sealed_never_in_clear() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut ids = Vec::new();
    for email in ["agent7@acme.test", "agent8@acme.test"] {
        ids.push(create_dialer_user(&app, &acme, email).await.id);
    }
    let first = stored_secrets(&app, &acme, &ids[0]).await;
    let second = stored_secrets(&app, &acme, &ids[1]).await;
    for stored in [&first.0, &first.1, &second.0, &second.1] {
        assert!(stored.starts_with("v1."), "not sealed: {stored}");
        assert!(!stored.contains("s3cret"), "in clear: {stored}");
    }
    // The same secret seals differently each time (a fresh nonce).
    assert_ne!(first.0, second.0);
    assert_ne!(first.1, second.1);

    // A new token is sealed too; the PBX password not sent stays as it was.
    update(
        &app,
        acme.token(),
        &ids[0],
        with_profile(pb::DialerProfile {
            caldav_token: "another-s3cret".to_owned(),
            ..Default::default()
        }),
        &["dialer_profile.caldav_token"],
    )
    .await
    .expect("a new CalDAV token");
    let updated = stored_secrets(&app, &acme, &ids[0]).await;
    assert!(updated.0.starts_with("v1.") && !updated.0.contains("s3cret"));
    assert_ne!(updated.0, first.0);
    assert_eq!(updated.1, first.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_secrets_an_older_version_stored_in_clear_are_sealed_at_the_next_start() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let created = create_dialer_user(&app, &acme, "agent7@acme.test").await;
    // What a version before sealing left behind.
    let db = app.database().await;
    db.execute_raw(statement(
        &app,
        "UPDATE users SET caldav_token = $1, pbx_password = $2 WHERE tenant_id = $3 AND id = $4",
        vec![
            "clear-caldav-s3cret".into(),
            "clear-pbx-s3cret".into(),
            uuid(&acme.account.tenant_id),
            uuid(&created.id),
        ],
    ))
    .await
    .expect("clear secrets");

    let app = app.restart().await;
    let mut stored = stored_secrets(&app, &acme, &created.id).await;
    for _ in 0..100 {
        if stored.0.starts_with("v1.") && stored.1.starts_with("v1.") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        stored = stored_secrets(&app, &acme, &created.id).await;
    }
    for value in [&stored.0, &stored.1] {
        assert!(
            value.starts_with("v1."),
            "not sealed after the start: {value}"
        );
        assert!(!value.contains("s3cret"), "still in clear: {value}");
    }
    let profile = get(&app, acme.token(), &created.id)
        .await
        .expect("get")
        .dialer_profile
        .expect("profile");
    assert!(profile.caldav_token_set && profile.caldav_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_names_every_bad_field_and_creates_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let before = count(&app, acme.token()).await;

    let mut bad = new_user("not-an-email", &["REPORTS", "not a role!"]);
    bad.password = "password".to_owned();
    bad.dialer_profile = Some(pb::DialerProfile {
        timezone: "Mars/Olympus_Mons".to_owned(),
        allowed_networks: vec!["10.0.0.0/8".to_owned(), "300.1.2.0/24".to_owned()],
        caller_id_number: "030 1234".to_owned(),
        sip: custom_uri("http://not-sip.example.com"),
        ..Default::default()
    });
    let status = expect_bad_fields(
        create(&app, acme.token(), bad).await,
        &[
            "dialer_profile.allowed_networks[1]",
            "dialer_profile.caller_id_number",
            "dialer_profile.sip.custom_uri.uri",
            "dialer_profile.timezone",
            "email",
            "password",
            "roles",
        ],
    );
    assert!(
        status.message().contains("not a role!"),
        "{}",
        status.message()
    );

    // Each problem alone is refused as well.
    let cases: Vec<(&str, pb::CreateUserRequest)> = vec![
        ("roles", new_user("noroles@acme.test", &[])),
        ("roles", new_user("unknown@acme.test", &["SUPERVISOR"])),
        ("password", {
            let mut r = new_user("weak@acme.test", &["REPORTS"]);
            r.password = "alllowercase1".to_owned();
            r
        }),
        ("dialer_profile.timezone", {
            let mut r = new_user("tz@acme.test", &["REPORTS"]);
            r.dialer_profile = Some(pb::DialerProfile {
                timezone: "Europe/Atlantis".to_owned(),
                ..Default::default()
            });
            r
        }),
        ("dialer_profile.allowed_networks[0]", {
            let mut r = new_user("cidr@acme.test", &["REPORTS"]);
            r.dialer_profile = Some(pb::DialerProfile {
                allowed_networks: vec!["10.0.0.0/33".to_owned()],
                ..Default::default()
            });
            r
        }),
        ("dialer_profile.allowed_networks", {
            let mut r = new_user("acl@acme.test", &["REPORTS"]);
            r.dialer_profile = Some(pb::DialerProfile {
                extended_ip_acl: true,
                ..Default::default()
            });
            r
        }),
    ];
    for (field, request) in cases {
        let email = request.email.clone();
        expect_bad_fields(create(&app, acme.token(), request).await, &[field]);
        expect_code(
            app.login(acme.slug(), &email, PASSWORD).await,
            Code::Unauthenticated,
        );
    }
    assert_eq!(count(&app, acme.token()).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_email_is_already_exists_but_another_account_may_use_it() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    pending(&app, acme.token(), "bob@shared.test", &["REPORTS"]).await;
    let before = count(&app, acme.token()).await;

    let status = expect_code(
        create(&app, acme.token(), new_user("BOB@shared.test", &["ORDERS"])).await,
        Code::AlreadyExists,
    );
    assert_eq!(crate::harness::bad_fields(&status), vec!["email"]);
    // The owner's address is taken too.
    expect_code(
        create(&app, acme.token(), new_user("ann@acme.test", &["ORDERS"])).await,
        Code::AlreadyExists,
    );
    // A username equal to someone's taken username is refused with that field.
    let mut request = new_user("other@shared.test", &["ORDERS"]);
    request.username = "bob@shared.test".to_owned();
    let status = expect_code(
        create(&app, acme.token(), request).await,
        Code::AlreadyExists,
    );
    assert_eq!(crate::harness::bad_fields(&status), vec!["username"]);
    assert_eq!(count(&app, acme.token()).await, before);

    let theirs = pending(&app, globex.token(), "bob@shared.test", &["REPORTS"]).await;
    assert_eq!(theirs.tenant_id, globex.account.tenant_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_users_write_create_users_and_only_the_owner_creates_admins() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let reporter = member(&app, &acme, "rex@acme.test", &["REPORTS"]).await;
    expect_reason(
        create(
            &app,
            &reporter.access_token,
            new_user("x@acme.test", &["REPORTS"]),
        )
        .await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
    expect_reason(
        create(
            &app,
            &admin.access_token,
            new_user("y@acme.test", &["ADMIN"]),
        )
        .await,
        Code::PermissionDenied,
        "ADMIN_ROLE_OWNER_ONLY",
    );
    let made = member_by(
        &app,
        &acme,
        &admin.access_token,
        new_user("z@acme.test", &["REPORTS", "FINANCE"]),
    )
    .await;
    let by_owner = pending(&app, acme.token(), "boss@acme.test", &["ADMIN"]).await;
    assert_eq!(by_owner.roles, roles(&["ADMIN"]));
    assert!(accepted(&app, &made.access_token).await);
}

// --------------------------------------------------------------------------- GetUser / List

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_user_finds_users_of_the_account_and_answers_not_found_otherwise() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let found = get(&app, acme.token(), &bob.id).await.expect("get");
    assert_eq!(found.email, "bob@acme.test");
    assert_eq!(found.created_at, bob.created_at);
    let owner = get(&app, acme.token(), &acme.owner.user_id)
        .await
        .expect("get owner");
    assert!(owner.is_owner);
    expect_code(
        get(&app, acme.token(), &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
    expect_bad_fields(get(&app, acme.token(), "not-a-uuid").await, &["user_id"]);
    expect_code(get(&app, "garbage", &bob.id).await, Code::Unauthenticated);
}

/// Alice Smith, Bob Smithers (username bobby), Carol Jones (username csmith), besides the owner.
async fn search_fixture(app: &TestApp) -> Org {
    let acme = org(app, "Acme", "ann@acme.test").await;
    for (email, username, first, last) in [
        ("alice@acme.test", "", "Alice", "Smith"),
        ("bob@acme.test", "bobby", "Bob", "Smithers"),
        ("carol@acme.test", "csmith", "Carol", "Jones"),
    ] {
        let mut request = new_user(email, &["REPORTS"]);
        request.username = username.to_owned();
        request.first_name = first.to_owned();
        request.last_name = last.to_owned();
        create(app, acme.token(), request).await.expect("create");
    }
    acme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_matches_text_in_names_email_and_username_by_contains_prefix_or_exact() {
    let app = spawn_app().await;
    let acme = search_fixture(&app).await;
    let token = acme.token();
    use pb::MatchMode::{Contains, Exact, Prefix, Unspecified};
    let cases: &[(&str, pb::MatchMode, &[&str])] = &[
        (
            "smith",
            Contains,
            &["alice@acme.test", "bob@acme.test", "carol@acme.test"],
        ),
        (
            "SMITH",
            Unspecified,
            &["alice@acme.test", "bob@acme.test", "carol@acme.test"],
        ),
        ("smith", Prefix, &["alice@acme.test", "bob@acme.test"]),
        ("smith", Exact, &["alice@acme.test"]),
        ("Bobby", Exact, &["bob@acme.test"]),
        ("car", Prefix, &["carol@acme.test"]),
        ("carol@acme.test", Exact, &["carol@acme.test"]),
        ("arol@", Contains, &["carol@acme.test"]),
        ("arol@", Prefix, &[]),
        ("ann", Prefix, &["ann@acme.test"]),
        (
            "acme.test",
            Contains,
            &[
                "alice@acme.test",
                "ann@acme.test",
                "bob@acme.test",
                "carol@acme.test",
            ],
        ),
        // LIKE wildcards in the query are plain characters.
        ("%", Contains, &[]),
        ("_", Contains, &[]),
        ("nobody", Contains, &[]),
    ];
    for (text, mode, expected) in cases {
        assert_eq!(
            emails(&app, token, query(text, *mode)).await,
            expected.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>(),
            "query {text:?} {mode:?}"
        );
    }
    expect_bad_fields(
        list(
            &app,
            token,
            pb::ListUsersRequest {
                filter: Some(query(&"x".repeat(201), Contains)),
                ..Default::default()
            },
        )
        .await,
        &["filter.query"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_matches_names_in_other_scripts_and_mixed_case_and_follows_renames() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();
    let mut ids = Vec::new();
    for (email, first, last) in [
        ("jurgen@acme.test", "Jürgen", "ÜBERMANN"),
        ("olga@acme.test", "Ольга", "Смирнова"),
        ("eleni@acme.test", "Ελένη", "ΠΑΠΑΔΟΠΟΥΛΟΥ"),
        ("mei@acme.test", "美", "王"),
        ("sigma@acme.test", "Σίσυφος", "McDONALD"),
    ] {
        let mut request = new_user(email, &["REPORTS"]);
        request.first_name = first.to_owned();
        request.last_name = last.to_owned();
        ids.push(
            create(&app, token, request)
                .await
                .expect("create")
                .user
                .unwrap()
                .id,
        );
    }
    use pb::MatchMode::{Contains, Exact, Prefix};
    let cases: &[(&str, pb::MatchMode, &[&str])] = &[
        // Upper-case letters outside ASCII fold like ASCII ones, on both databases.
        ("übermann", Exact, &["jurgen@acme.test"]),
        ("ÜBER", Prefix, &["jurgen@acme.test"]),
        ("jürGEN", Exact, &["jurgen@acme.test"]),
        ("ÜRG", Contains, &["jurgen@acme.test"]),
        ("смирн", Prefix, &["olga@acme.test"]),
        ("ОЛЬГА", Exact, &["olga@acme.test"]),
        ("мирнов", Contains, &["olga@acme.test"]),
        ("мирнов", Prefix, &[]),
        ("παπαδοπουλου", Exact, &["eleni@acme.test"]),
        ("ΕΛΈΝΗ", Exact, &["eleni@acme.test"]),
        ("王", Exact, &["mei@acme.test"]),
        ("美", Contains, &["mei@acme.test"]),
        ("mcdonald", Exact, &["sigma@acme.test"]),
        ("DON", Contains, &["sigma@acme.test"]),
        ("σίσυφος", Exact, &["sigma@acme.test"]),
        // A match never spans two parts (first name, last name, email, username).
        ("jürgen übermann", Contains, &[]),
        ("mannjurgen", Contains, &[]),
    ];
    for (text, mode, expected) in cases {
        assert_eq!(
            emails(&app, token, query(text, *mode)).await,
            expected.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>(),
            "query {text:?} {mode:?}"
        );
    }
    // A rename and an admin's change of address are found at once; the old ones are not.
    update(
        &app,
        token,
        &ids[0],
        pb::User {
            first_name: "Jörg".into(),
            email: "joerg@acme.test".into(),
            ..Default::default()
        },
        &["first_name", "email"],
    )
    .await
    .expect("rename");
    assert_eq!(
        emails(&app, token, query("JÖRG", Exact)).await,
        ["joerg@acme.test"]
    );
    assert!(emails(&app, token, query("jürgen", Exact)).await.is_empty());
    assert_eq!(
        emails(&app, token, query("joerg@acme.test", Exact)).await,
        ["joerg@acme.test"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_filters_by_status_and_role() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();
    member(&app, &acme, "alice@acme.test", &["REPORTS"]).await;
    pending(&app, token, "bob@acme.test", &["ORDERS"]).await;
    let carol = member(&app, &acme, "carol@acme.test", &["REPORTS", "ORDERS"]).await;
    deactivate(&app, token, &carol.user_id)
        .await
        .expect("deactivate");
    use pb::UserStatus::{Active, Inactive, Locked, PendingConfirmation};
    let filter = |statuses: &[pb::UserStatus], role_keys: &[&str]| pb::UserFilter {
        statuses: statuses.iter().map(|s| *s as i32).collect(),
        roles: roles(role_keys),
        ..Default::default()
    };
    let cases: &[(&[pb::UserStatus], &[&str], &[&str])] = &[
        (&[PendingConfirmation], &[], &["bob@acme.test"]),
        (&[Active], &[], &["alice@acme.test", "ann@acme.test"]),
        (
            &[Inactive, PendingConfirmation],
            &[],
            &["bob@acme.test", "carol@acme.test"],
        ),
        (&[Locked], &[], &[]),
        (&[], &["REPORTS"], &["alice@acme.test", "carol@acme.test"]),
        (
            &[],
            &["orders", "FINANCE"],
            &["bob@acme.test", "carol@acme.test"],
        ),
        (&[], &["ADMIN"], &[]),
        (&[Active], &["REPORTS"], &["alice@acme.test"]),
    ];
    for (statuses, role_keys, expected) in cases {
        assert_eq!(
            emails(&app, token, filter(statuses, role_keys)).await,
            expected.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>(),
            "statuses {statuses:?} roles {role_keys:?}"
        );
    }
    let bad = |filter: pb::UserFilter| pb::ListUsersRequest {
        filter: Some(filter),
        ..Default::default()
    };
    // A role that does not exist in the account, and a malformed key, are refused by name.
    expect_bad_fields(
        list(&app, token, bad(filter(&[], &["KING"]))).await,
        &["filter.roles"],
    );
    expect_bad_fields(
        list(&app, token, bad(filter(&[], &["no such role!"]))).await,
        &["filter.roles"],
    );
    expect_bad_fields(
        list(
            &app,
            token,
            bad(pb::UserFilter {
                statuses: vec![42],
                ..Default::default()
            }),
        )
        .await,
        &["filter.statuses"],
    );
}

/// Users whose email, username and last name sort in three different orders.
async fn sort_fixture(app: &TestApp) -> Org {
    let acme = org(app, "Acme", "ann@acme.test").await;
    for (email, username, last) in [
        ("delta@acme.test", "kilo", "Young"),
        ("bravo@acme.test", "mike", "Baker"),
        ("echo@acme.test", "juliet", "Xavier"),
        ("charlie@acme.test", "lima", "Miller"),
    ] {
        let mut request = new_user(email, &["REPORTS"]);
        request.username = username.to_owned();
        request.last_name = last.to_owned();
        create(app, acme.token(), request).await.expect("create");
    }
    acme
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_sorts_by_each_order_in_both_directions() {
    let app = spawn_app().await;
    let acme = sort_fixture(&app).await;
    let sorted = |order: pb::UserOrder, descending: bool| {
        let app = &app;
        let token = acme.token().to_owned();
        async move {
            list(
                app,
                &token,
                pb::ListUsersRequest {
                    order_by: order as i32,
                    descending,
                    ..Default::default()
                },
            )
            .await
            .expect("ListUsers")
            .users
            .into_iter()
            .map(|u| u.email)
            .collect::<Vec<_>>()
        }
    };
    let created = [
        "ann@acme.test",
        "delta@acme.test",
        "bravo@acme.test",
        "echo@acme.test",
        "charlie@acme.test",
    ];
    let cases: &[(pb::UserOrder, [&str; 5])] = &[
        (pb::UserOrder::Unspecified, created),
        (pb::UserOrder::Created, created),
        (
            pb::UserOrder::Email,
            [
                "ann@acme.test",
                "bravo@acme.test",
                "charlie@acme.test",
                "delta@acme.test",
                "echo@acme.test",
            ],
        ),
        (
            // Usernames: ann@acme.test, juliet, kilo, lima, mike.
            pb::UserOrder::Username,
            [
                "ann@acme.test",
                "echo@acme.test",
                "delta@acme.test",
                "charlie@acme.test",
                "bravo@acme.test",
            ],
        ),
        (
            // Last names: Baker, Miller, Owner, Xavier, Young.
            pb::UserOrder::LastName,
            [
                "bravo@acme.test",
                "charlie@acme.test",
                "ann@acme.test",
                "echo@acme.test",
                "delta@acme.test",
            ],
        ),
    ];
    for (order, expected) in cases {
        assert_eq!(sorted(*order, false).await, expected.to_vec(), "{order:?}");
        let mut reversed = expected.to_vec();
        reversed.reverse();
        assert_eq!(sorted(*order, true).await, reversed, "{order:?} descending");
    }
    expect_bad_fields(
        list(
            &app,
            acme.token(),
            pb::ListUsersRequest {
                order_by: 99,
                ..Default::default()
            },
        )
        .await,
        &["order_by"],
    );
}

/// Every page of a listing, and each page's total size.
async fn all_pages(
    app: &TestApp,
    token: &str,
    request: pb::ListUsersRequest,
) -> (Vec<Vec<String>>, Vec<i64>) {
    let mut pages = Vec::new();
    let mut totals = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = list(
            app,
            token,
            pb::ListUsersRequest {
                page_token: page_token.clone(),
                ..request.clone()
            },
        )
        .await
        .expect("a page");
        pages.push(response.users.into_iter().map(|u| u.email).collect());
        totals.push(response.total_size);
        if response.next_page_token.is_empty() {
            return (pages, totals);
        }
        assert!(pages.len() < 100, "pagination does not end");
        page_token = response.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_cover_every_user_once_in_order_whatever_the_sort() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    // Same last names on purpose, so ties are broken by id across page boundaries.
    for i in 0..12 {
        let mut request = new_user(
            &format!("user{:02}@acme.test", (i * 7) % 12),
            &[if i % 2 == 0 { "REPORTS" } else { "ORDERS" }],
        );
        request.last_name = ["Lee", "Kim", "Park"][i % 3].to_owned();
        create(&app, acme.token(), request).await.expect("create");
    }
    let total = 13;
    for order in [
        pb::UserOrder::Created,
        pb::UserOrder::Email,
        pb::UserOrder::Username,
        pb::UserOrder::LastName,
    ] {
        for descending in [false, true] {
            let request = pb::ListUsersRequest {
                order_by: order as i32,
                descending,
                page_size: 5,
                include_total_size: true,
                ..Default::default()
            };
            let (pages, totals) = all_pages(&app, acme.token(), request.clone()).await;
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            assert_eq!(sizes, vec![5, 5, 3], "{order:?} {descending}");
            assert!(totals.iter().all(|t| *t == total), "{totals:?}");
            let paged: Vec<String> = pages.concat();
            let whole = list(
                &app,
                acme.token(),
                pb::ListUsersRequest {
                    page_size: 100,
                    ..request
                },
            )
            .await
            .expect("one page");
            assert!(whole.next_page_token.is_empty());
            let whole: Vec<String> = whole.users.into_iter().map(|u| u.email).collect();
            assert_eq!(paged, whole, "{order:?} descending={descending}");
            let mut unique = paged.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), total as usize, "duplicates or gaps");
        }
    }

    // A filtered listing pages too, and counts only the matches.
    let (pages, totals) = all_pages(
        &app,
        acme.token(),
        pb::ListUsersRequest {
            filter: Some(pb::UserFilter {
                roles: roles(&["REPORTS"]),
                ..Default::default()
            }),
            page_size: 4,
            include_total_size: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pages.concat().len(), 6);
    assert_eq!(pages.len(), 2);
    assert!(totals.iter().all(|t| *t == 6));

    // Without include_total_size no count is made.
    let response = list(
        &app,
        acme.token(),
        pb::ListUsersRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(response.total_size, 0);
    assert_eq!(response.users.len(), 2);
    // 0 means the default of 50; the bounds are enforced.
    let response = list(&app, acme.token(), pb::ListUsersRequest::default())
        .await
        .expect("default page size");
    assert_eq!(response.users.len(), total as usize);
    for size in [-1, 1001] {
        expect_bad_fields(
            list(
                &app,
                acme.token(),
                pb::ListUsersRequest {
                    page_size: size,
                    ..Default::default()
                },
            )
            .await,
            &["page_size"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_continues_after_its_row_when_users_come_and_go_between_pages() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut ids = Vec::new();
    for name in ["b", "d", "f", "h", "j"] {
        ids.push(
            pending(
                &app,
                acme.token(),
                &format!("{name}@acme.test"),
                &["REPORTS"],
            )
            .await
            .id,
        );
    }
    let request = pb::ListUsersRequest {
        order_by: pb::UserOrder::Email as i32,
        page_size: 3,
        ..Default::default()
    };
    let first = list(&app, acme.token(), request.clone())
        .await
        .expect("first page");
    let seen: Vec<String> = first.users.iter().map(|u| u.email.clone()).collect();
    assert_eq!(seen, ["ann@acme.test", "b@acme.test", "d@acme.test"]);
    // Before the cursor: not shown again; after it: picked up; deleted: gone.
    pending(&app, acme.token(), "c@acme.test", &["REPORTS"]).await;
    pending(&app, acme.token(), "g@acme.test", &["REPORTS"]).await;
    delete(&app, acme.token(), &ids[2]).await.expect("delete f");
    let rest = list(
        &app,
        acme.token(),
        pb::ListUsersRequest {
            page_token: first.next_page_token,
            page_size: 10,
            ..request
        },
    )
    .await
    .expect("second page");
    let rest: Vec<String> = rest.users.into_iter().map(|u| u.email).collect();
    assert_eq!(rest, ["g@acme.test", "h@acme.test", "j@acme.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_reused_with_other_filters_or_order_is_an_invalid_argument() {
    let app = spawn_app().await;
    let acme = search_fixture(&app).await;
    let first = pb::ListUsersRequest {
        filter: Some(query("acme", pb::MatchMode::Contains)),
        page_size: 2,
        ..Default::default()
    };
    let page = list(&app, acme.token(), first.clone())
        .await
        .expect("first page");
    assert!(!page.next_page_token.is_empty());
    let changes = [
        pb::ListUsersRequest {
            filter: Some(query("smith", pb::MatchMode::Contains)),
            ..first.clone()
        },
        pb::ListUsersRequest {
            filter: Some(query("acme", pb::MatchMode::Prefix)),
            ..first.clone()
        },
        pb::ListUsersRequest {
            order_by: pb::UserOrder::Email as i32,
            ..first.clone()
        },
        pb::ListUsersRequest {
            descending: true,
            ..first.clone()
        },
        pb::ListUsersRequest {
            filter: Some(pb::UserFilter {
                statuses: vec![pb::UserStatus::Active as i32],
                ..query("acme", pb::MatchMode::Contains)
            }),
            ..first.clone()
        },
    ];
    for changed in changes {
        expect_bad_fields(
            list(
                &app,
                acme.token(),
                pb::ListUsersRequest {
                    page_token: page.next_page_token.clone(),
                    ..changed
                },
            )
            .await,
            &["page_token"],
        );
    }
    for garbage in ["garbage", "eyJ2IjoiIn0"] {
        expect_bad_fields(
            list(
                &app,
                acme.token(),
                pb::ListUsersRequest {
                    page_token: garbage.to_owned(),
                    ..first.clone()
                },
            )
            .await,
            &["page_token"],
        );
    }
    // A different page size is fine: it is not part of the query.
    list(
        &app,
        acme.token(),
        pb::ListUsersRequest {
            page_token: page.next_page_token,
            page_size: 10,
            ..first
        },
    )
    .await
    .expect("the same query with another page size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_other_users_needs_a_permission_that_reads_or_edits_them_in_list_and_get_alike() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let rex = member(&app, &acme, "rex@acme.test", &["REPORTS"]).await;
    let tess = member(&app, &acme, "tess@acme.test", &["TECH_CONFIG"]).await;
    let other = pending(&app, acme.token(), "other@acme.test", &["REPORTS"]).await;

    // Reports reads themself, and nobody else: not through GetUser, not through ListUsers.
    let me = get(&app, &rex.access_token, &rex.user_id)
        .await
        .expect("a user reads themself");
    assert_eq!(me.email, "rex@acme.test");
    for target in [&other.id, &acme.owner.user_id, &tess.user_id] {
        expect_reason(
            get(&app, &rex.access_token, target).await,
            Code::PermissionDenied,
            "MISSING_PERMISSION",
        );
    }
    expect_reason(
        list(
            &app,
            &rex.access_token,
            pb::ListUsersRequest {
                include_total_size: true,
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );

    // Tech. Configuration edits SIP and caller-ID settings, so it reads the users it edits.
    let read = get(&app, &tess.access_token, &other.id)
        .await
        .expect("TECH_CONFIG reads the users it may edit");
    assert_eq!(read.email, "other@acme.test");
    get(&app, &tess.access_token, &acme.owner.user_id)
        .await
        .expect("and the owner, as the Users page lists everyone");
    let listed = list_all(&app, &tess.access_token, pb::UserFilter::default()).await;
    assert_eq!(listed.len(), 4, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_user_changes_only_the_fields_named_in_the_mask() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let before = get(&app, acme.token(), &bob.user_id).await.expect("get");

    let changed = pb::User {
        email: "robert@acme.test".to_owned(),
        username: "robert".to_owned(),
        first_name: "Robert".to_owned(),
        last_name: "Builder".to_owned(),
        roles: roles(&["ORDERS", "FINANCE"]),
        ..Default::default()
    };
    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        changed.clone(),
        &["first_name"],
    )
    .await
    .expect("first name");
    assert_eq!(user.first_name, "Robert");
    assert_eq!(user.last_name, before.last_name);
    assert_eq!(user.email, "bob@acme.test");
    assert_eq!(user.roles, roles(&["REPORTS"]));
    let seconds = |u: &pb::User| u.updated_at.as_ref().map(|t| (t.seconds, t.nanos));
    assert!(seconds(&user) >= seconds(&before));

    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        changed.clone(),
        &["last_name", "email", "username"],
    )
    .await
    .expect("identity");
    assert_eq!(
        (
            user.last_name.as_str(),
            user.email.as_str(),
            user.username.as_str()
        ),
        ("Builder", "robert@acme.test", "robert")
    );
    // The new email and username log in; the old email no longer does.
    login(&app, &acme, "robert@acme.test", PASSWORD).await;
    login(&app, &acme, "robert", PASSWORD).await;
    expect_code(
        app.login(acme.slug(), "bob@acme.test", PASSWORD).await,
        Code::Unauthenticated,
    );

    let user = update(&app, acme.token(), &bob.user_id, changed, &["roles"])
        .await
        .expect("roles");
    assert_eq!(user.roles, roles(&["FINANCE", "ORDERS"]));
    assert!(user.dialer_profile.is_none());

    // One Dialer field creates the profile; others leave it be.
    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        with_profile(pb::DialerProfile {
            timezone: "America/New_York".to_owned(),
            language: "fr-FR".to_owned(),
            ..Default::default()
        }),
        &["dialer_profile.timezone"],
    )
    .await
    .expect("time zone");
    let profile = user.dialer_profile.expect("a profile");
    assert_eq!(profile.timezone, "America/New_York");
    assert_eq!(profile.language, "");
    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        with_profile(pb::DialerProfile {
            sip: custom_uri("sips:bob@pbx.acme.test"),
            caldav_token: "new-cal-s3cret".to_owned(),
            ..Default::default()
        }),
        &["dialer_profile.sip", "dialer_profile.caldav_token"],
    )
    .await
    .expect("sip and caldav token");
    let profile = user.dialer_profile.expect("a profile");
    assert_eq!(profile.sip, custom_uri("sips:bob@pbx.acme.test"));
    assert_eq!(profile.timezone, "America/New_York");
    assert!(profile.caldav_token.is_empty());
    assert!(profile.caldav_token_set);

    // The whole profile at once, and its removal.
    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        with_profile(full_profile()),
        &["dialer_profile"],
    )
    .await
    .expect("whole profile");
    assert_eq!(
        user.dialer_profile.expect("profile").caller_id_number,
        "+493012345678"
    );
    let user = update(
        &app,
        acme.token(),
        &bob.user_id,
        pb::User::default(),
        &["dialer_profile"],
    )
    .await
    .expect("profile removed");
    assert!(user.dialer_profile.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_user_refuses_a_missing_mask_unknown_paths_and_bad_values() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    pending(&app, acme.token(), "taken@acme.test", &["REPORTS"]).await;
    let good = pb::User {
        first_name: "Robert".to_owned(),
        ..Default::default()
    };
    expect_bad_fields(
        update(&app, acme.token(), &bob.id, good.clone(), &[]).await,
        &["update_mask"],
    );
    for path in [
        "nickname",
        "dialer_profile.nope",
        "id",
        "status",
        "is_owner",
        "tenant_id",
    ] {
        expect_bad_fields(
            update(&app, acme.token(), &bob.id, good.clone(), &[path]).await,
            &["update_mask"],
        );
    }
    let bad = pb::User {
        email: "nope".to_owned(),
        roles: roles(&["not a role!"]),
        dialer_profile: Some(pb::DialerProfile {
            timezone: "Nowhere/Land".to_owned(),
            caller_id_number: "12".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    expect_bad_fields(
        update(
            &app,
            acme.token(),
            &bob.id,
            bad,
            &[
                "email",
                "roles",
                "dialer_profile.timezone",
                "dialer_profile.caller_id_number",
            ],
        )
        .await,
        &[
            "user.dialer_profile.caller_id_number",
            "user.dialer_profile.timezone",
            "user.email",
            "user.roles",
        ],
    );
    expect_bad_fields(
        update(&app, acme.token(), &bob.id, pb::User::default(), &["roles"]).await,
        &["user.roles"],
    );
    let unknown = pb::User {
        roles: roles(&["KING"]),
        ..Default::default()
    };
    expect_bad_fields(
        update(&app, acme.token(), &bob.id, unknown, &["roles"]).await,
        &["user.roles"],
    );
    let status = expect_code(
        update(
            &app,
            acme.token(),
            &bob.id,
            pb::User {
                email: "TAKEN@acme.test".to_owned(),
                ..Default::default()
            },
            &["email"],
        )
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(crate::harness::bad_fields(&status), vec!["email"]);
    expect_code(
        update(
            &app,
            acme.token(),
            &uuid::Uuid::now_v7().to_string(),
            good,
            &["first_name"],
        )
        .await,
        Code::NotFound,
    );
    // Nothing of the refused updates stuck.
    let after = get(&app, acme.token(), &bob.id).await.expect("get");
    assert_eq!(after.email, "bob@acme.test");
    assert_eq!(after.first_name, bob.first_name);
    assert_eq!(after.roles, roles(&["REPORTS"]));
    assert!(after.dialer_profile.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_bites_on_the_users_next_call_and_a_refresh_carries_the_new_roles() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let before = principal(&app, &bob.access_token).await;
    assert_eq!(before.roles, roles(&["REPORTS"]));
    assert!(!before.permissions.iter().any(|p| p == "sip_settings.write"));

    // Changing only names leaves the token alone.
    update(
        &app,
        acme.token(),
        &bob.user_id,
        pb::User {
            first_name: "Bobby".to_owned(),
            ..Default::default()
        },
        &["first_name"],
    )
    .await
    .expect("names");
    assert!(accepted(&app, &bob.access_token).await);

    let set_roles = |keys: &'static [&'static str]| {
        let app = &app;
        let owner = acme.token().to_owned();
        let id = bob.user_id.clone();
        async move {
            update(
                app,
                &owner,
                &id,
                pb::User {
                    roles: roles(keys),
                    ..Default::default()
                },
                &["roles"],
            )
            .await
            .expect("roles")
        }
    };
    set_roles(&["REPORTS", "TECH_CONFIG"]).await;
    // The old token is refused or carries the new roles: never the old ones.
    token_follows_roles(&app, &bob.access_token, &["REPORTS", "TECH_CONFIG"]).await;
    let renewed = app
        .refresh(&bob.refresh_token)
        .await
        .expect("the session goes on");
    let after = principal(&app, &renewed.access_token).await;
    assert_eq!(after.roles, roles(&["REPORTS", "TECH_CONFIG"]));
    for permission in ["sip_settings.write", "caller_id.write", "reports.run"] {
        assert!(
            after.permissions.iter().any(|p| p == permission),
            "{permission} in {:?}",
            after.permissions
        );
    }
    assert!(!after.permissions.iter().any(|p| p == "users.read"));

    // Granting ADMIN opens the user list.
    set_roles(&["ADMIN"]).await;
    token_follows_roles(&app, &renewed.access_token, &["ADMIN"]).await;
    let admin = app.refresh(&renewed.refresh_token).await.expect("refresh");
    assert_eq!(
        list_all(&app, &admin.access_token, pb::UserFilter::default())
            .await
            .len(),
        2
    );

    // Revoking it closes the list at once for the token in hand.
    set_roles(&["REPORTS"]).await;
    match list(&app, &admin.access_token, pb::ListUsersRequest::default()).await {
        Err(status) => assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{status:?}"
        ),
        Ok(page) => panic!("a former admin still lists users: {page:?}"),
    }
    match get(&app, &admin.access_token, &acme.owner.user_id).await {
        Err(status) => assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{status:?}"
        ),
        Ok(user) => panic!("a former admin still reads other users: {user:?}"),
    }
    token_follows_roles(&app, &admin.access_token, &["REPORTS"]).await;
}

// ------------------------------------------------------------------------------ DeleteUser

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_ends_their_sessions_at_once_and_removes_them() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let second = login(&app, &acme, "bob@acme.test", PASSWORD).await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;

    delete(&app, &admin.access_token, &bob.user_id)
        .await
        .expect("an admin deletes a plain user");
    for session in [&bob, &second] {
        expect_code(
            app.who_am_i(&session.access_token).await,
            Code::Unauthenticated,
        );
        expect_code(
            app.refresh(&session.refresh_token).await,
            Code::Unauthenticated,
        );
    }
    expect_code(get(&app, acme.token(), &bob.user_id).await, Code::NotFound);
    assert!(
        !emails(&app, acme.token(), pb::UserFilter::default())
            .await
            .contains(&"bob@acme.test".to_owned())
    );
    expect_code(
        delete(&app, acme.token(), &bob.user_id).await,
        Code::NotFound,
    );
    expect_reason(
        app.login(acme.slug(), "bob@acme.test", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    // The address is free again.
    pending(&app, acme.token(), "bob@acme.test", &["ORDERS"]).await;
}

/// The rows that hang off a user carry the user's account in their reference: the database
/// itself refuses a role filed under another account, and a deleted user's rows go with them
/// (found through the account's keys, not by a scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_rows_are_tied_to_their_account_in_the_database() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let db = app.database().await;
    let backend = if app.postgres {
        DbBackend::Postgres
    } else {
        DbBackend::Sqlite
    };
    let uuid = |text: &str| Value::from(uuid::Uuid::parse_str(text).expect("a uuid"));
    let (p1, p2) = if app.postgres {
        ("$1", "$2")
    } else {
        ("?", "?")
    };
    let add_role = |tenant: &str| {
        Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO user_roles (tenant_id, user_id, role) VALUES ({p1}, {p2}, 'ORDERS')"
            ),
            [uuid(tenant), uuid(&bob.user_id)],
        )
    };
    let misfiled = db.execute_raw(add_role(&globex.account.tenant_id)).await;
    assert!(
        misfiled.is_err(),
        "a role of Acme's user was filed under Globex: {misfiled:?}"
    );
    db.execute_raw(add_role(&acme.account.tenant_id))
        .await
        .expect("the same role under the user's own account");

    let rows_of_bob = |table: &str| {
        Statement::from_sql_and_values(
            backend,
            format!("SELECT COUNT(*) FROM {table} WHERE user_id = {p1}"),
            [uuid(&bob.user_id)],
        )
    };
    let count = async |table: &str| -> i64 {
        db.query_one_raw(rows_of_bob(table))
            .await
            .expect("count")
            .expect("a row")
            .try_get_by_index(0)
            .expect("a number")
    };
    assert_eq!(count("user_roles").await, 2);
    assert_eq!(count("sessions").await, 1);
    delete(&app, acme.token(), &bob.user_id)
        .await
        .expect("the owner deletes bob");
    assert_eq!(count("user_roles").await, 0);
    assert_eq!(count("sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_cannot_delete_themself_and_nobody_deletes_the_owner() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let owner_id = acme.owner.user_id.clone();
    expect_reason(
        delete(&app, acme.token(), &owner_id).await,
        Code::PermissionDenied,
        "SELF",
    );
    expect_reason(
        delete(&app, &admin.access_token, &owner_id).await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    expect_reason(
        delete(&app, &admin.access_token, &admin.user_id).await,
        Code::PermissionDenied,
        "SELF",
    );
    assert!(accepted(&app, acme.token()).await);
    assert!(get(&app, acme.token(), &owner_id).await.is_ok());
    // The owner deletes an admin.
    delete(&app, acme.token(), &admin.user_id)
        .await
        .expect("owner deletes an admin");
    assert!(!accepted(&app, &admin.access_token).await);
}

// ------------------------------------------------------------------ Deactivate / Reactivate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_refuses_the_users_token_at_once_and_blocks_login_until_reactivation() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let user = deactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("deactivate");
    assert_eq!(status(&user), pb::UserStatus::Inactive);
    expect_code(app.who_am_i(&bob.access_token).await, Code::Unauthenticated);
    expect_code(app.refresh(&bob.refresh_token).await, Code::Unauthenticated);
    expect_reason(
        app.login(acme.slug(), "bob@acme.test", PASSWORD).await,
        Code::FailedPrecondition,
        "ACCOUNT_INACTIVE",
    );
    expect_code(
        deactivate(&app, acme.token(), &bob.user_id).await,
        Code::FailedPrecondition,
    );

    let user = reactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("reactivate");
    assert_eq!(status(&user), pb::UserStatus::Active);
    let session = login(&app, &acme, "bob@acme.test", PASSWORD).await;
    assert!(accepted(&app, &session.access_token).await);
    expect_code(
        reactivate(&app, acme.token(), &bob.user_id).await,
        Code::FailedPrecondition,
    );
    // A pending user is not "inactive" either.
    let pending_user = pending(&app, acme.token(), "pat@acme.test", &["REPORTS"]).await;
    expect_code(
        reactivate(&app, acme.token(), &pending_user.id).await,
        Code::FailedPrecondition,
    );
    expect_reason(
        deactivate(&app, acme.token(), &acme.owner.user_id).await,
        Code::PermissionDenied,
        "SELF",
    );
    expect_code(
        deactivate(&app, acme.token(), &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
}

// ------------------------------------------------------------------------ ResendInvitation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_an_invitation_mails_a_new_link_and_retires_the_old_one() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut request = new_user("ivy@acme.test", &["REPORTS"]);
    request.password = String::new();
    request.return_activation_token = false;
    let ivy = create(&app, acme.token(), request)
        .await
        .expect("invite")
        .user
        .expect("user");
    let first = token_from_mail(&app.latest_mail_to("ivy@acme.test").await);

    resend(&app, acme.token(), &ivy.id, false)
        .await
        .expect("resend");
    let mails = app.wait_for_mails_to("ivy@acme.test", 2).await;
    assert!(
        header(&mails[1], "subject").is_some_and(|s| s.contains("invited")),
        "still an invitation: {}",
        mails[1]
    );
    let second = token_from_mail(&mails[1]);
    assert_ne!(first, second);
    expect_bad_fields(activate(&app, &first, "Ivy-Passw0rd").await, &["token"]);

    // Asking for the token instead: no mail, and the mailed link is retired in turn.
    let third = resend(&app, acme.token(), &ivy.id, true)
        .await
        .expect("resend with the token")
        .activation_token;
    assert!(third.len() >= 32);
    flush_mail(&app, &acme, "marker@acme.test").await;
    assert_eq!(app.mails_to_now("ivy@acme.test").len(), 2);
    expect_bad_fields(activate(&app, &second, "Ivy-Passw0rd").await, &["token"]);
    activate(&app, &third, "Ivy-Passw0rd")
        .await
        .expect("the newest link works");
    login(&app, &acme, "ivy@acme.test", "Ivy-Passw0rd").await;

    expect_reason(
        resend(&app, acme.token(), &ivy.id, false).await,
        Code::FailedPrecondition,
        "USER_NOT_PENDING",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_to_a_user_created_with_a_password_sends_an_activation_link() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let pat = pending(&app, acme.token(), "pat@acme.test", &["REPORTS"]).await;
    resend(&app, acme.token(), &pat.id, false)
        .await
        .expect("resend");
    let mail = app.latest_mail_to("pat@acme.test").await;
    assert!(
        header(&mail, "subject").is_some_and(|s| s.contains("Activate")),
        "{mail}"
    );
    activate(&app, &token_from_mail(&mail), "")
        .await
        .expect("activation keeps the password given at creation");
    login(&app, &acme, "pat@acme.test", PASSWORD).await;
}

// --------------------------------------------------------------------------- ResetPassword

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_returns_a_temporary_password_and_ends_the_users_sessions() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let temporary = reset_password(&app, acme.token(), &bob.user_id, false)
        .await
        .expect("reset");
    assert!(temporary.len() >= 12, "{temporary}");
    assert_ne!(temporary, PASSWORD);
    expect_code(app.who_am_i(&bob.access_token).await, Code::Unauthenticated);
    expect_code(app.refresh(&bob.refresh_token).await, Code::Unauthenticated);
    expect_reason(
        app.login(acme.slug(), "bob@acme.test", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let session = login(&app, &acme, "bob@acme.test", &temporary).await;
    let me = who_am_i(&app, &session.access_token).await;
    assert!(!me.password_change_required);
    get(&app, &session.access_token, &bob.user_id)
        .await
        .expect("no change is required");
    // Each reset gives a different password.
    let again = reset_password(&app, acme.token(), &bob.user_id, false)
        .await
        .expect("reset again");
    assert_ne!(again, temporary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reset_requiring_a_change_nothing_but_the_change_works() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let adele = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let temporary = reset_password(&app, acme.token(), &adele.user_id, true)
        .await
        .expect("reset");
    let session = login(&app, &acme, "adele@acme.test", &temporary).await;
    let token = session.access_token.as_str();
    let me = who_am_i(&app, token).await;
    assert!(me.password_change_required);
    assert!(
        get(&app, acme.token(), &adele.user_id)
            .await
            .expect("get")
            .password_change_required
    );

    // Every UserService call but reading oneself is held back.
    let gate = "PASSWORD_CHANGE_REQUIRED";
    expect_reason(
        list(&app, token, pb::ListUsersRequest::default()).await,
        Code::FailedPrecondition,
        gate,
    );
    expect_reason(
        get(&app, token, &bob.id).await,
        Code::FailedPrecondition,
        gate,
    );
    expect_reason(
        create(&app, token, new_user("new@acme.test", &["REPORTS"])).await,
        Code::FailedPrecondition,
        gate,
    );
    expect_reason(
        update(
            &app,
            token,
            &adele.user_id,
            pb::User {
                first_name: "Del".to_owned(),
                ..Default::default()
            },
            &["first_name"],
        )
        .await,
        Code::FailedPrecondition,
        gate,
    );
    expect_reason(
        deactivate(&app, token, &bob.id).await,
        Code::FailedPrecondition,
        gate,
    );
    expect_reason(
        crate::users_support::bulk(
            &app,
            token,
            pb::BulkUpdateUsersRequest {
                selection: crate::users_support::all_users(),
                action: pb::BulkAction::Deactivate as i32,
                dry_run: true,
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        gate,
    );

    let changed = app
        .auth()
        .change_password(crate::harness::authed(
            pb::ChangePasswordRequest {
                current_password: temporary.clone(),
                new_password: "Adele-N3w-Password".to_owned(),
            },
            token,
        ))
        .await
        .expect("ChangePassword is allowed")
        .into_inner();
    let fresh = changed.access_token;
    assert!(!who_am_i(&app, &fresh).await.password_change_required);
    assert_eq!(
        list_all(&app, &fresh, pb::UserFilter::default())
            .await
            .len(),
        3
    );
    get(&app, &fresh, &bob.id).await.expect("now allowed");
    let later = login(&app, &acme, "adele@acme.test", "Adele-N3w-Password").await;
    assert!(
        !who_am_i(&app, &later.access_token)
            .await
            .password_change_required
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_a_dialer_users_password_needs_a_tenant_superuser_or_the_owner() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let mut superuser = new_user("sue@acme.test", &["ADMIN"]);
    superuser.dialer_profile = Some(pb::DialerProfile {
        tenant_superuser: true,
        ..Default::default()
    });
    let superuser = member_by(&app, &acme, acme.token(), superuser).await;
    let mut agent = new_user("agent@acme.test", &["ORDERS"]);
    agent.dialer_profile = Some(pb::DialerProfile {
        timezone: "Europe/Paris".to_owned(),
        ..Default::default()
    });
    let agent = member_by(&app, &acme, acme.token(), agent).await;
    let portal_user = pending(&app, acme.token(), "portal@acme.test", &["REPORTS"]).await;

    expect_reason(
        reset_password(&app, &admin.access_token, &agent.user_id, false).await,
        Code::PermissionDenied,
        "TENANT_SUPERUSER_REQUIRED",
    );
    assert!(
        accepted(&app, &agent.access_token).await,
        "nothing happened"
    );
    reset_password(&app, &admin.access_token, &portal_user.id, false)
        .await
        .expect("an admin resets a user without a Dialer profile");
    let by_superuser = reset_password(&app, &superuser.access_token, &agent.user_id, false)
        .await
        .expect("a tenant superuser resets a Dialer user");
    login(&app, &acme, "agent@acme.test", &by_superuser).await;
    let by_owner = reset_password(&app, acme.token(), &agent.user_id, false)
        .await
        .expect("the owner resets a Dialer user");
    login(&app, &acme, "agent@acme.test", &by_owner).await;
}

// ----------------------------------------------------------------------- TransferOwnership

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_transfers_ownership_and_only_to_an_active_user() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let admin = member(&app, &acme, "adele@acme.test", &["ADMIN"]).await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let waiting = pending(&app, acme.token(), "pat@acme.test", &["REPORTS"]).await;
    let gone = member(&app, &acme, "gone@acme.test", &["REPORTS"]).await;
    deactivate(&app, acme.token(), &gone.user_id)
        .await
        .expect("deactivate");

    expect_reason(
        transfer_keeping(&app, &admin.access_token, &bob.user_id, &["REPORTS"]).await,
        Code::PermissionDenied,
        "OWNER_ONLY",
    );
    expect_reason(
        transfer_keeping(&app, acme.token(), &waiting.id, &["REPORTS"]).await,
        Code::FailedPrecondition,
        "NEW_OWNER_NOT_ACTIVE",
    );
    expect_reason(
        transfer_keeping(&app, acme.token(), &gone.user_id, &["REPORTS"]).await,
        Code::FailedPrecondition,
        "NEW_OWNER_NOT_ACTIVE",
    );
    expect_code(
        transfer_keeping(
            &app,
            acme.token(),
            &uuid::Uuid::now_v7().to_string(),
            &["REPORTS"],
        )
        .await,
        Code::NotFound,
    );
    expect_bad_fields(
        transfer_keeping(&app, acme.token(), &acme.owner.user_id, &["REPORTS"]).await,
        &["new_owner_user_id"],
    );
    expect_bad_fields(
        transfer(&app, acme.token(), &bob.user_id, None).await,
        &["former_owner"],
    );
    expect_bad_fields(
        transfer_keeping(&app, acme.token(), &bob.user_id, &[]).await,
        &["former_owner_roles.roles"],
    );
    expect_bad_fields(
        transfer_keeping(&app, acme.token(), &bob.user_id, &["KING"]).await,
        &["former_owner_roles.roles"],
    );
    // Nothing changed.
    let me = who_am_i(&app, acme.token()).await;
    assert!(me.is_owner);
    assert!(
        !get(&app, acme.token(), &bob.user_id)
            .await
            .expect("bob")
            .is_owner
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_transfer_the_former_owner_keeps_the_chosen_roles_and_the_new_owner_rules() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let cy = member(&app, &acme, "cy@acme.test", &["ORDERS"]).await;

    let response = transfer_keeping(&app, acme.token(), &bob.user_id, &["FINANCE", "REPORTS"])
        .await
        .expect("transfer");
    let new_owner = response.new_owner.expect("new owner");
    let former = response.former_owner.expect("former owner");
    assert_eq!(new_owner.id, bob.user_id);
    assert!(new_owner.is_owner);
    assert_eq!(former.id, acme.owner.user_id);
    assert!(!former.is_owner);
    assert_eq!(former.roles, roles(&["FINANCE", "REPORTS"]));

    // Both old tokens carried the old ownership: both are refused.
    expect_code(app.who_am_i(acme.token()).await, Code::Unauthenticated);
    expect_code(app.who_am_i(&bob.access_token).await, Code::Unauthenticated);

    let ann = login(&app, &acme, "ann@acme.test", PASSWORD).await;
    let me = app.who_am_i(&ann.access_token).await.expect("WhoAmI");
    let user = me.user.expect("user");
    assert!(!user.is_owner);
    assert_eq!(user.roles, roles(&["FINANCE", "REPORTS"]));
    assert_eq!(me.tenant.expect("tenant").owner_user_id, bob.user_id);
    let validation = principal(&app, &ann.access_token).await;
    assert!(!validation.is_owner);
    assert!(!validation.permissions.iter().any(|p| p == "users.read"));
    expect_reason(
        transfer_keeping(&app, &ann.access_token, &cy.user_id, &["REPORTS"]).await,
        Code::PermissionDenied,
        "OWNER_ONLY",
    );

    let bob = login(&app, &acme, "bob@acme.test", PASSWORD).await;
    assert!(principal(&app, &bob.access_token).await.is_owner);
    // Owner-only powers: granting ADMIN, deleting the former owner.
    let cy_user = update(
        &app,
        &bob.access_token,
        &cy.user_id,
        pb::User {
            roles: roles(&["ADMIN", "ORDERS"]),
            ..Default::default()
        },
        &["roles"],
    )
    .await
    .expect("the new owner grants ADMIN");
    assert_eq!(cy_user.roles, roles(&["ADMIN", "ORDERS"]));
    let cy = login(&app, &acme, "cy@acme.test", PASSWORD).await;
    expect_reason(
        delete(&app, &cy.access_token, &bob.user_id).await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    delete(&app, &bob.access_token, &ann.user_id)
        .await
        .expect("the new owner deletes the former one");
    assert!(!accepted(&app, &ann.access_token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_may_delete_the_former_owner() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ADMIN"]).await;
    let response = transfer(
        &app,
        acme.token(),
        &bob.user_id,
        Some(pb::transfer_ownership_request::FormerOwner::DeleteFormerOwner(true)),
    )
    .await
    .expect("transfer");
    assert!(response.former_owner.is_none());
    assert!(response.new_owner.expect("new owner").is_owner);
    expect_code(app.who_am_i(acme.token()).await, Code::Unauthenticated);
    expect_code(
        app.refresh(&acme.owner.refresh_token).await,
        Code::Unauthenticated,
    );
    expect_reason(
        app.login(acme.slug(), "ann@acme.test", PASSWORD).await,
        Code::Unauthenticated,
        "INVALID_CREDENTIALS",
    );
    let bob = login(&app, &acme, "bob@acme.test", PASSWORD).await;
    expect_code(
        get(&app, &bob.access_token, &acme.owner.user_id).await,
        Code::NotFound,
    );
    let me = app.who_am_i(&bob.access_token).await.expect("WhoAmI");
    assert!(me.user.expect("user").is_owner);
    assert_eq!(me.tenant.expect("tenant").owner_user_id, bob.user_id);
    assert_eq!(count(&app, &bob.access_token).await, 1);
}

#[tokio::test]
async fn reads_follow_every_write_here_and_on_another_replica() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let renamed = |name: &str| pb::User {
        first_name: name.to_owned(),
        ..Default::default()
    };
    // Read twice (the second read may come from this replica's cache), then write: the next read
    // shows the write, through GetUser and WhoAmI alike.
    for _ in 0..2 {
        get(&app, acme.token(), &bob.user_id).await.expect("get");
        app.who_am_i(&bob.access_token).await.expect("WhoAmI");
    }
    update(
        &app,
        acme.token(),
        &bob.user_id,
        renamed("Robert"),
        &["first_name"],
    )
    .await
    .expect("rename");
    let read = get(&app, acme.token(), &bob.user_id).await.expect("get");
    assert_eq!(read.first_name, "Robert");
    let me = app.who_am_i(&bob.access_token).await.expect("WhoAmI");
    assert_eq!(me.user.expect("user").first_name, "Robert");
    // A deactivation shows at once too (and ends bob's session).
    deactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("deactivate");
    let read = get(&app, acme.token(), &bob.user_id).await.expect("get");
    assert_eq!(read.status, pb::UserStatus::Inactive as i32);
    reactivate(&app, acme.token(), &bob.user_id)
        .await
        .expect("reactivate");

    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; the rest is skipped");
        return;
    }
    let replica = app.replica().await;
    let on_replica = get(&replica, acme.token(), &bob.user_id)
        .await
        .expect("get on the replica");
    assert_eq!(on_replica.first_name, "Robert");
    update(
        &app,
        acme.token(),
        &bob.user_id,
        renamed("Bobby"),
        &["first_name"],
    )
    .await
    .expect("rename on the first replica");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let seen = get(&replica, acme.token(), &bob.user_id)
            .await
            .expect("get on the replica");
        if seen.first_name == "Bobby" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second replica still showed {:?} after 2 s",
            seen.first_name
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_users_answers_in_the_order_asked_and_reports_the_missing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let other = org(&app, "Other", "olga@other.test").await;
    let bob = pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let rita = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;
    let unknown = ::uuid::Uuid::now_v7().to_string();
    let batch = |token: &str, ids: Vec<String>| {
        let token = token.to_owned();
        let app = &app;
        async move {
            crate::users_support::users(app)
                .batch_get_users(crate::harness::authed(
                    pb::BatchGetUsersRequest { user_ids: ids },
                    &token,
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let found = batch(
        acme.token(),
        vec![
            rita.user_id.clone(),
            bob.id.clone(),
            other.owner.user_id.clone(),
            unknown.clone(),
            rita.user_id.clone(),
        ],
    )
    .await
    .unwrap();
    let ids: Vec<&str> = found.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, [&rita.user_id, &bob.id, &rita.user_id]);
    assert_eq!(found.users[1].email, "bob@acme.test");
    let mut missing = found.missing_user_ids.clone();
    missing.sort();
    let mut expected = vec![other.owner.user_id.clone(), unknown];
    expected.sort();
    assert_eq!(
        missing, expected,
        "another account's user is simply missing"
    );

    // Reading others needs users.read; oneself is always allowed.
    expect_code(
        batch(&rita.access_token, vec![bob.id.clone()]).await,
        Code::PermissionDenied,
    );
    let me = batch(&rita.access_token, vec![rita.user_id.clone()])
        .await
        .unwrap();
    assert_eq!(me.users.len(), 1);

    expect_bad_fields(
        batch(acme.token(), vec![bob.id.clone(), "nope".into()]).await,
        &["user_ids[1]"],
    );
    expect_bad_fields(
        batch(acme.token(), vec![bob.id.clone(); 1001]).await,
        &["user_ids"],
    );
    let none = batch(acme.token(), vec![]).await.unwrap();
    assert!(none.users.is_empty() && none.missing_user_ids.is_empty());
}
