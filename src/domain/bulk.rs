//! Mass actions of the Dialer page on selected users, on users matching a filter, or on all users.
//! Set-based: one statement per chunk of users, never one per user.

use std::collections::HashSet;

use serde_json::json;

use super::{
    App,
    policy::{self, Action},
    teams::membership_events,
};
use crate::{
    model::{
        ClientInfo, Error, EventType, NewActivity, NewEvent, Principal, Result, RoleScope, TeamId,
        TeamRole, UserFilter, UserId, UserStatus,
    },
    store::{self, users::CHUNK},
};

/// Which users a mass action applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<UserId>),
    Filter(UserFilter),
    All,
}

/// A mass action.
#[derive(Debug, Clone)]
pub enum BulkAction {
    Activate,
    Deactivate,
    Delete,
    AssignRoles(Vec<String>),
    UnassignRoles(Vec<String>),
    /// Join these teams (desks, skill groups ...) with a role.
    AssignTeams(Vec<TeamId>, TeamRole),
    UnassignTeams(Vec<TeamId>),
    AssignTags(Vec<String>),
    UnassignTags(Vec<String>),
}

impl BulkAction {
    fn name(&self) -> &'static str {
        match self {
            Self::Activate => "users.bulk_activated",
            Self::Deactivate => "users.bulk_deactivated",
            Self::Delete => "users.bulk_deleted",
            Self::AssignRoles(_) => "users.bulk_roles_assigned",
            Self::UnassignRoles(_) => "users.bulk_roles_unassigned",
            Self::AssignTeams(..) => "users.bulk_teams_assigned",
            Self::UnassignTeams(_) => "users.bulk_teams_unassigned",
            Self::AssignTags(_) => "users.bulk_tags_assigned",
            Self::UnassignTags(_) => "users.bulk_tags_unassigned",
        }
    }

    /// For a status change, the statuses it changes: INACTIVE or LOCKED users are activated
    /// (a user pending confirmation has to confirm), and every user not INACTIVE deactivated.
    fn changes_status_from(&self) -> Option<Vec<UserStatus>> {
        let from =
            |keep: fn(&UserStatus) -> bool| UserStatus::ALL.into_iter().filter(keep).collect();
        match self {
            Self::Activate => Some(from(|s| {
                matches!(s, UserStatus::Inactive | UserStatus::Locked)
            })),
            Self::Deactivate => Some(from(|s| *s != UserStatus::Inactive)),
            _ => None,
        }
    }
}

/// A mass action request.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub selection: Selection,
    pub action: BulkAction,
    pub dry_run: bool,
}

/// A user a rule protected from the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub user_id: UserId,
    pub reason: &'static str,
    pub message: String,
}

/// What a mass action did (or would do).
#[derive(Debug, Clone, Default)]
pub struct BulkOutcome {
    pub matched: u64,
    pub affected: u64,
    pub skipped: Vec<Skipped>,
}

impl App {
    /// Applies a mass action; users a rule protects are skipped with a reason.
    pub async fn bulk_update_users(
        &self,
        principal: &Principal,
        request: BulkRequest,
        client: &ClientInfo,
    ) -> Result<BulkOutcome> {
        policy::authorize(principal, Action::BulkUpdateUsers)?;
        match &request.action {
            BulkAction::Delete => policy::authorize(principal, Action::BulkDeleteUsers)?,
            BulkAction::AssignRoles(roles) | BulkAction::UnassignRoles(roles) => {
                let defs = self
                    .resolve_roles(principal.tenant_id, roles, "roles")
                    .await?;
                if defs.iter().any(|role| role.scope != RoleScope::Account) {
                    return Err(Error::invalid(
                        "roles",
                        "mass actions assign account roles; use ChangeUserRole for Platform and Inbox roles",
                    ));
                }
                match &request.action {
                    BulkAction::AssignRoles(_) => {
                        self.authorize_roles(principal, roles, &[]).await?
                    }
                    _ => self.authorize_roles(principal, &[], roles).await?,
                }
            }
            BulkAction::AssignTeams(teams, _) | BulkAction::UnassignTeams(teams) => {
                policy::authorize(principal, Action::ManageTeams)?;
                let existing =
                    store::teams::existing(self.store.db(), principal.tenant_id, teams).await?;
                if let Some(missing) = teams.iter().find(|team| !existing.contains(team)) {
                    return Err(Error::invalid(
                        "team_ids",
                        format!("no team {missing} in this account"),
                    ));
                }
            }
            _ => {}
        }
        let tenant_id = principal.tenant_id;
        let db = self.store.db();
        let mut skipped = Vec::new();
        let ids: Vec<UserId> = match &request.selection {
            Selection::Ids(ids) => {
                let mut unique: Vec<UserId> = ids.clone();
                unique.sort();
                unique.dedup();
                let mut found = Vec::with_capacity(unique.len());
                for chunk in unique.chunks(CHUNK) {
                    let filter = UserFilter {
                        ids: Some(chunk.to_vec()),
                        ..Default::default()
                    };
                    found.extend(store::users::select_ids(db, tenant_id, &filter).await?);
                }
                let present: HashSet<UserId> = found.iter().copied().collect();
                // Another account's user is simply not found, like every other RPC says.
                skipped.extend(unique.iter().filter(|id| !present.contains(id)).map(|id| {
                    Skipped {
                        user_id: *id,
                        reason: "NOT_FOUND",
                        message: "no such user in this account".into(),
                    }
                }));
                found
            }
            Selection::Filter(filter) => {
                self.check_role_keys(tenant_id, &filter.roles, "filter.roles")
                    .await?;
                store::users::select_ids(db, tenant_id, filter).await?
            }
            Selection::All => {
                store::users::select_ids(db, tenant_id, &UserFilter::default()).await?
            }
        };
        let matched = ids.len() as u64;

        let owner = store::tenants::get(db, tenant_id)
            .await?
            .and_then(|t| t.owner_user_id);
        let admins = if principal.is_owner {
            HashSet::new()
        } else {
            // Admin, and custom roles with admin permissions, protect their holders from admins.
            store::users::admin_grade_holders(db, tenant_id, &ids).await?
        };
        let ends_access = matches!(request.action, BulkAction::Deactivate | BulkAction::Delete);
        let mut targets = Vec::with_capacity(ids.len());
        for id in ids {
            let target = policy::MassTarget {
                is_owner: Some(id) == owner,
                is_admin: admins.contains(&id),
                is_self: id == principal.user_id,
            };
            let protection = policy::mass_action_protection(principal, target, ends_access);
            match protection {
                Some((reason, message)) => skipped.push(Skipped {
                    user_id: id,
                    reason,
                    message: message.into(),
                }),
                None => targets.push(id),
            }
        }
        // A status change passes over the users already in the new status, which the statement
        // itself tells (reading every selected user's status first cost more than the change).
        let changes_from = request.action.changes_status_from();
        let mut affected = targets.len() as u64;
        if request.dry_run || targets.is_empty() {
            if let Some(from) = &changes_from
                && !targets.is_empty()
            {
                affected = store::users::count_in_statuses(db, tenant_id, &targets, from).await?;
            }
            return Ok(BulkOutcome {
                matched,
                affected,
                skipped,
            });
        }

        let now = self.clock.now();
        let tx = self.change().await?;
        let mut revoked = Vec::new();
        let actor = Some(principal.user_id);
        let each = |event_type: EventType, users: &[UserId], fields: serde_json::Value| {
            users
                .iter()
                .map(|user| NewEvent::on_user(tenant_id, actor, event_type, *user, fields.clone()))
                .collect::<Vec<_>>()
        };
        match &request.action {
            BulkAction::Activate => {
                // Users who never confirmed their email go back to pending, not to active.
                let changed = store::users::reactivate(&tx, tenant_id, &targets, now).await?;
                affected = changed.len() as u64;
                tx.emit(each(
                    EventType::UserReactivated,
                    &changed,
                    json!({ "bulk": true }),
                ));
            }
            BulkAction::Deactivate => {
                revoked = store::users::deactivate(&tx, tenant_id, &targets, now).await?;
                affected = revoked.len() as u64;
                let deactivated: Vec<UserId> = revoked.iter().map(|(id, _)| *id).collect();
                tx.emit(each(
                    EventType::UserDeactivated,
                    &deactivated,
                    json!({ "bulk": true }),
                ));
                store::sessions::revoke_for_users(
                    &tx,
                    tenant_id,
                    &deactivated,
                    "user_deactivated",
                    now,
                )
                .await?;
            }
            BulkAction::Delete => {
                // One record per user, so lead-owning services can unassign each user's leads.
                let records: Vec<NewActivity> = targets
                    .iter()
                    .map(|id| {
                        NewActivity::on_user(
                            tenant_id,
                            Some(principal.user_id),
                            "user.deleted",
                            *id,
                            client,
                        )
                        .with_details(json!({ "unassign_leads": true, "bulk": true }))
                    })
                    .collect();
                store::activity::insert_many(&tx, &records, now).await?;
                tx.emit(each(
                    EventType::UserDeleted,
                    &targets,
                    json!({ "unassign_leads": true, "bulk": true }),
                ));
                store::users::delete(&tx, tenant_id, &targets).await?;
                revoked = targets.iter().map(|id| (*id, i64::MAX)).collect();
            }
            BulkAction::AssignRoles(roles) => {
                store::users::add_labels(
                    &tx,
                    store::users::Label::Role,
                    tenant_id,
                    &targets,
                    roles,
                )
                .await?;
                store::users::mark_roles_changed(&tx, tenant_id, &targets, now).await?;
                tx.emit(each(
                    EventType::UserRolesChanged,
                    &targets,
                    json!({ "assigned": roles, "bulk": true }),
                ));
            }
            BulkAction::UnassignRoles(roles) => {
                store::users::remove_labels(
                    &tx,
                    store::users::Label::Role,
                    tenant_id,
                    &targets,
                    roles,
                )
                .await?;
                store::users::mark_roles_changed(&tx, tenant_id, &targets, now).await?;
                tx.emit(each(
                    EventType::UserRolesChanged,
                    &targets,
                    json!({ "unassigned": roles, "bulk": true }),
                ));
            }
            BulkAction::AssignTeams(teams, role) => {
                for team in teams {
                    let members =
                        store::teams::members_among(&tx, tenant_id, *team, &targets).await?;
                    let joining: Vec<UserId> = targets
                        .iter()
                        .filter(|id| !members.contains(id))
                        .copied()
                        .collect();
                    store::teams::add_members(&tx, tenant_id, *team, &joining, *role, now).await?;
                    tx.emit(membership_events(
                        principal,
                        EventType::TeamMemberAdded,
                        *team,
                        &joining,
                        json!({ "role": role.as_str(), "bulk": true }),
                    ));
                }
            }
            BulkAction::UnassignTeams(teams) => {
                for team in teams {
                    let removed =
                        store::teams::remove_members(&tx, tenant_id, *team, &targets).await?;
                    tx.emit(membership_events(
                        principal,
                        EventType::TeamMemberRemoved,
                        *team,
                        &removed,
                        json!({ "bulk": true }),
                    ));
                }
            }
            BulkAction::AssignTags(tags) => {
                store::users::add_labels(&tx, store::users::Label::Tag, tenant_id, &targets, tags)
                    .await?;
                tx.emit(each(
                    EventType::UserUpdated,
                    &targets,
                    json!({ "fields": ["tags"], "bulk": true }),
                ));
            }
            BulkAction::UnassignTags(tags) => {
                store::users::remove_labels(
                    &tx,
                    store::users::Label::Tag,
                    tenant_id,
                    &targets,
                    tags,
                )
                .await?;
                tx.emit(each(
                    EventType::UserUpdated,
                    &targets,
                    json!({ "fields": ["tags"], "bulk": true }),
                ));
            }
        }
        if affected == 0 {
            // Everyone was in the new status already: nothing to record (the transaction goes).
            return Ok(BulkOutcome {
                matched,
                affected,
                skipped,
            });
        }
        let roles = match &request.action {
            BulkAction::AssignRoles(roles) | BulkAction::UnassignRoles(roles) => roles.clone(),
            _ => Vec::new(),
        };
        self.record(
            &tx,
            NewActivity {
                tenant_id,
                actor: Some(principal.user_id),
                action: request.action.name(),
                target_type: Some("users"),
                target_id: None,
                client: client.clone(),
                details: json!({ "matched": matched, "affected": affected, "skipped": skipped.len(), "roles": roles }),
            },
        )
        .await?;
        tx.revoke_users(revoked, self.clock.now());
        self.commit(tx).await?;
        if matches!(
            request.action,
            BulkAction::AssignRoles(_) | BulkAction::UnassignRoles(_)
        ) {
            self.regrant(tenant_id, &targets).await?;
        }
        Ok(BulkOutcome {
            matched,
            affected,
            skipped,
        })
    }
}
