//! Helpers of the UserService tests: an account with a logged-in owner, members created and
//! activated through the API, and thin wrappers over the calls the tests repeat.

#![allow(dead_code)]

use roster::api::pb::{self, user_service_client::UserServiceClient};
use tonic::{Status, transport::Channel};

use crate::harness::{Account, PASSWORD, TestApp, authed};

/// A logged-in user: who they are and the tokens of their session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// An account with its owner logged in.
#[derive(Debug, Clone)]
pub struct Org {
    pub account: Account,
    pub owner: Session,
}

impl Org {
    /// The slug to log in with.
    pub fn slug(&self) -> &str {
        &self.account.tenant_slug
    }

    /// The owner's access token.
    pub fn token(&self) -> &str {
        &self.owner.access_token
    }
}

/// A UserService client on the app's channel.
pub fn users(app: &TestApp) -> UserServiceClient<Channel> {
    UserServiceClient::new(app.channel.clone())
}

/// Signs up an account, activates and logs in its owner ("Ann Owner").
pub async fn org(app: &TestApp, name: &str, owner_email: &str) -> Org {
    let account = app.sign_up_and_activate(name, owner_email).await;
    let login = app.login_owner(&account).await;
    let owner = Session {
        user_id: account.user_id.clone(),
        email: account.email.clone(),
        password: account.password.clone(),
        access_token: login.access_token,
        refresh_token: login.refresh_token,
    };
    Org { account, owner }
}

/// A CreateUser request with a password, the given roles and names derived from the email.
pub fn new_user(email: &str, roles: &[&str]) -> pb::CreateUserRequest {
    let local = email.split('@').next().unwrap_or(email);
    let mut first = local.to_owned();
    if let Some(c) = first.get_mut(0..1) {
        c.make_ascii_uppercase();
    }
    pb::CreateUserRequest {
        email: email.to_owned(),
        first_name: first,
        last_name: "Tester".to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        password: PASSWORD.to_owned(),
        // Most tests do not read the mail; those that do ask for it.
        return_activation_token: true,
        ..Default::default()
    }
}

/// Calls CreateUser with `token`.
pub async fn create(
    app: &TestApp,
    token: &str,
    request: pb::CreateUserRequest,
) -> Result<pb::CreateUserResponse, Status> {
    users(app)
        .create_user(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Creates a user (PENDING_CONFIRMATION, password [`PASSWORD`]) as `token`'s holder.
pub async fn pending(app: &TestApp, token: &str, email: &str, roles: &[&str]) -> pb::User {
    create(app, token, new_user(email, roles))
        .await
        .unwrap_or_else(|err| panic!("create {email}: {err:?}"))
        .user
        .expect("the created user")
}

/// Consumes an activation or invitation token.
pub async fn activate(
    app: &TestApp,
    token: &str,
    password: &str,
) -> Result<pb::ActivateAccountResponse, Status> {
    app.auth()
        .activate_account(pb::ActivateAccountRequest {
            token: token.to_owned(),
            password: password.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Creates a user as `token`'s holder, activates them and logs them in.
pub async fn member_by(
    app: &TestApp,
    org: &Org,
    token: &str,
    request: pb::CreateUserRequest,
) -> Session {
    let email = request.email.clone();
    let password = if request.password.is_empty() {
        PASSWORD.to_owned()
    } else {
        request.password.clone()
    };
    let created = create(
        app,
        token,
        pb::CreateUserRequest {
            return_activation_token: true,
            ..request
        },
    )
    .await
    .unwrap_or_else(|err| panic!("create {email}: {err:?}"));
    activate(app, &created.activation_token, &password)
        .await
        .unwrap_or_else(|err| panic!("activate {email}: {err:?}"));
    login(app, org, &email, &password).await
}

/// Creates an ACTIVE user with `roles` (by the owner) and logs them in.
pub async fn member(app: &TestApp, org: &Org, email: &str, roles: &[&str]) -> Session {
    member_by(app, org, org.token(), new_user(email, roles)).await
}

/// Logs a user of `org` in.
pub async fn login(app: &TestApp, org: &Org, email: &str, password: &str) -> Session {
    let response = app
        .login(org.slug(), email, password)
        .await
        .unwrap_or_else(|err| panic!("login of {email}: {err:?}"));
    Session {
        user_id: response.user.expect("user").id,
        email: email.to_lowercase(),
        password: password.to_owned(),
        access_token: response.access_token,
        refresh_token: response.refresh_token,
    }
}

/// Calls GetUser.
pub async fn get(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, Status> {
    users(app)
        .get_user(authed(
            pb::GetUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls ListUsers.
pub async fn list(
    app: &TestApp,
    token: &str,
    request: pb::ListUsersRequest,
) -> Result<pb::ListUsersResponse, Status> {
    users(app)
        .list_users(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A filter on a text query.
pub fn query(text: &str, mode: pb::MatchMode) -> pb::UserFilter {
    pb::UserFilter {
        query: text.to_owned(),
        match_mode: mode as i32,
        ..Default::default()
    }
}

/// Every user matching `filter` (one large page), in the default order.
pub async fn list_all(app: &TestApp, token: &str, filter: pb::UserFilter) -> Vec<pb::User> {
    let response = list(
        app,
        token,
        pb::ListUsersRequest {
            filter: Some(filter),
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .expect("ListUsers");
    assert!(response.next_page_token.is_empty(), "more than one page");
    response.users
}

/// Emails of every user matching `filter`, sorted.
pub async fn emails(app: &TestApp, token: &str, filter: pb::UserFilter) -> Vec<String> {
    let mut found: Vec<String> = list_all(app, token, filter)
        .await
        .into_iter()
        .map(|u| u.email)
        .collect();
    found.sort();
    found
}

/// How many users the account has, as `token`'s holder counts them.
pub async fn count(app: &TestApp, token: &str) -> i64 {
    list(
        app,
        token,
        pb::ListUsersRequest {
            page_size: 1,
            include_total_size: true,
            ..Default::default()
        },
    )
    .await
    .expect("ListUsers")
    .total_size
}

/// A field mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// Calls UpdateUser with `user` and a mask of `paths`.
pub async fn update(
    app: &TestApp,
    token: &str,
    user_id: &str,
    user: pb::User,
    paths: &[&str],
) -> Result<pb::User, Status> {
    users(app)
        .update_user(authed(
            pb::UpdateUserRequest {
                user_id: user_id.to_owned(),
                user: Some(user),
                update_mask: mask(paths),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls DeleteUser.
pub async fn delete(app: &TestApp, token: &str, user_id: &str) -> Result<(), Status> {
    users(app)
        .delete_user(authed(
            pb::DeleteUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// Calls DeactivateUser.
pub async fn deactivate(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, Status> {
    users(app)
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls ReactivateUser.
pub async fn reactivate(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, Status> {
    users(app)
        .reactivate_user(authed(
            pb::ReactivateUserRequest {
                user_id: user_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls ResendInvitation.
pub async fn resend(
    app: &TestApp,
    token: &str,
    user_id: &str,
    return_activation_token: bool,
) -> Result<pb::ResendInvitationResponse, Status> {
    users(app)
        .resend_invitation(authed(
            pb::ResendInvitationRequest {
                user_id: user_id.to_owned(),
                return_activation_token,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls ResetPassword; returns the temporary password.
pub async fn reset_password(
    app: &TestApp,
    token: &str,
    user_id: &str,
    require_change: bool,
) -> Result<String, Status> {
    users(app)
        .reset_password(authed(
            pb::ResetPasswordRequest {
                user_id: user_id.to_owned(),
                require_change,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().temporary_password)
}

/// Calls TransferOwnership, the former owner keeping `roles`.
pub async fn transfer_keeping(
    app: &TestApp,
    token: &str,
    new_owner: &str,
    roles: &[&str],
) -> Result<pb::TransferOwnershipResponse, Status> {
    transfer(
        app,
        token,
        new_owner,
        Some(
            pb::transfer_ownership_request::FormerOwner::FormerOwnerRoles(pb::RoleList {
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            }),
        ),
    )
    .await
}

/// Calls TransferOwnership.
pub async fn transfer(
    app: &TestApp,
    token: &str,
    new_owner: &str,
    former_owner: Option<pb::transfer_ownership_request::FormerOwner>,
) -> Result<pb::TransferOwnershipResponse, Status> {
    users(app)
        .transfer_ownership(authed(
            pb::TransferOwnershipRequest {
                new_owner_user_id: new_owner.to_owned(),
                former_owner,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls BulkUpdateUsers.
pub async fn bulk(
    app: &TestApp,
    token: &str,
    request: pb::BulkUpdateUsersRequest,
) -> Result<pb::BulkUpdateUsersResponse, Status> {
    users(app)
        .bulk_update_users(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A mass-action selection of explicit ids.
pub fn by_ids(ids: &[&str]) -> Option<pb::bulk_update_users_request::Selection> {
    Some(pb::bulk_update_users_request::Selection::UserIds(
        pb::UserIdList {
            user_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        },
    ))
}

/// A mass-action selection by filter.
pub fn by_filter(filter: pb::UserFilter) -> Option<pb::bulk_update_users_request::Selection> {
    Some(pb::bulk_update_users_request::Selection::Filter(filter))
}

/// The mass-action selection of every user.
pub fn all_users() -> Option<pb::bulk_update_users_request::Selection> {
    Some(pb::bulk_update_users_request::Selection::AllUsers(true))
}

/// Options of an import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    pub skip_invalid_rows: bool,
    pub suppress_emails: bool,
}

/// Streams `csv` to ImportUsers in chunks of `chunk` bytes; the options ride on the first message.
pub async fn import(
    app: &TestApp,
    token: &str,
    csv: &str,
    chunk: usize,
    options: ImportOptions,
) -> Result<pb::ImportUsersResponse, Status> {
    let messages: Vec<pb::ImportUsersRequest> = csv
        .as_bytes()
        .chunks(chunk.max(1))
        .enumerate()
        .map(|(i, bytes)| pb::ImportUsersRequest {
            dry_run: i == 0 && options.dry_run,
            skip_invalid_rows: i == 0 && options.skip_invalid_rows,
            suppress_emails: i == 0 && options.suppress_emails,
            csv_chunk: bytes.to_vec(),
        })
        .collect();
    users(app)
        .import_users(authed(tokio_stream::iter(messages), token))
        .await
        .map(tonic::Response::into_inner)
}

/// The (line, column) pairs of an import report, sorted.
pub fn import_errors(report: &pb::ImportUsersResponse) -> Vec<(i64, String)> {
    let mut found: Vec<(i64, String)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.column.clone()))
        .collect();
    found.sort();
    found
}

/// The (user id, reason) pairs of a mass action's skips, sorted.
pub fn skips(response: &pb::BulkUpdateUsersResponse) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = response
        .skipped
        .iter()
        .map(|s| (s.user_id.clone(), s.reason.clone()))
        .collect();
    found.sort();
    found
}

/// The principal behind a valid access token (panics on an invalid one).
pub async fn principal(app: &TestApp, access_token: &str) -> pb::Principal {
    let validation = app.validate(access_token).await;
    assert!(validation.valid, "the token is not valid");
    validation.principal.expect("a principal")
}

/// Whether the server still accepts `access_token` (WhoAmI answers).
pub async fn accepted(app: &TestApp, access_token: &str) -> bool {
    match app.who_am_i(access_token).await {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::Unauthenticated => false,
        Err(other) => panic!("WhoAmI failed unexpectedly: {other:?}"),
    }
}

/// Waits until the mail queued before `marker_email`'s newest message has been delivered, so a
/// test can tell that nothing was mailed to someone: messages go out in queue order.
pub async fn flush_mail(app: &TestApp, org: &Org, marker_email: &str) {
    let before = app.mails_to_now(marker_email).len();
    let mut request = new_user(marker_email, &["REPORTS"]);
    request.return_activation_token = false;
    create(app, org.token(), request)
        .await
        .expect("create the marker user");
    app.wait_for_mails_to(marker_email, before + 1).await;
}

/// `role` keys as owned strings.
pub fn roles(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// A token issued before a role change never acts with the old grant: it is refused, or it
/// carries exactly the new roles.
pub async fn token_follows_roles(app: &TestApp, access_token: &str, expected: &[&str]) {
    let validation = app.validate(access_token).await;
    if validation.valid {
        let principal = validation.principal.expect("a principal");
        assert_eq!(
            principal.roles,
            roles(expected),
            "a token from before the role change still carries the old roles"
        );
    }
}
