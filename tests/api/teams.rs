//! `roster.v1.TeamService`: teams, departments, desks, skill groups and spaces with a role per
//! membership; finding users by team, tag and role; the team and tag mass actions; and the SMS
//! page's flow from invitation to "Remove all permissions".

#![allow(dead_code)]

use roster::api::pb::{self, team_service_client::TeamServiceClient};
use tonic::{Code, Status, transport::Channel};

use crate::harness::{
    TestApp, authed, expect_bad_fields, expect_code, expect_reason, spawn_app, token_from_mail,
};
use crate::roles::{change_role, remove_all_permissions};
use crate::users_support::{
    Org, activate, all_users, bulk, by_ids, create, delete, emails, get, list, login, mask, member,
    new_user, org, principal, roles,
};

/// A TeamService client on the app's channel.
pub fn teams(app: &TestApp) -> TeamServiceClient<Channel> {
    TeamServiceClient::new(app.channel.clone())
}

/// Calls CreateTeam.
pub async fn create_team(
    app: &TestApp,
    token: &str,
    kind: pb::TeamKind,
    name: &str,
    space_id: &str,
) -> Result<pb::Team, Status> {
    teams(app)
        .create_team(authed(
            pb::CreateTeamRequest {
                kind: kind as i32,
                name: name.to_owned(),
                description: format!("The {name} group"),
                space_id: space_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Creates a team of `kind` outside any space (panics on failure).
pub async fn team(app: &TestApp, token: &str, kind: pb::TeamKind, name: &str) -> pb::Team {
    create_team(app, token, kind, name, "")
        .await
        .unwrap_or_else(|err| panic!("create {name}: {err:?}"))
}

/// Calls GetTeam.
pub async fn get_team(app: &TestApp, token: &str, team_id: &str) -> Result<pb::Team, Status> {
    teams(app)
        .get_team(authed(
            pb::GetTeamRequest {
                team_id: team_id.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls ListTeams.
pub async fn list_teams(
    app: &TestApp,
    token: &str,
    request: pb::ListTeamsRequest,
) -> Result<pb::ListTeamsResponse, Status> {
    teams(app)
        .list_teams(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Names of every team `request` matches, following page tokens.
pub async fn team_names(app: &TestApp, token: &str, request: pb::ListTeamsRequest) -> Vec<String> {
    let mut names = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100 {
        let page = list_teams(
            app,
            token,
            pb::ListTeamsRequest {
                page_token: page_token.clone(),
                ..request.clone()
            },
        )
        .await
        .expect("ListTeams");
        names.extend(page.teams.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            return names;
        }
        page_token = page.next_page_token;
    }
    panic!("ListTeams never ended");
}

/// Calls UpdateTeam with `team` and a mask of `paths`.
pub async fn update_team(
    app: &TestApp,
    token: &str,
    team_id: &str,
    team: pb::Team,
    paths: &[&str],
) -> Result<pb::Team, Status> {
    teams(app)
        .update_team(authed(
            pb::UpdateTeamRequest {
                team_id: team_id.to_owned(),
                team: Some(team),
                update_mask: mask(paths),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls DeleteTeam.
pub async fn delete_team(app: &TestApp, token: &str, team_id: &str) -> Result<(), Status> {
    teams(app)
        .delete_team(authed(
            pb::DeleteTeamRequest {
                team_id: team_id.to_owned(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// Calls AddTeamMembers.
pub async fn add_members(
    app: &TestApp,
    token: &str,
    team_id: &str,
    user_ids: &[&str],
    role: pb::TeamRole,
) -> Result<pb::AddTeamMembersResponse, Status> {
    teams(app)
        .add_team_members(authed(
            pb::AddTeamMembersRequest {
                team_id: team_id.to_owned(),
                user_ids: user_ids.iter().map(|id| (*id).to_owned()).collect(),
                role: role as i32,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Calls RemoveTeamMembers; returns how many were removed.
pub async fn remove_members(
    app: &TestApp,
    token: &str,
    team_id: &str,
    user_ids: &[&str],
) -> Result<i64, Status> {
    teams(app)
        .remove_team_members(authed(
            pb::RemoveTeamMembersRequest {
                team_id: team_id.to_owned(),
                user_ids: user_ids.iter().map(|id| (*id).to_owned()).collect(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().removed)
}

/// Calls ListTeamMembers for one page.
pub async fn list_members(
    app: &TestApp,
    token: &str,
    team_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListTeamMembersResponse, Status> {
    teams(app)
        .list_team_members(authed(
            pb::ListTeamMembersRequest {
                team_id: team_id.to_owned(),
                page_size,
                page_token: page_token.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// (email, role) of every member of a team, sorted by email.
pub async fn members_of(app: &TestApp, token: &str, team_id: &str) -> Vec<(String, pb::TeamRole)> {
    let page = list_members(app, token, team_id, 1000, "")
        .await
        .expect("ListTeamMembers");
    assert!(page.next_page_token.is_empty());
    let mut found: Vec<(String, pb::TeamRole)> = page
        .members
        .into_iter()
        .map(|m| {
            (
                m.user.expect("member user").email,
                pb::TeamRole::try_from(m.role).expect("a known role"),
            )
        })
        .collect();
    found.sort();
    found
}

/// Calls ChangeTeamMemberRole.
pub async fn change_member_role(
    app: &TestApp,
    token: &str,
    team_id: &str,
    user_id: &str,
    role: pb::TeamRole,
) -> Result<pb::TeamMembership, Status> {
    teams(app)
        .change_team_member_role(authed(
            pb::ChangeTeamMemberRoleRequest {
                team_id: team_id.to_owned(),
                user_id: user_id.to_owned(),
                role: role as i32,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// (team name, role) of a user's memberships, sorted.
fn memberships(user: &pb::User) -> Vec<(String, pb::TeamRole)> {
    let mut found: Vec<(String, pb::TeamRole)> = user
        .memberships
        .iter()
        .map(|m| {
            (
                m.team_name.clone(),
                pb::TeamRole::try_from(m.role).expect("a known role"),
            )
        })
        .collect();
    found.sort();
    found
}

fn by_team(team_ids: &[&str]) -> pb::UserFilter {
    pb::UserFilter {
        team_ids: team_ids.iter().map(|id| (*id).to_owned()).collect(),
        ..Default::default()
    }
}

fn by_role(keys: &[&str]) -> pb::UserFilter {
    pb::UserFilter {
        roles: roles(keys),
        ..Default::default()
    }
}

fn by_tag(tags: &[&str]) -> pb::UserFilter {
    pb::UserFilter {
        tags: roles(tags),
        ..Default::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    roles(items)
}

fn kinds(kinds: &[pb::TeamKind]) -> pb::ListTeamsRequest {
    pb::ListTeamsRequest {
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------ the SMS page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_page_flow_invites_a_user_assigns_them_to_a_team_changes_their_role_and_removes_all_their_permissions()
 {
    let app = spawn_app().await;
    let peak = org(&app, "TextPeak", "ann@textpeak.test").await;
    let commpeak = team(&app, peak.token(), pb::TeamKind::Team, "CommPeak").await;
    // Someone else, to show that the searches below do not simply return everyone.
    member(&app, &peak, "quinn@textpeak.test", &["PLATFORM_ADMIN"]).await;

    // "Add User": a name, an email, a Platform role and an Inbox role; no password.
    let mut invite = new_user("pat@textpeak.test", &["platform_member", "INBOX_AGENT"]);
    invite.first_name = "Pat".to_owned();
    invite.last_name = "Jones".to_owned();
    invite.password = String::new();
    invite.return_activation_token = false;
    let pat = create(&app, peak.token(), invite)
        .await
        .expect("invited")
        .user
        .expect("user");
    assert_eq!(pat.status, pb::UserStatus::PendingConfirmation as i32);
    assert_eq!(pat.roles, roles(&["INBOX_AGENT", "PLATFORM_MEMBER"]));
    // "A new user does not belong to any team."
    assert!(pat.memberships.is_empty(), "{:?}", pat.memberships);
    assert!(
        get(&app, peak.token(), &pat.id)
            .await
            .expect("get")
            .memberships
            .is_empty()
    );
    assert!(
        members_of(&app, peak.token(), &commpeak.id)
            .await
            .is_empty()
    );
    assert!(
        emails(&app, peak.token(), by_team(&[&commpeak.id]))
            .await
            .is_empty()
    );

    // The invitation email; confirming it with a password makes the user ACTIVE.
    let mail = app.latest_mail_to("pat@textpeak.test").await;
    assert!(
        crate::harness::header(&mail, "subject").is_some_and(|s| s.contains("invited")),
        "{mail}"
    );
    let activated = activate(&app, &token_from_mail(&mail), "Pat-Chose-2024")
        .await
        .expect("registration completes")
        .user
        .expect("user");
    assert_eq!(activated.status, pb::UserStatus::Active as i32);
    let session = login(&app, &peak, "pat@textpeak.test", "Pat-Chose-2024").await;
    let before = principal(&app, &session.access_token).await;
    assert_eq!(before.roles, roles(&["INBOX_AGENT", "PLATFORM_MEMBER"]));
    for permission in [
        "sms.access",
        "teams.read",
        "inbox.access",
        "support.contact",
    ] {
        assert!(
            before.permissions.iter().any(|p| p == permission),
            "{permission}"
        );
    }
    assert!(!before.permissions.iter().any(|p| p == "teams.write"));

    // "Assign to team": a role and a team.
    let added = add_members(
        &app,
        peak.token(),
        &commpeak.id,
        &[&pat.id],
        pb::TeamRole::Supervisor,
    )
    .await
    .expect("assigned");
    assert_eq!(added.added, 1);
    assert!(added.skipped.is_empty());
    assert_eq!(
        memberships(&get(&app, peak.token(), &pat.id).await.expect("get")),
        vec![("CommPeak".to_owned(), pb::TeamRole::Supervisor)]
    );
    assert_eq!(
        get_team(&app, peak.token(), &commpeak.id)
            .await
            .expect("team")
            .member_count,
        1
    );

    // Search by team, by role, by name, and by all of them at once.
    assert_eq!(
        emails(&app, peak.token(), by_team(&[&commpeak.id])).await,
        strings(&["pat@textpeak.test"])
    );
    assert_eq!(
        emails(&app, peak.token(), by_role(&["INBOX_AGENT"])).await,
        strings(&["pat@textpeak.test"])
    );
    assert_eq!(
        emails(&app, peak.token(), by_role(&["PLATFORM_ADMIN"])).await,
        strings(&["quinn@textpeak.test"])
    );
    for (text, mode) in [
        ("Pat", pb::MatchMode::Prefix),
        ("jones", pb::MatchMode::Exact),
        ("ONE", pb::MatchMode::Contains),
    ] {
        assert_eq!(
            emails(&app, peak.token(), crate::users_support::query(text, mode)).await,
            strings(&["pat@textpeak.test"]),
            "search {text:?}"
        );
    }
    let combined = pb::UserFilter {
        query: "jon".to_owned(),
        roles: roles(&["INBOX_AGENT"]),
        team_ids: vec![commpeak.id.clone()],
        ..Default::default()
    };
    assert_eq!(
        emails(&app, peak.token(), combined).await,
        strings(&["pat@textpeak.test"])
    );

    // "Change role": a new Platform role, felt by the token in hand at once.
    let changed = change_role(
        &app,
        peak.token(),
        &pat.id,
        None,
        Some("PLATFORM_ADMIN"),
        None,
    )
    .await
    .expect("role changed");
    assert_eq!(changed.roles, roles(&["INBOX_AGENT", "PLATFORM_ADMIN"]));
    let now = principal(&app, &session.access_token).await;
    assert_eq!(now.roles, roles(&["INBOX_AGENT", "PLATFORM_ADMIN"]));
    for permission in ["teams.write", "users.read", "lookup.access", "inbox.access"] {
        assert!(
            now.permissions.iter().any(|p| p == permission),
            "{permission} in {:?}",
            now.permissions
        );
    }
    assert_eq!(
        emails(&app, peak.token(), by_role(&["PLATFORM_ADMIN"])).await,
        strings(&["pat@textpeak.test", "quinn@textpeak.test"])
    );
    // A platform admin manages teams with the very same token.
    team(
        &app,
        &session.access_token,
        pb::TeamKind::Team,
        "Night shift",
    )
    .await;

    // "Unassign from team".
    assert_eq!(
        remove_members(&app, peak.token(), &commpeak.id, &[&pat.id])
            .await
            .expect("unassigned"),
        1
    );
    assert!(
        emails(&app, peak.token(), by_team(&[&commpeak.id]))
            .await
            .is_empty()
    );

    // "Remove all permissions": nothing but contacting support is left, at once.
    let stripped = remove_all_permissions(&app, peak.token(), &pat.id)
        .await
        .expect("permissions removed");
    assert!(stripped.roles.is_empty(), "{:?}", stripped.roles);
    let last = principal(&app, &session.access_token).await;
    assert!(last.roles.is_empty(), "{:?}", last.roles);
    assert_eq!(last.permissions, strings(&["support.contact"]));
    expect_reason(
        list_teams(&app, &session.access_token, Default::default()).await,
        Code::PermissionDenied,
        "MISSING_PERMISSION",
    );
    assert!(
        emails(&app, peak.token(), by_role(&["INBOX_AGENT"]))
            .await
            .is_empty()
    );
    // Pat still reads their own profile.
    assert_eq!(
        get(&app, &session.access_token, &pat.id)
            .await
            .expect("own profile")
            .email,
        "pat@textpeak.test"
    );
}

// ------------------------------------------------------------------------------ teams

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_of_every_kind_are_created_read_and_deleted_with_their_memberships() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;

    // An unset kind is a TEAM.
    let plain = teams(&app)
        .create_team(authed(
            pb::CreateTeamRequest {
                name: "  Sales  ".to_owned(),
                ..Default::default()
            },
            acme.token(),
        ))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(plain.kind, pb::TeamKind::Team as i32);
    assert_eq!(plain.name, "Sales", "names are trimmed");
    assert_eq!(plain.tenant_id, acme.account.tenant_id);
    assert_eq!(plain.member_count, 0);
    assert!(plain.space_id.is_empty());
    assert!(plain.created_at.is_some() && plain.updated_at.is_some());
    assert_eq!(
        uuid::Uuid::parse_str(&plain.id)
            .expect("a UUID")
            .get_version_num(),
        7
    );

    let mut made = Vec::new();
    for (kind, name) in [
        (pb::TeamKind::Department, "Finance dept"),
        (pb::TeamKind::Desk, "Front desk"),
        (pb::TeamKind::SkillGroup, "Spanish speakers"),
        (pb::TeamKind::Space, "EMEA"),
    ] {
        let created = team(&app, acme.token(), kind, name).await;
        assert_eq!(created.kind, kind as i32, "{name}");
        assert_eq!(created.description, format!("The {name} group"));
        let read = get_team(&app, acme.token(), &created.id)
            .await
            .expect("GetTeam");
        assert_eq!(read, created, "{name}");
        made.push(created);
    }
    add_members(
        &app,
        acme.token(),
        &made[0].id,
        &[&bob.user_id],
        pb::TeamRole::Member,
    )
    .await
    .expect("add");
    assert_eq!(
        memberships(&get(&app, acme.token(), &bob.user_id).await.expect("get")),
        vec![("Finance dept".to_owned(), pb::TeamRole::Member)]
    );

    delete_team(&app, acme.token(), &made[0].id)
        .await
        .expect("deleted");
    expect_reason(
        get_team(&app, acme.token(), &made[0].id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_code(
        delete_team(&app, acme.token(), &made[0].id).await,
        Code::NotFound,
    );
    assert!(
        get(&app, acme.token(), &bob.user_id)
            .await
            .expect("get")
            .memberships
            .is_empty(),
        "the deleted department's membership is gone"
    );
    assert!(
        emails(&app, acme.token(), by_team(&[&made[0].id]))
            .await
            .is_empty()
    );
    expect_bad_fields(
        get_team(&app, acme.token(), "not-a-uuid").await,
        &["team_id"],
    );
    expect_code(
        get_team(&app, acme.token(), &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_team_names_every_bad_field_and_creates_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let status = expect_bad_fields(
        teams(&app)
            .create_team(authed(
                pb::CreateTeamRequest {
                    kind: 42,
                    name: "   ".to_owned(),
                    description: "x".repeat(1001),
                    space_id: "nope".to_owned(),
                },
                acme.token(),
            ))
            .await,
        &["description", "kind", "name", "space_id"],
    );
    assert!(status.message().contains("name"), "{}", status.message());
    expect_bad_fields(
        create_team(&app, acme.token(), pb::TeamKind::Team, &"n".repeat(201), "").await,
        &["name"],
    );
    expect_bad_fields(
        create_team(&app, acme.token(), pb::TeamKind::Team, "Tab\tname", "").await,
        &["name"],
    );
    assert!(
        team_names(&app, acme.token(), Default::default())
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_names_are_unique_per_kind_within_an_account() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    team(&app, acme.token(), pb::TeamKind::Team, "Support").await;
    let status = expect_code(
        create_team(&app, acme.token(), pb::TeamKind::Team, "Support", "").await,
        Code::AlreadyExists,
    );
    assert_eq!(crate::harness::bad_fields(&status), strings(&["name"]));
    // Another kind, or another account, may use the name.
    team(&app, acme.token(), pb::TeamKind::Department, "Support").await;
    team(&app, globex.token(), pb::TeamKind::Team, "Support").await;

    // Renaming onto a taken name is refused the same way.
    let other = team(&app, acme.token(), pb::TeamKind::Team, "Billing").await;
    let status = expect_code(
        update_team(
            &app,
            acme.token(),
            &other.id,
            pb::Team {
                name: "Support".to_owned(),
                ..Default::default()
            },
            &["name"],
        )
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(crate::harness::bad_fields(&status), strings(&["team.name"]));
    assert_eq!(
        get_team(&app, acme.token(), &other.id)
            .await
            .expect("get")
            .name,
        "Billing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_may_belong_to_a_space_but_a_space_cannot_belong_to_a_space() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let emea = team(&app, acme.token(), pb::TeamKind::Space, "EMEA").await;
    let apac = team(&app, acme.token(), pb::TeamKind::Space, "APAC").await;
    let desk = team(&app, acme.token(), pb::TeamKind::Desk, "Front desk").await;

    let berlin = create_team(&app, acme.token(), pb::TeamKind::Team, "Berlin", &emea.id)
        .await
        .expect("a team in a space");
    assert_eq!(berlin.space_id, emea.id);
    let skills = create_team(
        &app,
        acme.token(),
        pb::TeamKind::SkillGroup,
        "German",
        &emea.id,
    )
    .await
    .expect("a skill group in a space");
    assert_eq!(skills.space_id, emea.id);

    // A space cannot belong to a space, and only a space holds teams.
    expect_bad_fields(
        create_team(
            &app,
            acme.token(),
            pb::TeamKind::Space,
            "Europe-West",
            &emea.id,
        )
        .await,
        &["space_id"],
    );
    expect_bad_fields(
        create_team(&app, acme.token(), pb::TeamKind::Team, "Lobby", &desk.id).await,
        &["space_id"],
    );
    expect_code(
        create_team(
            &app,
            acme.token(),
            pb::TeamKind::Team,
            "Nowhere",
            &uuid::Uuid::now_v7().to_string(),
        )
        .await,
        Code::NotFound,
    );
    expect_bad_fields(
        update_team(
            &app,
            acme.token(),
            &apac.id,
            pb::Team {
                space_id: emea.id.clone(),
                ..Default::default()
            },
            &["space_id"],
        )
        .await,
        &["team.space_id"],
    );
    expect_bad_fields(
        update_team(
            &app,
            acme.token(),
            &emea.id,
            pb::Team {
                space_id: emea.id.clone(),
                ..Default::default()
            },
            &["space_id"],
        )
        .await,
        &["team.space_id"],
    );
    expect_bad_fields(
        update_team(
            &app,
            acme.token(),
            &berlin.id,
            pb::Team {
                space_id: desk.id.clone(),
                ..Default::default()
            },
            &["space_id"],
        )
        .await,
        &["team.space_id"],
    );

    // Moving between spaces and out of any space.
    let moved = update_team(
        &app,
        acme.token(),
        &berlin.id,
        pb::Team {
            space_id: apac.id.clone(),
            ..Default::default()
        },
        &["space_id"],
    )
    .await
    .expect("moved");
    assert_eq!(moved.space_id, apac.id);
    let by_space = |space: &str| pb::ListTeamsRequest {
        space_id: space.to_owned(),
        ..Default::default()
    };
    assert_eq!(
        team_names(&app, acme.token(), by_space(&emea.id)).await,
        strings(&["German"])
    );
    assert_eq!(
        team_names(&app, acme.token(), by_space(&apac.id)).await,
        strings(&["Berlin"])
    );
    let out = update_team(
        &app,
        acme.token(),
        &berlin.id,
        pb::Team::default(),
        &["space_id"],
    )
    .await
    .expect("out of the space");
    assert!(out.space_id.is_empty());
    assert!(
        team_names(&app, acme.token(), by_space(&apac.id))
            .await
            .is_empty()
    );

    // Deleting a space leaves its teams in no space.
    delete_team(&app, acme.token(), &emea.id)
        .await
        .expect("space deleted");
    let german = get_team(&app, acme.token(), &skills.id)
        .await
        .expect("the skill group stays");
    assert!(german.space_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_teams_filters_by_kind_text_and_space_and_pages_by_keyset() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let space = team(&app, acme.token(), pb::TeamKind::Space, "North space").await;
    for (kind, name) in [
        (pb::TeamKind::Team, "Sales North"),
        (pb::TeamKind::Team, "Sales South"),
        (pb::TeamKind::Department, "Legal"),
        (pb::TeamKind::Desk, "North desk"),
        (pb::TeamKind::SkillGroup, "100%_french"),
        (pb::TeamKind::SkillGroup, "100x french"),
    ] {
        team(&app, acme.token(), kind, name).await;
    }
    for name in ["North A", "North B"] {
        create_team(&app, acme.token(), pb::TeamKind::Team, name, &space.id)
            .await
            .expect("in space");
    }
    let all = team_names(&app, acme.token(), Default::default()).await;
    assert_eq!(
        all,
        strings(&[
            "North space",
            "Sales North",
            "Sales South",
            "Legal",
            "North desk",
            "100%_french",
            "100x french",
            "North A",
            "North B",
        ]),
        "oldest first"
    );

    assert_eq!(
        team_names(&app, acme.token(), kinds(&[pb::TeamKind::Team])).await,
        strings(&["Sales North", "Sales South", "North A", "North B"])
    );
    assert_eq!(
        team_names(
            &app,
            acme.token(),
            kinds(&[pb::TeamKind::Department, pb::TeamKind::Desk])
        )
        .await,
        strings(&["Legal", "North desk"])
    );
    assert_eq!(
        team_names(&app, acme.token(), kinds(&[pb::TeamKind::Space])).await,
        strings(&["North space"])
    );
    let text = |query: &str| pb::ListTeamsRequest {
        query: query.to_owned(),
        ..Default::default()
    };
    assert_eq!(
        team_names(&app, acme.token(), text("NORTH")).await,
        strings(&[
            "North space",
            "Sales North",
            "North desk",
            "North A",
            "North B"
        ]),
        "case-insensitive"
    );
    // LIKE wildcards in the text are plain characters.
    assert_eq!(
        team_names(&app, acme.token(), text("%_")).await,
        strings(&["100%_french"])
    );
    assert_eq!(
        team_names(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                kinds: vec![pb::TeamKind::Team as i32],
                query: "north".to_owned(),
                space_id: space.id.clone(),
                ..Default::default()
            }
        )
        .await,
        strings(&["North A", "North B"])
    );

    // Keyset pages of two cover every team once, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list_teams(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        pages += 1;
        assert!(page.teams.len() <= 2);
        seen.extend(page.teams.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 5);
    // A page that ends exactly at the last team has no next token.
    let exact = list_teams(
        &app,
        acme.token(),
        pb::ListTeamsRequest {
            page_size: 9,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    assert_eq!(exact.teams.len(), 9);
    assert!(exact.next_page_token.is_empty());

    expect_bad_fields(
        list_teams(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                page_size: 1001,
                ..Default::default()
            },
        )
        .await,
        &["page_size"],
    );
    expect_bad_fields(
        list_teams(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                page_token: "garbage!".to_owned(),
                ..Default::default()
            },
        )
        .await,
        &["page_token"],
    );
    expect_bad_fields(
        list_teams(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                kinds: vec![99],
                ..Default::default()
            },
        )
        .await,
        &["kinds"],
    );
    expect_bad_fields(
        list_teams(
            &app,
            acme.token(),
            pb::ListTeamsRequest {
                space_id: "x".to_owned(),
                ..Default::default()
            },
        )
        .await,
        &["space_id"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_team_changes_only_the_fields_named_in_the_mask() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let space = team(&app, acme.token(), pb::TeamKind::Space, "EMEA").await;
    let sales = team(&app, acme.token(), pb::TeamKind::Team, "Sales").await;
    let everything = pb::Team {
        id: uuid::Uuid::now_v7().to_string(),
        kind: pb::TeamKind::Desk as i32,
        name: "Sales EMEA".to_owned(),
        description: "Selling in Europe".to_owned(),
        space_id: space.id.clone(),
        member_count: 99,
        ..Default::default()
    };

    let renamed = update_team(&app, acme.token(), &sales.id, everything.clone(), &["name"])
        .await
        .expect("renamed");
    assert_eq!(renamed.name, "Sales EMEA");
    assert_eq!(renamed.description, sales.description);
    assert!(renamed.space_id.is_empty());
    assert_eq!(renamed.id, sales.id, "the id is not changed");
    assert_eq!(
        renamed.kind,
        pb::TeamKind::Team as i32,
        "the kind is not changed"
    );
    assert_eq!(renamed.member_count, 0);
    assert_eq!(renamed.created_at, sales.created_at);

    let described = update_team(
        &app,
        acme.token(),
        &sales.id,
        everything.clone(),
        &["description", "space_id"],
    )
    .await
    .expect("described");
    assert_eq!(described.name, "Sales EMEA");
    assert_eq!(described.description, "Selling in Europe");
    assert_eq!(described.space_id, space.id);
    assert_eq!(
        get_team(&app, acme.token(), &sales.id).await.expect("get"),
        described
    );

    expect_bad_fields(
        update_team(&app, acme.token(), &sales.id, everything.clone(), &[]).await,
        &["update_mask"],
    );
    expect_bad_fields(
        update_team(&app, acme.token(), &sales.id, everything.clone(), &["kind"]).await,
        &["update_mask"],
    );
    expect_bad_fields(
        update_team(
            &app,
            acme.token(),
            &sales.id,
            pb::Team::default(),
            &["name", "description"],
        )
        .await,
        &["team.name"],
    );
    expect_code(
        update_team(
            &app,
            acme.token(),
            &uuid::Uuid::now_v7().to_string(),
            everything,
            &["name"],
        )
        .await,
        Code::NotFound,
    );
    assert_eq!(
        get_team(&app, acme.token(), &sales.id).await.expect("get"),
        described,
        "refused updates changed nothing"
    );
}

// ------------------------------------------------------------------------------ members

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_team_members_adds_many_users_at_once_with_a_role_and_skips_strangers_and_members() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let support = team(&app, acme.token(), pb::TeamKind::Team, "Support").await;
    let mut ids = Vec::new();
    for email in ["a@acme.test", "b@acme.test", "c@acme.test"] {
        ids.push(
            crate::users_support::pending(&app, acme.token(), email, &["REPORTS"])
                .await
                .id,
        );
    }
    let stranger =
        crate::users_support::pending(&app, globex.token(), "s@globex.test", &["REPORTS"])
            .await
            .id;
    let unknown = uuid::Uuid::now_v7().to_string();

    let added = add_members(
        &app,
        acme.token(),
        &support.id,
        &[&ids[0], &ids[1], &ids[0], &stranger, &unknown],
        pb::TeamRole::Manager,
    )
    .await
    .expect("added");
    assert_eq!(added.added, 2);
    let mut skipped: Vec<(String, String)> = added
        .skipped
        .iter()
        .map(|s| (s.user_id.clone(), s.reason.clone()))
        .collect();
    skipped.sort();
    let mut expected = vec![
        (stranger.clone(), "NOT_FOUND".to_owned()),
        (unknown.clone(), "NOT_FOUND".to_owned()),
    ];
    expected.sort();
    assert_eq!(skipped, expected);

    // An unset role is MEMBER; those already in the team are skipped and keep their role.
    let again = add_members(
        &app,
        acme.token(),
        &support.id,
        &[&ids[1], &ids[2]],
        pb::TeamRole::Unspecified,
    )
    .await
    .expect("added again");
    assert_eq!(again.added, 1);
    assert_eq!(
        again
            .skipped
            .iter()
            .map(|s| (s.user_id.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(ids[1].as_str(), "ALREADY_MEMBER")]
    );
    assert_eq!(
        members_of(&app, acme.token(), &support.id).await,
        vec![
            ("a@acme.test".to_owned(), pb::TeamRole::Manager),
            ("b@acme.test".to_owned(), pb::TeamRole::Manager),
            ("c@acme.test".to_owned(), pb::TeamRole::Member),
        ]
    );
    assert_eq!(
        get_team(&app, acme.token(), &support.id)
            .await
            .expect("get")
            .member_count,
        3
    );
    // The stranger was not touched.
    assert!(
        get(&app, globex.token(), &stranger)
            .await
            .expect("get")
            .memberships
            .is_empty()
    );

    expect_bad_fields(
        add_members(&app, acme.token(), &support.id, &[], pb::TeamRole::Member).await,
        &["user_ids"],
    );
    expect_bad_fields(
        add_members(
            &app,
            acme.token(),
            &support.id,
            &[&ids[0], "nope"],
            pb::TeamRole::Member,
        )
        .await,
        &["user_ids[1]"],
    );
    expect_bad_fields(
        teams(&app)
            .add_team_members(authed(
                pb::AddTeamMembersRequest {
                    team_id: support.id.clone(),
                    user_ids: vec![ids[0].clone()],
                    role: 17,
                },
                acme.token(),
            ))
            .await,
        &["role"],
    );
    expect_code(
        add_members(
            &app,
            acme.token(),
            &uuid::Uuid::now_v7().to_string(),
            &[&ids[0]],
            pb::TeamRole::Member,
        )
        .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_team_members_pages_through_the_members_with_their_users_and_roles() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let desk = team(&app, acme.token(), pb::TeamKind::Desk, "Front desk").await;
    let mut ids = Vec::new();
    for email in [
        "d1@acme.test",
        "d2@acme.test",
        "d3@acme.test",
        "d4@acme.test",
        "d5@acme.test",
    ] {
        ids.push(
            crate::users_support::pending(&app, acme.token(), email, &["ORDERS"])
                .await
                .id,
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    add_members(&app, acme.token(), &desk.id, &refs, pb::TeamRole::Member)
        .await
        .expect("added");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_members(&app, acme.token(), &desk.id, 2, &token)
            .await
            .expect("page");
        assert!(page.members.len() <= 2);
        for member in page.members {
            let user = member.user.expect("user");
            assert_eq!(user.roles, roles(&["ORDERS"]));
            assert!(member.added_at.is_some());
            assert_eq!(member.role, pb::TeamRole::Member as i32);
            assert_eq!(
                memberships(&user),
                vec![("Front desk".to_owned(), pb::TeamRole::Member)]
            );
            seen.push(user.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected = ids.clone();
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, expected, "every member once");
    assert_eq!(seen.len(), 5);

    expect_bad_fields(
        list_members(&app, acme.token(), &desk.id, -1, "").await,
        &["page_size"],
    );
    expect_bad_fields(
        list_members(&app, acme.token(), &desk.id, 2, "%%%").await,
        &["page_token"],
    );
    expect_code(
        list_members(&app, acme.token(), &uuid::Uuid::now_v7().to_string(), 2, "").await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_team_member_role_changes_one_members_role_and_keeps_when_they_joined() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let support = team(&app, acme.token(), pb::TeamKind::Team, "Support").await;
    let bob =
        crate::users_support::pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let cy = crate::users_support::pending(&app, acme.token(), "cy@acme.test", &["REPORTS"]).await;
    add_members(
        &app,
        acme.token(),
        &support.id,
        &[&bob.id, &cy.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("added");
    let joined = list_members(&app, acme.token(), &support.id, 10, "")
        .await
        .expect("members")
        .members
        .into_iter()
        .find(|m| m.user.as_ref().is_some_and(|u| u.id == bob.id))
        .and_then(|m| m.added_at)
        .expect("bob joined");
    app.clock.advance(std::time::Duration::from_secs(60));

    let changed = change_member_role(
        &app,
        acme.token(),
        &support.id,
        &bob.id,
        pb::TeamRole::Supervisor,
    )
    .await
    .expect("changed");
    assert_eq!(changed.team_id, support.id);
    assert_eq!(changed.team_name, "Support");
    assert_eq!(changed.team_kind, pb::TeamKind::Team as i32);
    assert_eq!(changed.user_id, bob.id);
    assert_eq!(changed.role, pb::TeamRole::Supervisor as i32);
    assert_eq!(changed.added_at, Some(joined), "joining time is kept");
    assert_eq!(
        members_of(&app, acme.token(), &support.id).await,
        vec![
            ("bob@acme.test".to_owned(), pb::TeamRole::Supervisor),
            ("cy@acme.test".to_owned(), pb::TeamRole::Member),
        ]
    );

    // Not a member, not a user, not a team.
    let dee =
        crate::users_support::pending(&app, acme.token(), "dee@acme.test", &["REPORTS"]).await;
    expect_code(
        change_member_role(
            &app,
            acme.token(),
            &support.id,
            &dee.id,
            pb::TeamRole::Manager,
        )
        .await,
        Code::NotFound,
    );
    expect_code(
        change_member_role(
            &app,
            acme.token(),
            &uuid::Uuid::now_v7().to_string(),
            &bob.id,
            pb::TeamRole::Manager,
        )
        .await,
        Code::NotFound,
    );
    expect_bad_fields(
        change_member_role(
            &app,
            acme.token(),
            &support.id,
            "bob",
            pb::TeamRole::Manager,
        )
        .await,
        &["user_id"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_team_members_removes_many_users_at_once_and_a_deleted_user_leaves_their_teams() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let support = team(&app, acme.token(), pb::TeamKind::Team, "Support").await;
    let skills = team(&app, acme.token(), pb::TeamKind::SkillGroup, "French").await;
    let mut ids = Vec::new();
    for email in ["a@acme.test", "b@acme.test", "c@acme.test", "d@acme.test"] {
        ids.push(
            crate::users_support::pending(&app, acme.token(), email, &["REPORTS"])
                .await
                .id,
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    add_members(&app, acme.token(), &support.id, &refs, pb::TeamRole::Member)
        .await
        .expect("added");
    add_members(&app, acme.token(), &skills.id, &refs, pb::TeamRole::Member)
        .await
        .expect("added");

    let removed = remove_members(
        &app,
        acme.token(),
        &support.id,
        &[&ids[0], &ids[1], &uuid::Uuid::now_v7().to_string()],
    )
    .await
    .expect("removed");
    assert_eq!(removed, 2);
    assert_eq!(
        members_of(&app, acme.token(), &support.id)
            .await
            .into_iter()
            .map(|(email, _)| email)
            .collect::<Vec<_>>(),
        strings(&["c@acme.test", "d@acme.test"])
    );
    assert_eq!(
        members_of(&app, acme.token(), &skills.id).await.len(),
        4,
        "other teams keep them"
    );
    assert_eq!(
        remove_members(&app, acme.token(), &support.id, &[&ids[0]])
            .await
            .expect("removing a non-member"),
        0
    );
    expect_bad_fields(
        remove_members(&app, acme.token(), &support.id, &[]).await,
        &["user_ids"],
    );

    // Deleting a user takes them out of every team.
    delete(&app, acme.token(), &ids[2]).await.expect("deleted");
    assert_eq!(
        get_team(&app, acme.token(), &support.id)
            .await
            .expect("get")
            .member_count,
        1
    );
    assert_eq!(
        get_team(&app, acme.token(), &skills.id)
            .await
            .expect("get")
            .member_count,
        3
    );
}

// ------------------------------------------------------------------------------ searching users

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_filters_by_team_department_desk_skill_group_tag_and_role() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let sales = team(&app, acme.token(), pb::TeamKind::Team, "Sales").await;
    let finance = team(&app, acme.token(), pb::TeamKind::Department, "Finance").await;
    let desk = team(&app, acme.token(), pb::TeamKind::Desk, "Front desk").await;
    let spanish = team(&app, acme.token(), pb::TeamKind::SkillGroup, "Spanish").await;

    let mut tagged = new_user("tina@acme.test", &["PLATFORM_MEMBER", "INBOX_AGENT"]);
    tagged.tags = strings(&["vip", " night "]);
    let tina = create(&app, acme.token(), tagged)
        .await
        .expect("created")
        .user
        .expect("user");
    assert_eq!(
        tina.tags,
        strings(&["night", "vip"]),
        "tags are trimmed and sorted"
    );
    let ugo =
        crate::users_support::pending(&app, acme.token(), "ugo@acme.test", &["REPORTS"]).await;
    let vera =
        crate::users_support::pending(&app, acme.token(), "vera@acme.test", &["INBOX_MANAGER"])
            .await;
    crate::users_support::update(
        &app,
        acme.token(),
        &vera.id,
        pb::User {
            tags: strings(&["vip"]),
            ..Default::default()
        },
        &["tags"],
    )
    .await
    .expect("tagged");

    add_members(
        &app,
        acme.token(),
        &sales.id,
        &[&tina.id, &ugo.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("sales");
    add_members(
        &app,
        acme.token(),
        &finance.id,
        &[&ugo.id],
        pb::TeamRole::Manager,
    )
    .await
    .expect("finance");
    add_members(
        &app,
        acme.token(),
        &desk.id,
        &[&vera.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("desk");
    add_members(
        &app,
        acme.token(),
        &spanish.id,
        &[&tina.id, &vera.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("spanish");

    let token = acme.token();
    assert_eq!(
        emails(&app, token, by_team(&[&sales.id])).await,
        strings(&["tina@acme.test", "ugo@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_team(&[&finance.id])).await,
        strings(&["ugo@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_team(&[&desk.id])).await,
        strings(&["vera@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_team(&[&spanish.id])).await,
        strings(&["tina@acme.test", "vera@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_team(&[&finance.id, &desk.id])).await,
        strings(&["ugo@acme.test", "vera@acme.test"]),
        "any of the teams"
    );
    assert_eq!(
        emails(&app, token, by_tag(&["vip"])).await,
        strings(&["tina@acme.test", "vera@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_tag(&["night", "nope"])).await,
        strings(&["tina@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_role(&["inbox_agent"])).await,
        strings(&["tina@acme.test"])
    );
    assert_eq!(
        emails(&app, token, by_role(&["INBOX_MANAGER", "REPORTS"])).await,
        strings(&["ugo@acme.test", "vera@acme.test"])
    );
    let all_three = pb::UserFilter {
        team_ids: vec![spanish.id.clone()],
        tags: strings(&["vip"]),
        roles: roles(&["INBOX_MANAGER"]),
        ..Default::default()
    };
    assert_eq!(
        emails(&app, token, all_three).await,
        strings(&["vera@acme.test"]),
        "filters combine with AND"
    );
    assert_eq!(
        list(
            &app,
            token,
            pb::ListUsersRequest {
                filter: Some(by_team(&[&spanish.id])),
                include_total_size: true,
                page_size: 1,
                ..Default::default()
            }
        )
        .await
        .expect("count")
        .total_size,
        2
    );
    assert!(
        emails(&app, token, by_team(&[&uuid::Uuid::now_v7().to_string()]))
            .await
            .is_empty()
    );
    expect_bad_fields(
        list(
            &app,
            token,
            pb::ListUsersRequest {
                filter: Some(by_team(&["not-a-team"])),
                ..Default::default()
            },
        )
        .await,
        &["filter.team_ids[0]"],
    );
    // Users carry their memberships.
    assert_eq!(
        memberships(&get(&app, token, &ugo.id).await.expect("get")),
        vec![
            ("Finance".to_owned(), pb::TeamRole::Manager),
            ("Sales".to_owned(), pb::TeamRole::Member),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_actions_assign_and_unassign_teams_and_tags() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let sales = team(&app, acme.token(), pb::TeamKind::Team, "Sales").await;
    let desk = team(&app, acme.token(), pb::TeamKind::Desk, "Desk").await;
    let foreign = team(&app, globex.token(), pb::TeamKind::Team, "Foreign").await;
    let mut ids = Vec::new();
    for email in ["a@acme.test", "b@acme.test", "c@acme.test"] {
        ids.push(
            crate::users_support::pending(&app, acme.token(), email, &["REPORTS"])
                .await
                .id,
        );
    }
    add_members(
        &app,
        acme.token(),
        &sales.id,
        &[&ids[0]],
        pb::TeamRole::Manager,
    )
    .await
    .expect("a in sales");

    // ASSIGN_TEAMS: several teams with a role; existing memberships stay as they are.
    let assigned = bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&ids[0], &ids[1]]),
            action: pb::BulkAction::AssignTeams as i32,
            team_ids: vec![sales.id.clone(), desk.id.clone()],
            team_role: pb::TeamRole::Supervisor as i32,
            ..Default::default()
        },
    )
    .await
    .expect("assigned");
    assert_eq!(assigned.affected, 2);
    assert_eq!(
        members_of(&app, acme.token(), &sales.id).await,
        vec![
            ("a@acme.test".to_owned(), pb::TeamRole::Manager),
            ("b@acme.test".to_owned(), pb::TeamRole::Supervisor),
        ]
    );
    assert_eq!(
        members_of(&app, acme.token(), &desk.id).await,
        vec![
            ("a@acme.test".to_owned(), pb::TeamRole::Supervisor),
            ("b@acme.test".to_owned(), pb::TeamRole::Supervisor),
        ]
    );

    // A dry run changes nothing.
    let dry = bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&ids[2]]),
            action: pb::BulkAction::AssignTeams as i32,
            team_ids: vec![sales.id.clone()],
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.affected, 1);
    assert_eq!(members_of(&app, acme.token(), &sales.id).await.len(), 2);

    // UNASSIGN_TEAMS by filter: everyone in the desk leaves the sales team.
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: crate::users_support::by_filter(by_team(&[&desk.id])),
            action: pb::BulkAction::UnassignTeams as i32,
            team_ids: vec![sales.id.clone()],
            ..Default::default()
        },
    )
    .await
    .expect("unassigned");
    assert!(members_of(&app, acme.token(), &sales.id).await.is_empty());
    assert_eq!(members_of(&app, acme.token(), &desk.id).await.len(), 2);

    // Another account's team, an unknown team, or no team at all are refused.
    for team_ids in [
        vec![foreign.id.clone()],
        vec![uuid::Uuid::now_v7().to_string()],
    ] {
        expect_bad_fields(
            bulk(
                &app,
                acme.token(),
                pb::BulkUpdateUsersRequest {
                    selection: all_users(),
                    action: pb::BulkAction::AssignTeams as i32,
                    team_ids,
                    ..Default::default()
                },
            )
            .await,
            &["team_ids"],
        );
    }
    expect_bad_fields(
        bulk(
            &app,
            acme.token(),
            pb::BulkUpdateUsersRequest {
                selection: all_users(),
                action: pb::BulkAction::UnassignTeams as i32,
                ..Default::default()
            },
        )
        .await,
        &["team_ids"],
    );
    assert_eq!(
        get_team(&app, globex.token(), &foreign.id)
            .await
            .expect("get")
            .member_count,
        0
    );

    // ASSIGN_TAGS and UNASSIGN_TAGS.
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&ids[1], &ids[2]]),
            action: pb::BulkAction::AssignTags as i32,
            tags: strings(&["vip", "night"]),
            ..Default::default()
        },
    )
    .await
    .expect("tagged");
    // Assigning a tag a user has is harmless.
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&ids[2]]),
            action: pb::BulkAction::AssignTags as i32,
            tags: strings(&["vip"]),
            ..Default::default()
        },
    )
    .await
    .expect("tagged again");
    assert_eq!(
        emails(&app, acme.token(), by_tag(&["vip"])).await,
        strings(&["b@acme.test", "c@acme.test"])
    );
    assert_eq!(
        get(&app, acme.token(), &ids[2]).await.expect("get").tags,
        strings(&["night", "vip"])
    );
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: all_users(),
            action: pb::BulkAction::UnassignTags as i32,
            tags: strings(&["vip"]),
            ..Default::default()
        },
    )
    .await
    .expect("untagged");
    assert!(
        emails(&app, acme.token(), by_tag(&["vip"]))
            .await
            .is_empty()
    );
    assert_eq!(
        emails(&app, acme.token(), by_tag(&["night"])).await,
        strings(&["b@acme.test", "c@acme.test"])
    );
    expect_bad_fields(
        bulk(
            &app,
            acme.token(),
            pb::BulkUpdateUsersRequest {
                selection: all_users(),
                action: pb::BulkAction::AssignTags as i32,
                ..Default::default()
            },
        )
        .await,
        &["tags"],
    );
}

// ------------------------------------------------------------------------------ authorization

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_teams_needs_teams_read_and_changing_them_needs_teams_write() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let sales = team(&app, acme.token(), pb::TeamKind::Team, "Sales").await;
    let target =
        crate::users_support::pending(&app, acme.token(), "t@acme.test", &["ORDERS"]).await;
    add_members(
        &app,
        acme.token(),
        &sales.id,
        &[&target.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("added");

    let reports = member(&app, &acme, "reports@acme.test", &["REPORTS"]).await;
    let agent = member(&app, &acme, "agent@acme.test", &["INBOX_AGENT"]).await;
    let platform_member = member(&app, &acme, "pm@acme.test", &["PLATFORM_MEMBER"]).await;
    let platform_admin = member(&app, &acme, "pa@acme.test", &["PLATFORM_ADMIN"]).await;
    let admin = member(&app, &acme, "admin@acme.test", &["ADMIN"]).await;

    // Neither REPORTS nor INBOX_AGENT reads or changes teams.
    for token in [&reports.access_token, &agent.access_token] {
        expect_reason(
            list_teams(&app, token, Default::default()).await,
            Code::PermissionDenied,
            "MISSING_PERMISSION",
        );
        expect_code(
            get_team(&app, token, &sales.id).await,
            Code::PermissionDenied,
        );
        expect_code(
            list_members(&app, token, &sales.id, 10, "").await,
            Code::PermissionDenied,
        );
        expect_reason(
            create_team(&app, token, pb::TeamKind::Team, "Mine", "").await,
            Code::PermissionDenied,
            "MISSING_PERMISSION",
        );
        expect_code(
            add_members(&app, token, &sales.id, &[&target.id], pb::TeamRole::Manager).await,
            Code::PermissionDenied,
        );
        expect_code(
            delete_team(&app, token, &sales.id).await,
            Code::PermissionDenied,
        );
    }

    // PLATFORM_MEMBER reads teams but does not change them.
    let pm = &platform_member.access_token;
    assert_eq!(
        team_names(&app, pm, Default::default()).await,
        strings(&["Sales"])
    );
    assert_eq!(
        get_team(&app, pm, &sales.id).await.expect("get").name,
        "Sales"
    );
    assert_eq!(members_of(&app, pm, &sales.id).await.len(), 1);
    for result in [
        create_team(&app, pm, pb::TeamKind::Team, "Mine", "")
            .await
            .map(|_| ()),
        update_team(
            &app,
            pm,
            &sales.id,
            pb::Team {
                name: "Mine".to_owned(),
                ..Default::default()
            },
            &["name"],
        )
        .await
        .map(|_| ()),
        delete_team(&app, pm, &sales.id).await,
        add_members(&app, pm, &sales.id, &[&target.id], pb::TeamRole::Manager)
            .await
            .map(|_| ()),
        remove_members(&app, pm, &sales.id, &[&target.id])
            .await
            .map(|_| ()),
        change_member_role(&app, pm, &sales.id, &target.id, pb::TeamRole::Manager)
            .await
            .map(|_| ()),
    ] {
        expect_reason(result, Code::PermissionDenied, "MISSING_PERMISSION");
    }
    assert_eq!(
        members_of(&app, acme.token(), &sales.id).await,
        vec![("t@acme.test".to_owned(), pb::TeamRole::Member)],
        "refused calls changed nothing"
    );

    // PLATFORM_ADMIN and ADMIN manage teams from start to end.
    for (session, name) in [(&platform_admin, "Platform team"), (&admin, "Admin team")] {
        let token = &session.access_token;
        let made = team(&app, token, pb::TeamKind::SkillGroup, name).await;
        update_team(
            &app,
            token,
            &made.id,
            pb::Team {
                description: "managed".to_owned(),
                ..Default::default()
            },
            &["description"],
        )
        .await
        .expect("update");
        add_members(&app, token, &made.id, &[&target.id], pb::TeamRole::Member)
            .await
            .expect("add");
        change_member_role(&app, token, &made.id, &target.id, pb::TeamRole::Manager)
            .await
            .expect("change role");
        assert_eq!(
            members_of(&app, token, &made.id).await,
            vec![("t@acme.test".to_owned(), pb::TeamRole::Manager)]
        );
        remove_members(&app, token, &made.id, &[&target.id])
            .await
            .expect("remove");
        delete_team(&app, token, &made.id).await.expect("delete");
    }
    // A platform admin even adds an admin to a team: teams are not account roles.
    add_members(
        &app,
        &platform_admin.access_token,
        &sales.id,
        &[&admin.user_id],
        pb::TeamRole::Member,
    )
    .await
    .expect("add the admin");

    // Team mass actions also need users.write: a platform admin cannot apply them.
    expect_code(
        bulk(
            &app,
            &platform_admin.access_token,
            pb::BulkUpdateUsersRequest {
                selection: by_ids(&[&target.id]),
                action: pb::BulkAction::AssignTeams as i32,
                team_ids: vec![sales.id.clone()],
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );
    // Calls without a token are unauthenticated.
    let status = teams(&app)
        .list_teams(pb::ListTeamsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// What account A's owner sees of a space, a team in it, its members and one member's teams.
async fn snapshot(
    app: &TestApp,
    org: &Org,
    space: &str,
    team_id: &str,
    user_id: &str,
) -> (
    pb::Team,
    pb::Team,
    Vec<(String, pb::TeamRole)>,
    Vec<(String, pb::TeamRole)>,
) {
    (
        get_team(app, org.token(), space).await.expect("space"),
        get_team(app, org.token(), team_id).await.expect("team"),
        members_of(app, org.token(), team_id).await,
        memberships(&get(app, org.token(), user_id).await.expect("user")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_team_service_call_with_another_accounts_ids_answers_not_found_and_changes_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let globex = org(&app, "Globex", "gil@globex.test").await;
    let space = team(&app, acme.token(), pb::TeamKind::Space, "Acme space").await;
    let sales = create_team(
        &app,
        acme.token(),
        pb::TeamKind::Team,
        "Acme sales",
        &space.id,
    )
    .await
    .expect("in space");
    let bob =
        crate::users_support::pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    add_members(
        &app,
        acme.token(),
        &sales.id,
        &[&bob.id],
        pb::TeamRole::Member,
    )
    .await
    .expect("added");
    let own = team(&app, globex.token(), pb::TeamKind::Team, "Globex sales").await;
    let gus =
        crate::users_support::pending(&app, globex.token(), "gus@globex.test", &["REPORTS"]).await;
    let before = snapshot(&app, &acme, &space.id, &sales.id, &bob.id).await;

    let g = globex.token();
    expect_reason(
        get_team(&app, g, &sales.id).await,
        Code::NotFound,
        "NOT_FOUND",
    );
    expect_code(
        update_team(
            &app,
            g,
            &sales.id,
            pb::Team {
                name: "Hijacked".to_owned(),
                ..Default::default()
            },
            &["name"],
        )
        .await,
        Code::NotFound,
    );
    expect_code(delete_team(&app, g, &sales.id).await, Code::NotFound);
    expect_code(delete_team(&app, g, &space.id).await, Code::NotFound);
    expect_code(
        add_members(&app, g, &sales.id, &[&gus.id], pb::TeamRole::Member).await,
        Code::NotFound,
    );
    expect_code(
        remove_members(&app, g, &sales.id, &[&bob.id]).await,
        Code::NotFound,
    );
    expect_code(
        list_members(&app, g, &sales.id, 10, "").await,
        Code::NotFound,
    );
    expect_code(
        change_member_role(&app, g, &sales.id, &bob.id, pb::TeamRole::Manager).await,
        Code::NotFound,
    );
    // Another account's space is no space to join.
    expect_code(
        create_team(&app, g, pb::TeamKind::Team, "Squatter", &space.id).await,
        Code::NotFound,
    );
    expect_code(
        update_team(
            &app,
            g,
            &own.id,
            pb::Team {
                space_id: space.id.clone(),
                ..Default::default()
            },
            &["space_id"],
        )
        .await,
        Code::NotFound,
    );
    // Another account's users are NOT_FOUND skips of one's own team.
    let added = add_members(&app, g, &own.id, &[&bob.id, &gus.id], pb::TeamRole::Member)
        .await
        .expect("add");
    assert_eq!(added.added, 1);
    assert_eq!(
        added
            .skipped
            .iter()
            .map(|s| (s.user_id.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(bob.id.as_str(), "NOT_FOUND")]
    );
    assert_eq!(
        remove_members(&app, g, &own.id, &[&bob.id])
            .await
            .expect("remove"),
        0
    );
    expect_code(
        change_member_role(&app, g, &own.id, &bob.id, pb::TeamRole::Manager).await,
        Code::NotFound,
    );
    // Lists never show the other account's teams or members.
    assert_eq!(
        team_names(&app, g, Default::default()).await,
        strings(&["Globex sales"])
    );
    assert!(
        team_names(
            &app,
            g,
            pb::ListTeamsRequest {
                space_id: space.id.clone(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    assert!(
        team_names(
            &app,
            g,
            pb::ListTeamsRequest {
                query: "acme".to_owned(),
                ..Default::default()
            }
        )
        .await
        .is_empty()
    );
    assert!(emails(&app, g, by_team(&[&sales.id])).await.is_empty());
    assert_eq!(
        members_of(&app, g, &own.id)
            .await
            .into_iter()
            .map(|(email, _)| email)
            .collect::<Vec<_>>(),
        strings(&["gus@globex.test"])
    );

    assert_eq!(
        snapshot(&app, &acme, &space.id, &sales.id, &bob.id).await,
        before,
        "account A is unchanged"
    );
}
