//! Teams, departments, desks, skill groups and spaces, and their members.

use serde_json::json;

use super::{
    App,
    policy::{self, Action},
};
use crate::{
    model::{
        ClientInfo, Error, EventType, NewActivity, NewEvent, Principal, Result, Team, TeamFilter,
        TeamId, TeamKind, TeamRole, User, UserId,
    },
    store,
};

/// A team to create.
#[derive(Debug, Clone)]
pub struct NewTeam {
    pub kind: TeamKind,
    pub name: String,
    pub description: String,
    /// The space the team belongs to, if any.
    pub space_id: Option<TeamId>,
}

/// Changes to a team; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct TeamPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` takes the team out of its space.
    pub space_id: Option<Option<TeamId>>,
}

/// Result of adding members.
#[derive(Debug, Clone, Default)]
pub struct Added {
    pub added: u64,
    /// (user, reason): NOT_FOUND or ALREADY_MEMBER.
    pub skipped: Vec<(UserId, &'static str)>,
}

/// Checks a team name.
pub fn team_name(field: &str, text: &str) -> Result<String> {
    let name = text.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be 1 to 200 printable characters",
        ));
    }
    Ok(name.to_owned())
}

/// Checks a team description.
pub fn team_description(field: &str, text: &str) -> Result<String> {
    if text.chars().count() > 1000 {
        return Err(Error::invalid(field, "must be at most 1000 characters"));
    }
    Ok(text.trim().to_owned())
}

/// One event per user whose membership of `team` changed; `fields` gets the team's id.
pub(crate) fn membership_events(
    principal: &Principal,
    event_type: EventType,
    team: TeamId,
    users: &[UserId],
    mut fields: serde_json::Value,
) -> Vec<NewEvent> {
    if let Some(map) = fields.as_object_mut() {
        map.insert("team_id".into(), json!(team.to_string()));
    }
    users
        .iter()
        .map(|user| {
            NewEvent::on_user(
                principal.tenant_id,
                Some(principal.user_id),
                event_type,
                *user,
                fields.clone(),
            )
        })
        .collect()
}

fn team_activity(
    principal: &Principal,
    action: &'static str,
    team: TeamId,
    client: &ClientInfo,
    details: serde_json::Value,
) -> NewActivity {
    NewActivity {
        tenant_id: principal.tenant_id,
        actor: Some(principal.user_id),
        action,
        target_type: Some("team"),
        target_id: Some(team.0),
        client: client.clone(),
        details,
    }
}

impl App {
    async fn team(&self, principal: &Principal, id: TeamId) -> Result<Team> {
        store::teams::get(self.store.db(), principal.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("team"))
    }

    async fn check_space(
        &self,
        principal: &Principal,
        space: Option<TeamId>,
        field: &str,
    ) -> Result<()> {
        if let Some(space) = space {
            let team = store::teams::get(self.store.db(), principal.tenant_id, space).await?;
            match team {
                Some(team) if team.kind == TeamKind::Space => {}
                Some(_) => return Err(Error::invalid(field, "is not a space")),
                // Another account's space is as unknown as one that never existed.
                None => return Err(Error::NotFound("space")),
            }
        }
        Ok(())
    }

    /// Creates a team.
    pub async fn create_team(
        &self,
        principal: &Principal,
        new: NewTeam,
        client: &ClientInfo,
    ) -> Result<Team> {
        policy::authorize(principal, Action::ManageTeams)?;
        let NewTeam {
            kind,
            name,
            description,
            space_id,
        } = new;
        if kind == TeamKind::Space && space_id.is_some() {
            return Err(Error::invalid(
                "space_id",
                "a space cannot belong to another space",
            ));
        }
        self.check_space(principal, space_id, "space_id").await?;
        let now = self.clock.now();
        let team = Team {
            id: TeamId::new(),
            tenant_id: principal.tenant_id,
            kind,
            name,
            description,
            space_id,
            member_count: 0,
            created_at: now,
            updated_at: now,
        };
        let tx = self.change().await?;
        store::teams::insert(&tx, &team)
            .await
            .map_err(|err| match err {
                Error::AlreadyExists(_) => {
                    Error::already_exists("name", "a group of this kind with this name exists")
                }
                other => other,
            })?;
        self.record(
            &tx,
            team_activity(
                principal,
                "team.created",
                team.id,
                client,
                json!({ "name": team.name, "kind": kind.as_str() }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(team)
    }

    /// One team.
    pub async fn get_team(&self, principal: &Principal, id: TeamId) -> Result<Team> {
        policy::authorize(principal, Action::ReadTeams)?;
        self.team(principal, id).await
    }

    /// A page of teams.
    pub async fn list_teams(
        &self,
        principal: &Principal,
        filter: &TeamFilter,
        after: Option<TeamId>,
        page_size: u64,
    ) -> Result<(Vec<Team>, bool)> {
        policy::authorize(principal, Action::ReadTeams)?;
        store::teams::list(
            self.store.db(),
            principal.tenant_id,
            filter,
            after,
            page_size,
        )
        .await
    }

    /// Changes a team.
    pub async fn update_team(
        &self,
        principal: &Principal,
        id: TeamId,
        patch: TeamPatch,
        client: &ClientInfo,
    ) -> Result<Team> {
        policy::authorize(principal, Action::ManageTeams)?;
        let mut team = self.team(principal, id).await?;
        if let Some(name) = patch.name {
            team.name = name;
        }
        if let Some(description) = patch.description {
            team.description = description;
        }
        if let Some(space) = patch.space_id {
            if space == Some(id) || (team.kind == TeamKind::Space && space.is_some()) {
                return Err(Error::invalid(
                    "team.space_id",
                    "a space cannot belong to a space",
                ));
            }
            self.check_space(principal, space, "team.space_id").await?;
            team.space_id = space;
        }
        team.updated_at = self.clock.now();
        let tx = self.change().await?;
        store::teams::update(&tx, &team)
            .await
            .map_err(|err| match err {
                Error::AlreadyExists(_) => {
                    Error::already_exists("team.name", "a group of this kind with this name exists")
                }
                other => other,
            })?;
        self.record(
            &tx,
            team_activity(
                principal,
                "team.updated",
                id,
                client,
                json!({ "name": team.name }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        self.team(principal, id).await
    }

    /// Deletes a team and its memberships.
    pub async fn delete_team(
        &self,
        principal: &Principal,
        id: TeamId,
        client: &ClientInfo,
    ) -> Result<()> {
        policy::authorize(principal, Action::ManageTeams)?;
        let team = self.team(principal, id).await?;
        let tx = self.change().await?;
        let former = store::teams::remove_all_members(&tx, principal.tenant_id, id).await?;
        tx.emit(membership_events(
            principal,
            EventType::TeamMemberRemoved,
            id,
            &former,
            json!({ "team_deleted": true }),
        ));
        store::teams::delete(&tx, principal.tenant_id, id).await?;
        self.record(
            &tx,
            team_activity(
                principal,
                "team.deleted",
                id,
                client,
                json!({ "name": team.name }),
            ),
        )
        .await?;
        self.commit(tx).await
    }

    /// Adds users to a team with a role; users of other accounts are NOT_FOUND skips.
    pub async fn add_team_members(
        &self,
        principal: &Principal,
        id: TeamId,
        users: &[UserId],
        role: TeamRole,
        client: &ClientInfo,
    ) -> Result<Added> {
        policy::authorize(principal, Action::ManageTeams)?;
        self.team(principal, id).await?;
        let (present, mut skipped) = self.present_users(principal, users).await?;
        let already =
            store::teams::members_among(self.store.db(), principal.tenant_id, id, &present).await?;
        let mut adding = Vec::new();
        for user in present {
            if already.contains(&user) {
                skipped.push((user, "ALREADY_MEMBER"));
            } else {
                adding.push(user);
            }
        }
        if !adding.is_empty() {
            let tx = self.change().await?;
            store::teams::add_members(
                &tx,
                principal.tenant_id,
                id,
                &adding,
                role,
                self.clock.now(),
            )
            .await?;
            tx.emit(membership_events(
                principal,
                EventType::TeamMemberAdded,
                id,
                &adding,
                json!({ "role": role.as_str() }),
            ));
            self.record(
                &tx,
                team_activity(
                    principal,
                    "team.members_added",
                    id,
                    client,
                    json!({ "users": adding.len(), "role": role.as_str() }),
                ),
            )
            .await?;
            self.commit(tx).await?;
        }
        Ok(Added {
            added: adding.len() as u64,
            skipped,
        })
    }

    /// Splits `users` into those of the caller's account and NOT_FOUND skips.
    pub(crate) async fn present_users(
        &self,
        principal: &Principal,
        users: &[UserId],
    ) -> Result<(Vec<UserId>, Vec<(UserId, &'static str)>)> {
        let mut unique = users.to_vec();
        unique.sort();
        unique.dedup();
        let mut present = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(store::users::CHUNK) {
            let filter = crate::model::UserFilter {
                ids: Some(chunk.to_vec()),
                ..Default::default()
            };
            present.extend(
                store::users::select_ids(self.store.db(), principal.tenant_id, &filter).await?,
            );
        }
        let found: std::collections::HashSet<UserId> = present.iter().copied().collect();
        let skipped = unique
            .into_iter()
            .filter(|id| !found.contains(id))
            .map(|id| (id, "NOT_FOUND"))
            .collect();
        Ok((present, skipped))
    }

    /// Removes users from a team.
    pub async fn remove_team_members(
        &self,
        principal: &Principal,
        id: TeamId,
        users: &[UserId],
        client: &ClientInfo,
    ) -> Result<u64> {
        policy::authorize(principal, Action::ManageTeams)?;
        self.team(principal, id).await?;
        let tx = self.change().await?;
        let removed = store::teams::remove_members(&tx, principal.tenant_id, id, users).await?;
        tx.emit(membership_events(
            principal,
            EventType::TeamMemberRemoved,
            id,
            &removed,
            json!({}),
        ));
        let removed = removed.len() as u64;
        self.record(
            &tx,
            team_activity(
                principal,
                "team.members_removed",
                id,
                client,
                json!({ "users": removed }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        Ok(removed)
    }

    /// A page of a team's members with their roles.
    pub async fn list_team_members(
        &self,
        principal: &Principal,
        id: TeamId,
        after: Option<UserId>,
        page_size: u64,
    ) -> Result<(Vec<(User, TeamRole, chrono::DateTime<chrono::Utc>)>, bool)> {
        policy::authorize(principal, Action::ReadTeams)?;
        self.team(principal, id).await?;
        let (members, more) =
            store::teams::members(self.store.db(), principal.tenant_id, id, after, page_size)
                .await?;
        let ids: Vec<UserId> = members.iter().map(|(user, _, _)| *user).collect();
        let filter = crate::model::UserFilter {
            ids: Some(ids),
            ..Default::default()
        };
        let page = crate::model::UserPageRequest {
            filter,
            order: crate::model::UserOrder::Created,
            descending: false,
            page_size: page_size.max(1),
            after: None,
        };
        let (users, _) = store::users::list(self.store.db(), principal.tenant_id, &page).await?;
        let mut by_id: std::collections::HashMap<UserId, User> =
            users.into_iter().map(|u| (u.id, u)).collect();
        let rows = members
            .into_iter()
            .filter_map(|(user, role, added)| by_id.remove(&user).map(|u| (u, role, added)))
            .collect();
        Ok((rows, more))
    }

    /// Changes one member's role.
    pub async fn change_team_member_role(
        &self,
        principal: &Principal,
        id: TeamId,
        user: UserId,
        role: TeamRole,
        client: &ClientInfo,
    ) -> Result<crate::model::Membership> {
        policy::authorize(principal, Action::ManageTeams)?;
        self.team(principal, id).await?;
        let tx = self.change().await?;
        if !store::teams::set_member_role(&tx, principal.tenant_id, id, user, role).await? {
            return Err(Error::NotFound("team member"));
        }
        tx.emit(membership_events(
            principal,
            EventType::TeamMemberRoleChanged,
            id,
            &[user],
            json!({ "role": role.as_str() }),
        ));
        self.record(
            &tx,
            team_activity(
                principal,
                "team.member_role_changed",
                id,
                client,
                json!({ "user_id": user.to_string(), "role": role.as_str() }),
            ),
        )
        .await?;
        self.commit(tx).await?;
        // The membership as stored: it keeps the instant the user joined.
        store::teams::memberships_of(self.store.db(), principal.tenant_id, &[user.0])
            .await?
            .remove(&user.0)
            .and_then(|list| list.into_iter().find(|m| m.team_id == id))
            .ok_or(Error::NotFound("team member"))
    }
}
