//! Active sessions: listing them, ending one, a user's or everyone's.

use roster::api::pb;
use tonic::{Code, Request};

use crate::harness::{
    PASSWORD, actions, authed, expect_bad_fields, expect_code, expect_reason, list_activity,
    list_sessions, sessions, spawn_app,
};
use crate::roles::create_role;

use crate::security_support::*;

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
