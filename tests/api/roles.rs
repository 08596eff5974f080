//! `roster.v1.RoleService`: the permission catalogue, built-in and custom roles, Platform and
//! Inbox roles, role changes that the user's token in hand feels at once, and who may grant what.

#![allow(dead_code)]

use roster::api::pb::{self, role_service_client::RoleServiceClient};
use tonic::{Code, Status, transport::Channel};

use crate::harness::{TestApp, authed, expect_bad_fields, expect_code, expect_reason, spawn_app};
use crate::teams::{create_team, list_teams};
use crate::users_support::{
    bulk, by_ids, create, delete, get, list, list_all, member, new_user, org, pending, principal,
    roles, skips, update,
};

/// A RoleService client on the app's channel.
pub fn role_service(app: &TestApp) -> RoleServiceClient<Channel> {
    RoleServiceClient::new(app.channel.clone())
}

/// Calls CreateRole.
pub async fn create_role(
    app: &TestApp,
    token: &str,
    key: &str,
    scope: pb::RoleScope,
    permissions: &[&str],
) -> Result<pb::Role, Status> {
    role_service(app)
        .create_role(authed(
            pb::CreateRoleRequest {
                key: key.to_owned(),
                name: format!("Role {key}"),
                scope: scope as i32,
                permissions: roles(permissions),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls UpdateRole.
pub async fn update_role(
    app: &TestApp,
    token: &str,
    key: &str,
    name: &str,
    permissions: &[&str],
) -> Result<pb::Role, Status> {
    role_service(app)
        .update_role(authed(
            pb::UpdateRoleRequest {
                key: key.to_owned(),
                name: name.to_owned(),
                permissions: roles(permissions),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls DeleteRole.
pub async fn delete_role(app: &TestApp, token: &str, key: &str) -> Result<(), Status> {
    role_service(app)
        .delete_role(authed(
            pb::DeleteRoleRequest {
                key: key.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// Calls ListRoles.
pub async fn list_roles(app: &TestApp, token: &str) -> Result<Vec<pb::Role>, Status> {
    role_service(app)
        .list_roles(authed(pb::ListRolesRequest {}, token))
        .await
        .map(|r| r.into_inner().roles)
}

/// The role `key` as ListRoles shows it to `token`'s holder, if any.
pub async fn role_named(app: &TestApp, token: &str, key: &str) -> Option<pb::Role> {
    list_roles(app, token)
        .await
        .expect("ListRoles")
        .into_iter()
        .find(|role| role.key == key)
}

/// Calls ChangeUserRole; `None` leaves a scope as it is, `Some("")` removes a Platform or Inbox role.
pub async fn change_role(
    app: &TestApp,
    token: &str,
    user_id: &str,
    account_roles: Option<&[&str]>,
    platform_role: Option<&str>,
    inbox_role: Option<&str>,
) -> Result<pb::User, Status> {
    role_service(app)
        .change_user_role(authed(
            pb::ChangeUserRoleRequest {
                user_id: user_id.to_owned(),
                account_roles: account_roles.map(|keys| pb::RoleKeys { keys: roles(keys) }),
                platform_role: platform_role.map(str::to_owned),
                inbox_role: inbox_role.map(str::to_owned),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls RemoveAllPermissions.
pub async fn remove_all_permissions(
    app: &TestApp,
    token: &str,
    user_id: &str,
) -> Result<pb::User, Status> {
    role_service(app)
        .remove_all_permissions(authed(
            pb::RemoveAllPermissionsRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Sets a user's account roles through UpdateUser.
async fn update_roles(
    app: &TestApp,
    token: &str,
    user_id: &str,
    keys: &[&str],
) -> Result<pb::User, Status> {
    update(
        app,
        token,
        user_id,
        pb::User {
            roles: roles(keys),
            ..Default::default()
        },
        &["roles"],
    )
    .await
}

/// A mass role assignment (or removal) on explicit users.
async fn bulk_roles(
    app: &TestApp,
    token: &str,
    action: pb::BulkAction,
    user_ids: &[&str],
    keys: &[&str],
) -> Result<pb::BulkUpdateUsersResponse, Status> {
    bulk(
        app,
        token,
        pb::BulkUpdateUsersRequest {
            selection: by_ids(user_ids),
            action: action as i32,
            roles: roles(keys),
            ..Default::default()
        },
    )
    .await
}

/// Asserts what the token in hand carries now: exactly `expected_roles`, every one of `having`
/// and none of `lacking` permissions.
#[track_caller]
fn assert_grant(
    principal: &pb::Principal,
    expected_roles: &[&str],
    having: &[&str],
    lacking: &[&str],
) {
    assert_eq!(principal.roles, roles(expected_roles), "roles in the token");
    for permission in having {
        assert!(
            principal.permissions.iter().any(|p| p == permission),
            "{permission} missing from {:?}",
            principal.permissions
        );
    }
    for permission in lacking {
        assert!(
            !principal.permissions.iter().any(|p| p == permission),
            "{permission} still in {:?}",
            principal.permissions
        );
    }
}

async fn can_create_team(app: &TestApp, token: &str, name: &str) -> bool {
    match create_team(app, token, pb::TeamKind::Team, name, "").await {
        Ok(_) => true,
        Err(status) if status.code() == Code::PermissionDenied => false,
        Err(other) => panic!("CreateTeam failed unexpectedly: {other:?}"),
    }
}

// ------------------------------------------------------------------------------ catalogue

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_user_reads_the_permission_catalogue_and_the_builtin_and_custom_roles_of_their_account()
{
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let reports = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;

    let catalogue = role_service(&app)
        .list_permissions(authed(pb::ListPermissionsRequest {}, &reports.access_token))
        .await
        .expect("ListPermissions")
        .into_inner()
        .permissions;
    let keys: Vec<&str> = catalogue.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "users.read",
        "users.write",
        "users.delete",
        "roles.assign",
        "roles.manage",
        "sessions.manage",
        "teams.read",
        "teams.write",
        "inbox.access",
        "inbox.manage",
        "support.contact",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    assert!(catalogue.iter().all(|p| !p.description.is_empty()));
    // The owner holds every permission of the catalogue.
    let owner = principal(&app, acme.token()).await;
    let mut all: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    all.sort();
    assert_eq!(owner.permissions, all);

    let builtin = list_roles(&app, &reports.access_token)
        .await
        .expect("ListRoles");
    let expected = [
        ("ADMIN", pb::RoleScope::Account),
        ("REPORTS", pb::RoleScope::Account),
        ("TECH_CONFIG", pb::RoleScope::Account),
        ("FINANCE", pb::RoleScope::Account),
        ("ORDERS", pb::RoleScope::Account),
        ("PLATFORM_ADMIN", pb::RoleScope::Platform),
        ("PLATFORM_MEMBER", pb::RoleScope::Platform),
        ("INBOX_MANAGER", pb::RoleScope::Inbox),
        ("INBOX_AGENT", pb::RoleScope::Inbox),
    ];
    assert_eq!(builtin.len(), expected.len(), "{builtin:?}");
    for (key, scope) in expected {
        let role = builtin
            .iter()
            .find(|r| r.key == key)
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(role.builtin, "{key}");
        assert_eq!(role.scope, scope as i32, "{key}");
        assert!(!role.name.is_empty());
        assert!(!role.permissions.is_empty(), "{key}");
        for permission in &role.permissions {
            assert!(keys.contains(&permission.as_str()), "{permission} of {key}");
        }
    }
    let platform_admin = builtin
        .iter()
        .find(|r| r.key == "PLATFORM_ADMIN")
        .expect("PA");
    assert!(
        platform_admin
            .permissions
            .iter()
            .any(|p| p == "teams.write")
    );
    let reports_role = builtin
        .iter()
        .find(|r| r.key == "REPORTS")
        .expect("REPORTS");
    assert_eq!(reports_role.permissions, roles(&["reports.run"]));

    create_role(
        &app,
        acme.token(),
        "SUPPORT_LEAD",
        pb::RoleScope::Unspecified,
        &["reports.run", "teams.read"],
    )
    .await
    .expect("custom role");
    let custom = role_named(&app, &reports.access_token, "SUPPORT_LEAD")
        .await
        .expect("a custom role is listed");
    assert!(!custom.builtin);
    assert_eq!(
        custom.scope,
        pb::RoleScope::Account as i32,
        "ACCOUNT when unset"
    );

    let status = role_service(&app)
        .list_roles(pb::ListRolesRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_are_made_of_catalogue_permissions_and_builtin_keys_cannot_be_changed() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();

    let created = role_service(&app)
        .create_role(authed(
            pb::CreateRoleRequest {
                key: " support_lead ".to_owned(),
                name: "  Support lead ".to_owned(),
                scope: pb::RoleScope::Account as i32,
                permissions: roles(&["teams.read", "Reports.Run", "teams.read"]),
            },
            token,
        ))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(created.key, "SUPPORT_LEAD");
    assert_eq!(created.name, "Support lead");
    assert_eq!(created.permissions, roles(&["reports.run", "teams.read"]));
    assert!(!created.builtin);

    // Bad keys, names and permissions.
    expect_bad_fields(
        create_role(
            &app,
            token,
            "NEW_ROLE",
            pb::RoleScope::Account,
            &["teams.read", "teams.fly"],
        )
        .await,
        &["permissions"],
    );
    for owner_only in ["roles.assign_admin", "ownership.transfer"] {
        expect_bad_fields(
            create_role(
                &app,
                token,
                "NEW_ROLE",
                pb::RoleScope::Account,
                &[owner_only],
            )
            .await,
            &["permissions"],
        );
    }
    for key in ["support lead", "1ST_LINE", "X", "", "ÄRGER"] {
        expect_bad_fields(
            create_role(&app, token, key, pb::RoleScope::Account, &["reports.run"]).await,
            &["key"],
        );
    }
    expect_bad_fields(
        role_service(&app)
            .create_role(authed(
                pb::CreateRoleRequest {
                    key: "NAMELESS".to_owned(),
                    name: "   ".to_owned(),
                    permissions: roles(&["reports.run"]),
                    ..Default::default()
                },
                token,
            ))
            .await,
        &["name"],
    );
    expect_bad_fields(
        role_service(&app)
            .create_role(authed(
                pb::CreateRoleRequest {
                    key: "ODD_SCOPE".to_owned(),
                    name: "Odd".to_owned(),
                    scope: 9,
                    permissions: roles(&["reports.run"]),
                },
                token,
            ))
            .await,
        &["scope"],
    );
    // Built-in keys are taken, and so is a custom key used once.
    for key in ["ADMIN", "platform_admin", "INBOX_AGENT", "SUPPORT_LEAD"] {
        let status = expect_code(
            create_role(&app, token, key, pb::RoleScope::Account, &["reports.run"]).await,
            Code::AlreadyExists,
        );
        assert_eq!(
            crate::harness::bad_fields(&status),
            roles(&["key"]),
            "{key}"
        );
    }
    // Built-in roles are neither changed nor deleted.
    for key in ["ADMIN", "REPORTS", "PLATFORM_MEMBER", "INBOX_MANAGER"] {
        expect_reason(
            update_role(&app, token, key, "Mine now", &["reports.run"]).await,
            Code::FailedPrecondition,
            "BUILTIN_ROLE",
        );
        expect_reason(
            delete_role(&app, token, key).await,
            Code::FailedPrecondition,
            "BUILTIN_ROLE",
        );
    }
    let admin = role_named(&app, token, "ADMIN").await.expect("ADMIN");
    assert!(admin.builtin && admin.permissions.iter().any(|p| p == "users.write"));
    expect_code(
        update_role(&app, token, "NO_SUCH_ROLE", "x", &["reports.run"]).await,
        Code::NotFound,
    );
    expect_code(
        delete_role(&app, token, "NO_SUCH_ROLE").await,
        Code::NotFound,
    );

    // UpdateRole renames and replaces the permissions; the scope stays.
    let platform = create_role(
        &app,
        token,
        "PLATFORM_SUPPORT",
        pb::RoleScope::Platform,
        &["sms.access"],
    )
    .await
    .expect("a platform role");
    assert_eq!(platform.scope, pb::RoleScope::Platform as i32);
    let renamed = update_role(
        &app,
        token,
        "platform_support",
        "Platform support",
        &["sms.access", "teams.read"],
    )
    .await
    .expect("updated");
    assert_eq!(renamed.name, "Platform support");
    assert_eq!(renamed.permissions, roles(&["sms.access", "teams.read"]));
    assert_eq!(renamed.scope, pb::RoleScope::Platform as i32);
    assert_eq!(
        role_named(&app, token, "PLATFORM_SUPPORT").await,
        Some(renamed)
    );
    expect_bad_fields(
        update_role(&app, token, "PLATFORM_SUPPORT", "x", &["nope.nope"]).await,
        &["permissions"],
    );
    expect_bad_fields(
        update_role(&app, token, "PLATFORM_SUPPORT", "", &["sms.access"]).await,
        &["name"],
    );

    // A custom Platform role is a Platform role.
    let bob = pending(&app, token, "bob@acme.test", &["REPORTS"]).await;
    let changed = change_role(&app, token, &bob.id, None, Some("PLATFORM_SUPPORT"), None)
        .await
        .expect("custom platform role");
    assert_eq!(changed.roles, roles(&["PLATFORM_SUPPORT", "REPORTS"]));
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, None, Some("PLATFORM_SUPPORT")).await,
        &["inbox_role"],
    );

    // DeleteRole removes it from the list and from its holders.
    delete_role(&app, token, "PLATFORM_SUPPORT")
        .await
        .expect("deleted");
    assert!(role_named(&app, token, "PLATFORM_SUPPORT").await.is_none());
    assert_eq!(
        get(&app, token, &bob.id).await.expect("get").roles,
        roles(&["REPORTS"])
    );
    expect_code(
        delete_role(&app, token, "PLATFORM_SUPPORT").await,
        Code::NotFound,
    );
    // The key is free again.
    create_role(
        &app,
        token,
        "PLATFORM_SUPPORT",
        pb::RoleScope::Inbox,
        &["inbox.access"],
    )
    .await
    .expect("re-created");
}

// ------------------------------------------------------------------------------ Platform and Inbox roles

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_one_platform_role_and_one_inbox_role() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();

    for keys in [
        &["PLATFORM_ADMIN", "PLATFORM_MEMBER"][..],
        &["INBOX_AGENT", "INBOX_MANAGER", "REPORTS"][..],
    ] {
        let status = expect_bad_fields(
            create(&app, token, new_user("two@acme.test", keys)).await,
            &["roles"],
        );
        assert!(
            status.message().contains("at most one"),
            "{}",
            status.message()
        );
    }
    // One of each, with account roles besides, is fine.
    let bob = pending(
        &app,
        token,
        "bob@acme.test",
        &["PLATFORM_MEMBER", "INBOX_AGENT", "REPORTS", "ORDERS"],
    )
    .await;
    assert_eq!(
        bob.roles,
        roles(&["INBOX_AGENT", "ORDERS", "PLATFORM_MEMBER", "REPORTS"])
    );
    expect_bad_fields(
        update_roles(&app, token, &bob.id, &["PLATFORM_ADMIN", "PLATFORM_MEMBER"]).await,
        &["user.roles"],
    );

    // ChangeUserRole takes each key in its own scope.
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, None, Some("PLATFORM_ADMIN")).await,
        &["inbox_role"],
    );
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, Some("INBOX_MANAGER"), None).await,
        &["platform_role"],
    );
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, Some("REPORTS"), None).await,
        &["platform_role"],
    );
    expect_bad_fields(
        change_role(
            &app,
            token,
            &bob.id,
            Some(&["REPORTS", "INBOX_AGENT"]),
            None,
            None,
        )
        .await,
        &["account_roles"],
    );
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, Some("PLATFORM_WIZARD"), None).await,
        &["platform_role"],
    );
    expect_bad_fields(
        change_role(&app, token, &bob.id, None, Some("not a key"), None).await,
        &["platform_role"],
    );
    expect_code(
        change_role(&app, token, &bob.id, None, None, None).await,
        Code::InvalidArgument,
    );
    expect_bad_fields(
        change_role(&app, token, "bob", None, Some("PLATFORM_ADMIN"), None).await,
        &["user_id"],
    );
    expect_code(
        change_role(
            &app,
            token,
            &uuid::Uuid::now_v7().to_string(),
            None,
            Some("PLATFORM_ADMIN"),
            None,
        )
        .await,
        Code::NotFound,
    );
    // Mass actions assign account roles only.
    expect_bad_fields(
        bulk_roles(
            &app,
            token,
            pb::BulkAction::AssignRoles,
            &[&bob.id],
            &["PLATFORM_ADMIN"],
        )
        .await,
        &["roles"],
    );
    assert_eq!(
        get(&app, token, &bob.id).await.expect("get").roles,
        bob.roles,
        "refused changes changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_role_sets_the_scopes_it_is_given_and_keeps_the_others() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let token = acme.token();
    let bob = member(
        &app,
        &acme,
        "bob@acme.test",
        &["REPORTS", "PLATFORM_MEMBER", "INBOX_AGENT"],
    )
    .await;
    // (account roles, Platform role, Inbox role) given, and the roles that result.
    type Step<'a> = (
        Option<&'a [&'a str]>,
        Option<&'a str>,
        Option<&'a str>,
        &'a [&'a str],
    );
    let steps: Vec<Step> = vec![
        (
            None,
            Some("platform_admin"),
            None,
            &["INBOX_AGENT", "PLATFORM_ADMIN", "REPORTS"],
        ),
        (None, None, Some(""), &["PLATFORM_ADMIN", "REPORTS"]),
        (
            Some(&["FINANCE", "ORDERS"]),
            None,
            None,
            &["FINANCE", "ORDERS", "PLATFORM_ADMIN"],
        ),
        (
            Some(&[]),
            Some("PLATFORM_MEMBER"),
            Some("INBOX_MANAGER"),
            &["INBOX_MANAGER", "PLATFORM_MEMBER"],
        ),
        (Some(&["TECH_CONFIG"]), Some(""), Some(""), &["TECH_CONFIG"]),
    ];
    for (account, platform, inbox, expected) in steps {
        let changed = change_role(&app, token, &bob.user_id, account, platform, inbox)
            .await
            .unwrap_or_else(|err| panic!("change to {expected:?}: {err:?}"));
        assert_eq!(changed.roles, roles(expected));
        assert_eq!(
            get(&app, token, &bob.user_id).await.expect("get").roles,
            roles(expected)
        );
        // Bob's token in hand carries the new roles at once, without a refresh.
        assert_eq!(
            principal(&app, &bob.access_token).await.roles,
            roles(expected)
        );
    }
}

// ------------------------------------------------------------------------------ changes bite at once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_role_change_reaches_the_users_token_in_hand_without_a_refresh() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let owner = acme.token();
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let t = bob.access_token.as_str();
    assert_grant(
        &principal(&app, t).await,
        &["REPORTS"],
        &["reports.run"],
        &["teams.write"],
    );
    assert!(!can_create_team(&app, t, "Denied").await);

    // A custom role granting teams.write, given by a mass action.
    create_role(
        &app,
        owner,
        "TEAM_LEAD",
        pb::RoleScope::Account,
        &["teams.read", "teams.write"],
    )
    .await
    .expect("custom role");
    bulk_roles(
        &app,
        owner,
        pb::BulkAction::AssignRoles,
        &[&bob.user_id],
        &["TEAM_LEAD"],
    )
    .await
    .expect("assigned");
    assert_grant(
        &principal(&app, t).await,
        &["REPORTS", "TEAM_LEAD"],
        &["teams.write", "reports.run"],
        &[],
    );
    assert!(can_create_team(&app, t, "Made with the old token").await);

    // UpdateRole withdraws teams.write from every holder.
    update_role(&app, owner, "TEAM_LEAD", "Team lead", &["teams.read"])
        .await
        .expect("updated");
    assert_grant(
        &principal(&app, t).await,
        &["REPORTS", "TEAM_LEAD"],
        &["teams.read"],
        &["teams.write"],
    );
    assert!(!can_create_team(&app, t, "Denied again").await);
    list_teams(&app, t, Default::default())
        .await
        .expect("still reads teams");

    // DeleteRole takes the role away.
    delete_role(&app, owner, "TEAM_LEAD")
        .await
        .expect("deleted");
    assert_grant(
        &principal(&app, t).await,
        &["REPORTS"],
        &[],
        &["teams.read"],
    );
    expect_code(
        list_teams(&app, t, Default::default()).await,
        Code::PermissionDenied,
    );

    // UpdateUser roles.
    update_roles(&app, owner, &bob.user_id, &["ADMIN"])
        .await
        .expect("made admin");
    assert_grant(
        &principal(&app, t).await,
        &["ADMIN"],
        &["users.read", "users.write", "teams.write", "reports.run"],
        &["roles.manage"],
    );
    assert_eq!(list_all(&app, t, Default::default()).await.len(), 2);

    // Mass removal.
    bulk_roles(
        &app,
        owner,
        pb::BulkAction::UnassignRoles,
        &[&bob.user_id],
        &["ADMIN"],
    )
    .await
    .expect("unassigned");
    assert_grant(
        &principal(&app, t).await,
        &[],
        &["support.contact"],
        &["users.read"],
    );

    // ChangeUserRole.
    change_role(
        &app,
        owner,
        &bob.user_id,
        Some(&["ADMIN"]),
        Some("PLATFORM_MEMBER"),
        None,
    )
    .await
    .expect("changed");
    assert_grant(
        &principal(&app, t).await,
        &["ADMIN", "PLATFORM_MEMBER"],
        &["users.read", "sms.access"],
        &[],
    );

    // RemoveAllPermissions: the former admin reads themself and nobody else.
    remove_all_permissions(&app, owner, &bob.user_id)
        .await
        .expect("removed");
    let last = principal(&app, t).await;
    assert!(last.roles.is_empty());
    assert_eq!(last.permissions, roles(&["support.contact"]));
    expect_reason(
        list(&app, t, pb::ListUsersRequest::default()).await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
    get(&app, t, &bob.user_id).await.expect("reads themself");
    expect_reason(
        get(&app, t, &acme.owner.user_id).await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
    expect_code(
        create(&app, t, new_user("sneaky@acme.test", &["REPORTS"])).await,
        Code::PermissionDenied,
    );
    // The session itself goes on.
    assert!(app.who_am_i(t).await.is_ok());
    let renewed = app.refresh(&bob.refresh_token).await.expect("refresh");
    assert_eq!(
        principal(&app, &renewed.access_token).await.permissions,
        roles(&["support.contact"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_still_reaches_older_tokens_after_a_restart() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ADMIN"]).await;
    change_role(
        &app,
        acme.token(),
        &bob.user_id,
        Some(&[]),
        Some("PLATFORM_MEMBER"),
        None,
    )
    .await
    .expect("changed");
    let app = app.restart().await;
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &["PLATFORM_MEMBER"],
        &["sms.access"],
        &["users.read", "users.write"],
    );
    expect_code(
        get(&app, &bob.access_token, &acme.owner.user_id).await,
        Code::PermissionDenied,
    );
}

/// A role change whose notification never arrived (a replica that lost its listener, say)
/// still reaches the user's older token: replicas read recent role changes back from the
/// database every 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_whose_notification_was_lost_is_caught_up_from_the_database() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; skipped on SQLite");
        return;
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ADMIN"]).await;
    assert_eq!(principal(&app, &bob.access_token).await.roles, ["ADMIN"]);

    // What another replica's ChangeUserRole writes, without its notification.
    let db = app.database().await;
    let uuid = |text: &str| Value::from(uuid::Uuid::parse_str(text).expect("a uuid"));
    let ids = || [uuid(&acme.account.tenant_id), uuid(&bob.user_id)];
    for sql in [
        "UPDATE user_roles SET role = 'REPORTS' WHERE tenant_id = $1 AND user_id = $2",
        "INSERT INTO role_changes (tenant_id, user_id, changed_at) VALUES ($1, $2, now())",
    ] {
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            ids(),
        ))
        .await
        .expect("write the change");
    }
    let mut roles = Vec::new();
    for _ in 0..250 {
        roles = principal(&app, &bob.access_token).await.roles;
        if roles == ["REPORTS"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(roles, ["REPORTS"], "the older token still says ADMIN");
    expect_code(
        get(&app, &bob.access_token, &acme.owner.user_id).await,
        Code::PermissionDenied,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_on_one_replica_reaches_the_users_token_on_another_within_a_second() {
    let app = spawn_app().await;
    if !app.postgres {
        eprintln!("note: replicas share a database only on PostgreSQL; skipped on SQLite");
        return;
    }
    let replica = app.replica().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["ADMIN"]).await;
    assert!(
        get(&replica, &bob.access_token, &acme.owner.user_id)
            .await
            .is_ok()
    );
    remove_all_permissions(&app, acme.token(), &bob.user_id)
        .await
        .expect("removed");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let seen = principal(&replica, &bob.access_token).await;
        if seen.roles.is_empty() {
            assert_eq!(seen.permissions, roles(&["support.contact"]));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica still shows {:?} after a second",
            seen.roles
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    expect_code(
        get(&replica, &bob.access_token, &acme.owner.user_id).await,
        Code::PermissionDenied,
    );
}

// ------------------------------------------------------------------------------ who grants what

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_grants_or_revokes_admin_whichever_call_is_used() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let owner = acme.token();
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let other_admin = member(&app, &acme, "ada@acme.test", &["ADMIN"]).await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let a = admin.access_token.as_str();
    let only_owner = "ADMIN_ROLE_OWNER_ONLY";

    // Granting Admin.
    expect_reason(
        update_roles(&app, a, &bob.user_id, &["ADMIN", "REPORTS"]).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        bulk_roles(
            &app,
            a,
            pb::BulkAction::AssignRoles,
            &[&bob.user_id],
            &["ADMIN"],
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        change_role(&app, a, &bob.user_id, Some(&["ADMIN"]), None, None).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        create(&app, a, new_user("new-admin@acme.test", &["ADMIN"])).await,
        Code::PermissionDenied,
        only_owner,
    );
    // Revoking it, from another admin or from oneself.
    expect_reason(
        change_role(
            &app,
            a,
            &other_admin.user_id,
            Some(&["REPORTS"]),
            None,
            None,
        )
        .await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        remove_all_permissions(&app, a, &other_admin.user_id).await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        update_roles(&app, a, &other_admin.user_id, &["REPORTS"]).await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        bulk_roles(
            &app,
            a,
            pb::BulkAction::UnassignRoles,
            &[&other_admin.user_id],
            &["ADMIN"],
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        change_role(&app, a, &admin.user_id, Some(&["REPORTS"]), None, None).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        remove_all_permissions(&app, a, &admin.user_id).await,
        Code::PermissionDenied,
        only_owner,
    );
    // Nobody but the owner touches the owner.
    expect_reason(
        remove_all_permissions(&app, a, &acme.owner.user_id).await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    expect_reason(
        change_role(
            &app,
            a,
            &acme.owner.user_id,
            None,
            Some("PLATFORM_MEMBER"),
            None,
        )
        .await,
        Code::PermissionDenied,
        "USER_IS_OWNER",
    );
    assert_eq!(
        get(&app, owner, &bob.user_id).await.expect("bob").roles,
        roles(&["REPORTS"])
    );
    assert_eq!(
        get(&app, owner, &other_admin.user_id)
            .await
            .expect("ada")
            .roles,
        roles(&["ADMIN"])
    );
    assert_eq!(
        get(&app, owner, &admin.user_id).await.expect("adam").roles,
        roles(&["ADMIN"])
    );

    // An admin changes the other roles of a non-admin.
    let changed = change_role(
        &app,
        a,
        &bob.user_id,
        Some(&["FINANCE"]),
        Some("PLATFORM_MEMBER"),
        Some("INBOX_AGENT"),
    )
    .await
    .expect("an admin changes a non-admin's roles");
    assert_eq!(
        changed.roles,
        roles(&["FINANCE", "INBOX_AGENT", "PLATFORM_MEMBER"])
    );
    remove_all_permissions(&app, a, &bob.user_id)
        .await
        .expect("an admin removes a non-admin's permissions");

    // The owner grants and revokes Admin by every call.
    change_role(&app, owner, &bob.user_id, Some(&["ADMIN"]), None, None)
        .await
        .expect("owner grants");
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &["ADMIN"],
        &["users.write"],
        &[],
    );
    remove_all_permissions(&app, owner, &bob.user_id)
        .await
        .expect("owner revokes");
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &[],
        &[],
        &["users.read"],
    );
    bulk_roles(
        &app,
        owner,
        pb::BulkAction::AssignRoles,
        &[&bob.user_id],
        &["ADMIN"],
    )
    .await
    .expect("owner grants in bulk");
    update_roles(&app, owner, &bob.user_id, &["REPORTS"])
        .await
        .expect("owner revokes by update");
    change_role(
        &app,
        owner,
        &other_admin.user_id,
        Some(&["ORDERS"]),
        None,
        None,
    )
    .await
    .expect("owner revokes by change");
    assert_grant(
        &principal(&app, &other_admin.access_token).await,
        &["ORDERS"],
        &["sms.access"],
        &["users.read"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_creates_changes_deletes_or_assigns_a_custom_role_with_admin_permissions() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let owner = acme.token();
    let only_owner = "ADMIN_ROLE_OWNER_ONLY";
    // A role manager: holds roles.manage (itself an admin permission), given by the owner.
    create_role(
        &app,
        owner,
        "ROLE_MANAGER",
        pb::RoleScope::Account,
        &["roles.manage", "teams.read"],
    )
    .await
    .expect("owner creates an admin-grade role");
    let manny = member(&app, &acme, "manny@acme.test", &["ROLE_MANAGER"]).await;
    let m = manny.access_token.as_str();
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    let a = admin.access_token.as_str();
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;

    // The role manager creates plain roles but no role with an admin permission.
    create_role(
        &app,
        m,
        "HELPDESK",
        pb::RoleScope::Account,
        &["reports.run"],
    )
    .await
    .expect("a plain custom role");
    for permission in [
        "users.write",
        "users.delete",
        "roles.assign",
        "roles.manage",
        "sessions.manage",
    ] {
        expect_reason(
            create_role(
                &app,
                m,
                "DEPUTY",
                pb::RoleScope::Account,
                &["users.read", permission],
            )
            .await,
            Code::PermissionDenied,
            only_owner,
        );
    }
    expect_reason(
        update_role(
            &app,
            m,
            "HELPDESK",
            "Helpdesk",
            &["reports.run", "users.delete"],
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    assert_eq!(
        role_named(&app, owner, "HELPDESK")
            .await
            .expect("HELPDESK")
            .permissions,
        roles(&["reports.run"])
    );
    // Built-in ADMIN does not manage custom roles at all.
    expect_code(
        create_role(
            &app,
            a,
            "ADMIN_MADE",
            pb::RoleScope::Account,
            &["reports.run"],
        )
        .await,
        Code::PermissionDenied,
    );

    // The owner makes an admin-grade role; others can neither change nor delete it.
    create_role(
        &app,
        owner,
        "DEPUTY",
        pb::RoleScope::Account,
        &["users.read", "users.write"],
    )
    .await
    .expect("owner creates DEPUTY");
    expect_reason(
        update_role(&app, m, "DEPUTY", "Renamed", &["users.read", "users.write"]).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        update_role(&app, m, "DEPUTY", "Tamed", &["users.read"]).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        delete_role(&app, m, "DEPUTY").await,
        Code::PermissionDenied,
        only_owner,
    );

    // Only the owner assigns it, whichever call.
    expect_reason(
        change_role(
            &app,
            a,
            &bob.user_id,
            Some(&["DEPUTY", "REPORTS"]),
            None,
            None,
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        update_roles(&app, a, &bob.user_id, &["DEPUTY"]).await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        bulk_roles(
            &app,
            a,
            pb::BulkAction::AssignRoles,
            &[&bob.user_id],
            &["DEPUTY"],
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    expect_reason(
        create(&app, a, new_user("deputy@acme.test", &["DEPUTY"])).await,
        Code::PermissionDenied,
        only_owner,
    );
    assert_eq!(
        get(&app, owner, &bob.user_id).await.expect("bob").roles,
        roles(&["REPORTS"])
    );
    let dee = member(&app, &acme, "dee@acme.test", &["DEPUTY"]).await;
    change_role(
        &app,
        owner,
        &bob.user_id,
        Some(&["DEPUTY", "REPORTS"]),
        None,
        None,
    )
    .await
    .expect("owner assigns DEPUTY");

    // Holders of an admin-grade role are admins to other admins.
    expect_reason(
        change_role(&app, a, &dee.user_id, Some(&["REPORTS"]), None, None).await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        remove_all_permissions(&app, a, &dee.user_id).await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        update(
            &app,
            a,
            &dee.user_id,
            pb::User {
                first_name: "Renamed".to_owned(),
                ..Default::default()
            },
            &["first_name"],
        )
        .await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    expect_reason(
        delete(&app, a, &dee.user_id).await,
        Code::PermissionDenied,
        "USER_IS_ADMIN",
    );
    let skipped = bulk(
        &app,
        a,
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&dee.user_id]),
            action: pb::BulkAction::Deactivate as i32,
            ..Default::default()
        },
    )
    .await
    .expect("bulk");
    assert_eq!(
        skips(&skipped),
        vec![(dee.user_id.clone(), "USER_IS_ADMIN".to_owned())]
    );
    expect_reason(
        bulk_roles(
            &app,
            a,
            pb::BulkAction::UnassignRoles,
            &[&dee.user_id],
            &["DEPUTY"],
        )
        .await,
        Code::PermissionDenied,
        only_owner,
    );
    assert_eq!(
        get(&app, owner, &dee.user_id).await.expect("dee").roles,
        roles(&["DEPUTY"])
    );

    // The owner changes and deletes it; its holders feel it at once.
    assert_grant(
        &principal(&app, &dee.access_token).await,
        &["DEPUTY"],
        &["users.write"],
        &[],
    );
    update_role(&app, owner, "DEPUTY", "Deputy", &["users.read"])
        .await
        .expect("owner tames DEPUTY");
    assert_grant(
        &principal(&app, &dee.access_token).await,
        &["DEPUTY"],
        &["users.read"],
        &["users.write"],
    );
    // No longer admin-grade: an admin may now change its holders.
    change_role(
        &app,
        a,
        &dee.user_id,
        Some(&["DEPUTY", "ORDERS"]),
        None,
        None,
    )
    .await
    .expect("an admin changes a holder of a plain role");
    delete_role(&app, owner, "DEPUTY")
        .await
        .expect("owner deletes DEPUTY");
    assert_grant(
        &principal(&app, &dee.access_token).await,
        &["ORDERS"],
        &[],
        &["users.read"],
    );
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &["REPORTS"],
        &["reports.run"],
        &["users.read"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managing_roles_needs_roles_manage_and_changing_a_users_roles_needs_roles_assign() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    create_role(
        &app,
        acme.token(),
        "HELPDESK",
        pb::RoleScope::Account,
        &["reports.run"],
    )
    .await
    .expect("role");
    let rita = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;
    let pat = member(
        &app,
        &acme,
        "pat@acme.test",
        &["PLATFORM_ADMIN", "INBOX_MANAGER"],
    )
    .await;
    let bob = member(&app, &acme, "bob@acme.test", &["ORDERS"]).await;
    for session in [&rita, &pat] {
        let t = session.access_token.as_str();
        list_roles(&app, t).await.expect("anyone lists roles");
        for result in [
            create_role(&app, t, "MINE", pb::RoleScope::Account, &["reports.run"]).await,
            update_role(&app, t, "HELPDESK", "Mine", &["reports.run"]).await,
        ] {
            expect_reason(result, Code::PermissionDenied, "MISSING_PERMISSION");
        }
        expect_reason(
            delete_role(&app, t, "HELPDESK").await,
            Code::PermissionDenied,
            "MISSING_PERMISSION",
        );
        // Not for others, and not for themselves either.
        for target in [&bob.user_id, &session.user_id] {
            expect_reason(
                change_role(&app, t, target, Some(&["FINANCE"]), None, None).await,
                Code::PermissionDenied,
                "MISSING_PERMISSION",
            );
            expect_reason(
                remove_all_permissions(&app, t, target).await,
                Code::PermissionDenied,
                "MISSING_PERMISSION",
            );
        }
    }
    assert_eq!(
        get(&app, acme.token(), &bob.user_id)
            .await
            .expect("bob")
            .roles,
        roles(&["ORDERS"])
    );
    assert_eq!(
        role_named(&app, acme.token(), "HELPDESK")
            .await
            .expect("role")
            .name,
        "Role HELPDESK"
    );
}

// ------------------------------------------------------------------------------ tenancy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_are_per_account_and_role_calls_with_another_accounts_ids_answer_not_found() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let (a, g) = (acme.token(), globex.token());
    create_role(
        &app,
        a,
        "SUPPORT_LEAD",
        pb::RoleScope::Account,
        &["reports.run"],
    )
    .await
    .expect("A's role");
    let bob = member(&app, &acme, "bob@acme.test", &["SUPPORT_LEAD"]).await;
    let gus = member(&app, &globex, "gus@globex.test", &["ORDERS"]).await;

    // B neither sees nor uses nor changes A's custom role.
    assert!(role_named(&app, g, "SUPPORT_LEAD").await.is_none());
    expect_bad_fields(
        change_role(&app, g, &gus.user_id, Some(&["SUPPORT_LEAD"]), None, None).await,
        &["account_roles"],
    );
    expect_bad_fields(
        create(&app, g, new_user("x@globex.test", &["SUPPORT_LEAD"])).await,
        &["roles"],
    );
    expect_code(
        update_role(&app, g, "SUPPORT_LEAD", "Hijacked", &["users.read"]).await,
        Code::NotFound,
    );
    expect_code(delete_role(&app, g, "SUPPORT_LEAD").await, Code::NotFound);
    // ... nor A's users.
    expect_reason(
        change_role(&app, g, &bob.user_id, Some(&["ORDERS"]), None, None).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_reason(
        remove_all_permissions(&app, g, &bob.user_id).await,
        Code::NotFound,
        "NOT_FOUND",
    );

    // B may create the same key with other permissions, change and delete it: A is unmoved.
    create_role(
        &app,
        g,
        "SUPPORT_LEAD",
        pb::RoleScope::Account,
        &["billing.access"],
    )
    .await
    .expect("B's own SUPPORT_LEAD");
    change_role(&app, g, &gus.user_id, Some(&["SUPPORT_LEAD"]), None, None)
        .await
        .expect("B assigns its own role");
    let holders = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move {
            list_all(
                app,
                &token,
                pb::UserFilter {
                    roles: roles(&["SUPPORT_LEAD"]),
                    ..Default::default()
                },
            )
            .await
            .into_iter()
            .map(|u| u.email)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(holders(a).await, roles(&["bob@acme.test"]));
    assert_eq!(holders(g).await, roles(&["gus@globex.test"]));
    assert_grant(
        &principal(&app, &gus.access_token).await,
        &["SUPPORT_LEAD"],
        &["billing.access"],
        &["reports.run"],
    );
    update_role(&app, g, "SUPPORT_LEAD", "Lead", &["lookup.access"])
        .await
        .expect("B updates its role");
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &["SUPPORT_LEAD"],
        &["reports.run"],
        &["lookup.access", "billing.access"],
    );
    delete_role(&app, g, "SUPPORT_LEAD")
        .await
        .expect("B deletes its role");
    assert_grant(
        &principal(&app, &gus.access_token).await,
        &[],
        &[],
        &["lookup.access"],
    );

    let a_role = role_named(&app, a, "SUPPORT_LEAD")
        .await
        .expect("A's role stays");
    assert_eq!(a_role.permissions, roles(&["reports.run"]));
    assert_eq!(a_role.name, "Role SUPPORT_LEAD");
    assert_eq!(
        get(&app, a, &bob.user_id).await.expect("bob").roles,
        roles(&["SUPPORT_LEAD"])
    );
    assert_grant(
        &principal(&app, &bob.access_token).await,
        &["SUPPORT_LEAD"],
        &["reports.run"],
        &[],
    );
    // A fresh login of A's holder carries A's permissions too.
    let fresh =
        crate::users_support::login(&app, &acme, "bob@acme.test", crate::harness::PASSWORD).await;
    assert_grant(
        &principal(&app, &fresh.access_token).await,
        &["SUPPORT_LEAD"],
        &["reports.run"],
        &["lookup.access"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_before_an_ownership_transfer_does_not_hide_the_new_owners_ownership() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    change_role(
        &app,
        acme.token(),
        &bob.user_id,
        Some(&["ORDERS"]),
        None,
        None,
    )
    .await
    .expect("changed");
    crate::users_support::transfer_keeping(&app, acme.token(), &bob.user_id, &["ADMIN"])
        .await
        .expect("transferred");
    let owner =
        crate::users_support::login(&app, &acme, "bob@acme.test", crate::harness::PASSWORD).await;
    let seen = principal(&app, &owner.access_token).await;
    assert!(seen.is_owner, "the new owner's fresh token: {seen:?}");
    assert!(seen.permissions.iter().any(|p| p == "ownership.transfer"));
    let former =
        crate::users_support::login(&app, &acme, "ann@acme.test", crate::harness::PASSWORD).await;
    let seen = principal(&app, &former.access_token).await;
    assert!(!seen.is_owner);
    assert_eq!(seen.roles, roles(&["ADMIN"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owner_who_changed_their_own_roles_keeps_no_owner_powers_after_a_transfer() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let cy = member(&app, &acme, "cy@acme.test", &["REPORTS"]).await;
    change_role(
        &app,
        acme.token(),
        &acme.owner.user_id,
        None,
        Some("PLATFORM_MEMBER"),
        None,
    )
    .await
    .expect("the owner takes a Platform role");
    crate::users_support::transfer_keeping(&app, acme.token(), &bob.user_id, &["REPORTS"])
        .await
        .expect("transferred");
    let former =
        crate::users_support::login(&app, &acme, "ann@acme.test", crate::harness::PASSWORD).await;
    let seen = principal(&app, &former.access_token).await;
    assert!(!seen.is_owner, "the former owner's fresh token: {seen:?}");
    assert_eq!(seen.roles, roles(&["REPORTS"]));
    expect_code(
        change_role(
            &app,
            &former.access_token,
            &cy.user_id,
            Some(&["ADMIN"]),
            None,
            None,
        )
        .await,
        Code::PermissionDenied,
    );
}
