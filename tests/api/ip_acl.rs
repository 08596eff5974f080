//! The per-user IP allow-list, with and without a trusted proxy.

use roster::api::pb;
use tonic::{Code, Request};

use crate::harness::{
    PASSWORD, actions, authed, expect_bad_fields, expect_code, expect_reason, list_activity,
    spawn_app, spawn_app_with,
};

use crate::security_support::*;

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
