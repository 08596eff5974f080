//! Who may do what to whom in UserService: the authorization matrix (actor x target x action)
//! of the product pages, and tenant isolation for every RPC.

use std::fmt::Write as _;

use roster::api::pb;
use tonic::{Code, Status};

use crate::harness::{PASSWORD, TestApp, expect_code, spawn_app};
use crate::users_support::{
    ImportOptions, Org, Session, accepted, all_users, bulk, by_ids, count, create, deactivate,
    delete, get, import, list, list_all, login, member, new_user, org, pending, query, reactivate,
    resend, reset_password, roles, skips, transfer, transfer_keeping, update,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Owner,
    Admin,
    TechConfig,
    Reports,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Owner,
    AnotherAdmin,
    PlainUser,
    Itself,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Get,
    UpdateFirstName,
    UpdateTimezone,
    AddReportsRole,
    UpdateSip,
    UpdateCallerId,
    Deactivate,
    Delete,
    ResetPassword,
}

const ACTORS: [Actor; 4] = [
    Actor::Owner,
    Actor::Admin,
    Actor::TechConfig,
    Actor::Reports,
];
const TARGETS: [Target; 4] = [
    Target::Owner,
    Target::AnotherAdmin,
    Target::PlainUser,
    Target::Itself,
];
const ACTS: [Act; 9] = [
    Act::Get,
    Act::UpdateFirstName,
    Act::UpdateTimezone,
    Act::AddReportsRole,
    Act::UpdateSip,
    Act::UpdateCallerId,
    Act::Deactivate,
    Act::Delete,
    Act::ResetPassword,
];

/// The rules of the Portal and Dialer pages (DESIGN.md, "Tenancy and authorization"):
/// - everyone reads themself and edits their own names, time zone and language;
/// - nobody deletes or deactivates themself;
/// - the owner may do anything else to anyone;
/// - admins may do everything to plain users and to themselves, and to the owner and other
///   admins nothing but read them (the Users page lists everyone);
/// - Tech. Configuration changes SIP and caller-ID settings of plain users (themselves included)
///   and reads every user;
/// - other roles have no say over other users.
fn allowed(actor: Actor, target: Target, act: Act) -> bool {
    use Act::*;
    let target = if actor == Actor::Owner && target == Target::Owner {
        Target::Itself
    } else {
        target
    };
    let telephony = matches!(act, UpdateSip | UpdateCallerId);
    if target == Target::Itself {
        return match act {
            Get | UpdateFirstName | UpdateTimezone => true,
            Deactivate | Delete => false,
            AddReportsRole | ResetPassword => matches!(actor, Actor::Owner | Actor::Admin),
            UpdateSip | UpdateCallerId => actor != Actor::Reports,
        };
    }
    match actor {
        Actor::Owner => true,
        Actor::Admin => target == Target::PlainUser || act == Get,
        // It edits users' SIP and caller-ID settings, so it reads every user, as admins do.
        Actor::TechConfig => (target == Target::PlainUser && telephony) || act == Get,
        Actor::Reports => false,
    }
}

/// The four actors of one account, with their current passwords and sessions.
struct Cast {
    acme: Org,
    sessions: Vec<(Actor, Session)>,
    /// Names, roles and profile of each actor as first created, to restore after self-edits.
    originals: Vec<(Actor, pb::User)>,
}

impl Cast {
    fn session(&self, actor: Actor) -> &Session {
        &self
            .sessions
            .iter()
            .find(|(a, _)| *a == actor)
            .expect("every actor has a session")
            .1
    }

    fn session_mut(&mut self, actor: Actor) -> &mut Session {
        &mut self
            .sessions
            .iter_mut()
            .find(|(a, _)| *a == actor)
            .expect("every actor has a session")
            .1
    }

    fn owner_token(&self) -> String {
        self.session(Actor::Owner).access_token.clone()
    }

    /// Logs in again every actor whose token a self-edit revoked.
    async fn renew_refused_sessions(&mut self, app: &TestApp) {
        for index in 0..self.sessions.len() {
            let session = self.sessions[index].1.clone();
            if !accepted(app, &session.access_token).await {
                self.sessions[index].1 =
                    login(app, &self.acme, &session.email, &session.password).await;
            }
        }
    }

    /// Puts an actor's names, roles and Dialer profile back as they were.
    async fn restore(&mut self, app: &TestApp, actor: Actor) {
        self.renew_refused_sessions(app).await;
        let original = self
            .originals
            .iter()
            .find(|(a, _)| *a == actor)
            .expect("original")
            .1
            .clone();
        let owner = self.owner_token();
        let current = get(app, &owner, &original.id).await.expect("get actor");
        if current.first_name != original.first_name
            || current.roles != original.roles
            || current.dialer_profile != original.dialer_profile
        {
            update(
                app,
                &owner,
                &original.id,
                original.clone(),
                &["first_name", "roles", "dialer_profile"],
            )
            .await
            .unwrap_or_else(|err| panic!("restore {actor:?}: {err:?}"));
        }
        self.renew_refused_sessions(app).await;
    }
}

async fn cast(app: &TestApp) -> Cast {
    let acme = org(app, "Acme", "ann@acme.test").await;
    let mut sessions = vec![(Actor::Owner, acme.owner.clone())];
    for (actor, email, role) in [
        (Actor::Admin, "adele@acme.test", "ADMIN"),
        (Actor::TechConfig, "ted@acme.test", "TECH_CONFIG"),
        (Actor::Reports, "rita@acme.test", "REPORTS"),
    ] {
        sessions.push((actor, member(app, &acme, email, &[role]).await));
    }
    let mut originals = Vec::new();
    for (actor, session) in &sessions {
        let user = get(app, acme.token(), &session.user_id)
            .await
            .expect("get actor");
        originals.push((*actor, user));
    }
    Cast {
        acme,
        sessions,
        originals,
    }
}

/// What a call did: allowed (with what to check), or refused with a status.
enum Outcome {
    Done(Option<String>),
    Refused(Status),
}

async fn perform(app: &TestApp, token: &str, target: &str, act: Act) -> Outcome {
    let profile = |profile: pb::DialerProfile| pb::User {
        dialer_profile: Some(profile),
        ..Default::default()
    };
    let result: Result<Option<String>, Status> = match act {
        Act::Get => get(app, token, target).await.map(|_| None),
        Act::UpdateFirstName => update(
            app,
            token,
            target,
            pb::User {
                first_name: "Renamed".to_owned(),
                ..Default::default()
            },
            &["first_name"],
        )
        .await
        .map(|_| None),
        Act::UpdateTimezone => update(
            app,
            token,
            target,
            profile(pb::DialerProfile {
                timezone: "Asia/Tokyo".to_owned(),
                ..Default::default()
            }),
            &["dialer_profile.timezone"],
        )
        .await
        .map(|_| None),
        Act::AddReportsRole => {
            let current = match get(app, token, target).await {
                Ok(user) => user.roles,
                // Someone who may not read the target still asks for a plausible change.
                Err(_) => roles(&["ORDERS"]),
            };
            let mut wanted = current;
            wanted.push("REPORTS".to_owned());
            update(
                app,
                token,
                target,
                pb::User {
                    roles: wanted,
                    ..Default::default()
                },
                &["roles"],
            )
            .await
            .map(|_| None)
        }
        Act::UpdateSip => update(
            app,
            token,
            target,
            profile(pb::DialerProfile {
                sip: Some(pb::SipSettings {
                    option: Some(pb::sip_settings::Option::Webrtc(pb::WebRtc {})),
                }),
                ..Default::default()
            }),
            &["dialer_profile.sip"],
        )
        .await
        .map(|_| None),
        Act::UpdateCallerId => update(
            app,
            token,
            target,
            profile(pb::DialerProfile {
                caller_id_number: "+14155550123".to_owned(),
                caller_id_name: "Acme".to_owned(),
                ..Default::default()
            }),
            &[
                "dialer_profile.caller_id_number",
                "dialer_profile.caller_id_name",
            ],
        )
        .await
        .map(|_| None),
        Act::Deactivate => deactivate(app, token, target).await.map(|_| None),
        Act::Delete => delete(app, token, target).await.map(|_| None),
        Act::ResetPassword => reset_password(app, token, target, false).await.map(Some),
    };
    match result {
        Ok(extra) => Outcome::Done(extra),
        Err(status) => Outcome::Refused(status),
    }
}

/// Checks, as the owner, that an allowed action had its effect.
async fn effect_visible(app: &TestApp, owner: &str, target: &str, act: Act) -> Result<(), String> {
    if act == Act::Delete {
        return match get(app, owner, target).await {
            Err(status) if status.code() == Code::NotFound => Ok(()),
            other => Err(format!("still there after delete: {other:?}")),
        };
    }
    let user = get(app, owner, target)
        .await
        .map_err(|err| format!("get after {act:?}: {err:?}"))?;
    let profile = user.dialer_profile.clone().unwrap_or_default();
    let ok = match act {
        Act::Get | Act::ResetPassword | Act::Delete => true,
        Act::UpdateFirstName => user.first_name == "Renamed",
        Act::UpdateTimezone => profile.timezone == "Asia/Tokyo",
        Act::AddReportsRole => user.roles.iter().any(|r| r == "REPORTS"),
        Act::UpdateSip => profile.sip.is_some(),
        Act::UpdateCallerId => profile.caller_id_number == "+14155550123",
        Act::Deactivate => user.status == pb::UserStatus::Inactive as i32,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{act:?} left no trace: {user:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_of_actors_targets_and_actions_holds() {
    let app = spawn_app().await;
    let mut cast = cast(&app).await;
    let mut failures = String::new();
    let mut cases = 0;
    let mut fresh = 0;
    for actor in ACTORS {
        for target in TARGETS {
            for act in ACTS {
                cases += 1;
                let owner = cast.owner_token();
                let target_id = match target {
                    Target::Owner => cast.session(Actor::Owner).user_id.clone(),
                    Target::Itself => cast.session(actor).user_id.clone(),
                    Target::AnotherAdmin | Target::PlainUser => {
                        fresh += 1;
                        let role = if target == Target::AnotherAdmin {
                            "ADMIN"
                        } else {
                            "ORDERS"
                        };
                        pending(&app, &owner, &format!("t{fresh}@acme.test"), &[role])
                            .await
                            .id
                    }
                };
                let before = get(&app, &owner, &target_id).await.expect("target exists");
                let token = cast.session(actor).access_token.clone();
                let expected = allowed(actor, target, act);
                let case = format!("{actor:?} -> {target:?} : {act:?}");
                match perform(&app, &token, &target_id, act).await {
                    Outcome::Done(temporary) => {
                        let persistent = matches!(target, Target::Itself)
                            || (target == Target::Owner && actor == Actor::Owner);
                        if persistent && let Some(password) = temporary {
                            // The actor reset their own password: their sessions ended.
                            cast.session_mut(actor).password = password;
                            cast.renew_refused_sessions(&app).await;
                        }
                        if !expected {
                            let _ = writeln!(failures, "{case}: allowed, expected a refusal");
                        } else if let Err(why) =
                            effect_visible(&app, &cast.owner_token(), &target_id, act).await
                        {
                            let _ = writeln!(failures, "{case}: {why}");
                        }
                        if persistent {
                            cast.restore(&app, actor).await;
                        }
                    }
                    Outcome::Refused(status) => {
                        if expected {
                            let _ = writeln!(failures, "{case}: refused with {status:?}");
                        } else if status.code() != Code::PermissionDenied {
                            let _ = writeln!(
                                failures,
                                "{case}: refused with {:?}, expected PERMISSION_DENIED",
                                status.code()
                            );
                        } else {
                            // A refusal changes nothing.
                            let after = get(&app, &cast.owner_token(), &target_id)
                                .await
                                .expect("target still exists");
                            if after != before {
                                let _ = writeln!(failures, "{case}: refused but changed the user");
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, 4 * 4 * 9);
    assert!(failures.is_empty(), "matrix mismatches:\n{failures}");
    // The actors are intact at the end.
    for actor in ACTORS {
        assert!(accepted(&app, &cast.session(actor).access_token).await);
    }
}

// ------------------------------------------------------------------------ Tenant isolation

/// A's users as A's owner sees them, for comparing before and after.
async fn snapshot(app: &TestApp, owner: &str) -> Vec<pb::User> {
    list_all(app, owner, pb::UserFilter::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_service_call_with_another_accounts_ids_answers_not_found() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let active = member(&app, &acme, "al@acme.test", &["REPORTS"]).await;
    let mut invited = new_user("ivy@acme.test", &["REPORTS"]);
    invited.password = String::new();
    let invited = create(&app, acme.token(), invited)
        .await
        .expect("invite")
        .user
        .expect("user");
    let inactive = member(&app, &acme, "ina@acme.test", &["ORDERS"]).await;
    deactivate(&app, acme.token(), &inactive.user_id)
        .await
        .expect("deactivate");

    let globex = org(&app, "Globex", "gil@globex.test").await;
    let their_admin = member(&app, &globex, "gina@globex.test", &["ADMIN"]).await;
    let before = snapshot(&app, acme.token()).await;

    let acme_ids = [
        acme.owner.user_id.as_str(),
        active.user_id.as_str(),
        invited.id.as_str(),
        inactive.user_id.as_str(),
    ];
    // Globex's owner holds every permission and its admin most: neither reaches into Acme.
    for token in [globex.token(), their_admin.access_token.as_str()] {
        for id in acme_ids {
            expect_code(get(&app, token, id).await, Code::NotFound);
            expect_code(
                update(
                    &app,
                    token,
                    id,
                    pb::User {
                        first_name: "Hacked".to_owned(),
                        roles: roles(&["FINANCE"]),
                        ..Default::default()
                    },
                    &["first_name", "roles"],
                )
                .await,
                Code::NotFound,
            );
            expect_code(delete(&app, token, id).await, Code::NotFound);
            expect_code(deactivate(&app, token, id).await, Code::NotFound);
            expect_code(reactivate(&app, token, id).await, Code::NotFound);
            expect_code(resend(&app, token, id, true).await, Code::NotFound);
            expect_code(reset_password(&app, token, id, false).await, Code::NotFound);
        }
    }
    for id in acme_ids {
        expect_code(
            transfer_keeping(&app, globex.token(), id, &["REPORTS"]).await,
            Code::NotFound,
        );
        expect_code(
            transfer(
                &app,
                globex.token(),
                id,
                Some(pb::transfer_ownership_request::FormerOwner::DeleteFormerOwner(true)),
            )
            .await,
            Code::NotFound,
        );
    }

    // Listing and searching never show Acme's users.
    for filter in [
        pb::UserFilter::default(),
        query("acme", pb::MatchMode::Contains),
        query("al@acme.test", pb::MatchMode::Exact),
        pb::UserFilter {
            statuses: vec![
                pb::UserStatus::PendingConfirmation as i32,
                pb::UserStatus::Inactive as i32,
            ],
            ..Default::default()
        },
    ] {
        for user in list_all(&app, globex.token(), filter.clone()).await {
            assert_eq!(user.tenant_id, globex.account.tenant_id, "{filter:?}");
        }
    }
    assert_eq!(count(&app, globex.token()).await, 2);
    let page = list(
        &app,
        globex.token(),
        pb::ListUsersRequest {
            filter: Some(query("acme", pb::MatchMode::Contains)),
            include_total_size: true,
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(page.users.is_empty());
    assert_eq!(page.total_size, 0);

    // Mass actions skip Acme's ids as unknown, whatever the action.
    for action in [
        pb::BulkAction::Deactivate,
        pb::BulkAction::Delete,
        pb::BulkAction::Activate,
        pb::BulkAction::AssignRoles,
    ] {
        let response = bulk(
            &app,
            globex.token(),
            pb::BulkUpdateUsersRequest {
                selection: by_ids(&acme_ids),
                action: action as i32,
                roles: roles(&["FINANCE"]),
                dry_run: false,
                ..Default::default()
            },
        )
        .await
        .expect("bulk");
        assert_eq!((response.matched, response.affected), (0, 0));
        assert!(skips(&response).iter().all(|(_, r)| r == "NOT_FOUND"));
        assert_eq!(response.skipped.len(), 4);
    }
    let everyone = bulk(
        &app,
        globex.token(),
        pb::BulkUpdateUsersRequest {
            selection: all_users(),
            action: pb::BulkAction::Deactivate as i32,
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("bulk");
    assert_eq!(everyone.matched, 2, "Globex has two users");

    // Acme's addresses are free in Globex: emails are unique per account only.
    let report = import(
        &app,
        globex.token(),
        "email,roles\nal@acme.test,REPORTS\nivy@acme.test,ORDERS\n",
        10,
        ImportOptions {
            suppress_emails: true,
            ..Default::default()
        },
    )
    .await
    .expect("import");
    assert_eq!((report.created, report.invalid), (2, 0));

    // Acme is exactly as it was, and its users still work.
    assert_eq!(snapshot(&app, acme.token()).await, before);
    assert!(accepted(&app, &active.access_token).await);
    assert!(accepted(&app, acme.token()).await);
    login(&app, &acme, "al@acme.test", PASSWORD).await;
    let me = app.who_am_i(acme.token()).await.expect("WhoAmI");
    assert_eq!(me.tenant.expect("tenant").owner_user_id, acme.owner.user_id);
}
