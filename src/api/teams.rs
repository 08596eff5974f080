//! `roster.v1.TeamService`.

use tonic::{Request, Response, Status};

use super::{
    ApiContext,
    convert::{membership, team_kind, timestamp},
    paging, pb,
};
use crate::{
    domain::teams::{NewTeam, TeamPatch, team_description, team_name},
    model::{
        Error, Result, TeamFilter, TeamId, TeamKind, TeamRole, UserId, Violations, bounded, limits,
    },
};

/// The TeamService implementation.
#[derive(Clone)]
pub struct TeamApi {
    ctx: ApiContext,
}

impl TeamApi {
    /// Serves TeamService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

/// A team role from its enum value (MEMBER when unset).
pub(crate) fn team_role(value: i32) -> Result<TeamRole> {
    match pb::TeamRole::try_from(value) {
        Ok(pb::TeamRole::Unspecified | pb::TeamRole::Member) => Ok(TeamRole::Member),
        Ok(pb::TeamRole::Supervisor) => Ok(TeamRole::Supervisor),
        Ok(pb::TeamRole::Manager) => Ok(TeamRole::Manager),
        Err(_) => Err(Error::invalid("role", format!("unknown team role {value}"))),
    }
}

fn kind(field: &str, value: i32, default: Option<TeamKind>) -> Result<TeamKind> {
    match pb::TeamKind::try_from(value) {
        Ok(pb::TeamKind::Unspecified) => {
            default.ok_or_else(|| Error::invalid(field, "choose a kind"))
        }
        Ok(pb::TeamKind::Team) => Ok(TeamKind::Team),
        Ok(pb::TeamKind::Department) => Ok(TeamKind::Department),
        Ok(pb::TeamKind::Desk) => Ok(TeamKind::Desk),
        Ok(pb::TeamKind::SkillGroup) => Ok(TeamKind::SkillGroup),
        Ok(pb::TeamKind::Space) => Ok(TeamKind::Space),
        Err(_) => Err(Error::invalid(field, format!("unknown team kind {value}"))),
    }
}

fn optional_team(field: &str, text: &str) -> Result<Option<TeamId>> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        TeamId::parse(field, text).map(Some)
    }
}

fn user_ids(field: &str, ids: &[String]) -> Result<Vec<UserId>> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "name at least one user"));
    }
    bounded(field, ids, limits::USERS)?;
    ids.iter()
        .enumerate()
        .map(|(i, id)| UserId::parse(&format!("{field}[{i}]"), id))
        .collect()
}

impl TryFrom<pb::CreateTeamRequest> for NewTeam {
    type Error = Error;

    fn try_from(request: pb::CreateTeamRequest) -> Result<Self> {
        let mut violations = Violations::default();
        let kind = violations.check(kind("kind", request.kind, Some(TeamKind::Team)));
        let name = violations.check(team_name("name", &request.name));
        let description = violations.check(team_description("description", &request.description));
        let space_id = violations.check(optional_team("space_id", &request.space_id));
        violations.finish()?;
        match (kind, name, description, space_id) {
            (Some(kind), Some(name), Some(description), Some(space_id)) => Ok(NewTeam {
                kind,
                name,
                description,
                space_id,
            }),
            _ => Err(Error::internal("team parse left a field unset")),
        }
    }
}

impl From<crate::model::Team> for pb::Team {
    fn from(team: crate::model::Team) -> Self {
        Self {
            id: team.id.to_string(),
            tenant_id: team.tenant_id.to_string(),
            kind: team_kind(team.kind) as i32,
            name: team.name,
            description: team.description,
            space_id: team.space_id.map(|id| id.to_string()).unwrap_or_default(),
            member_count: team.member_count as i64,
            created_at: Some(timestamp(team.created_at)),
            updated_at: Some(timestamp(team.updated_at)),
        }
    }
}

#[tonic::async_trait]
impl pb::team_service_server::TeamService for TeamApi {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let new = NewTeam::try_from(request.into_inner())?;
        let team = self.ctx.app.create_team(&principal, new, &client).await?;
        Ok(Response::new(team.into()))
    }

    async fn get_team(
        &self,
        request: Request<pb::GetTeamRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let id = TeamId::parse("team_id", &request.get_ref().team_id)?;
        Ok(Response::new(
            self.ctx.app.get_team(&principal, id).await?.into(),
        ))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        bounded("kinds", &request.kinds, limits::KINDS)?;
        let kinds = request
            .kinds
            .iter()
            .map(|value| kind("kinds", *value, None))
            .collect::<Result<Vec<_>>>()?;
        let query = request.query.trim().to_lowercase();
        let filter = TeamFilter {
            kinds,
            query: (!query.is_empty()).then_some(query),
            space_id: optional_team("space_id", &request.space_id)?,
        };
        let size = paging::page_size("page_size", request.page_size)?;
        let after = paging::decode("page_token", "teams", &request.page_token)?.map(TeamId);
        let (teams, more) = self
            .ctx
            .app
            .list_teams(&principal, &filter, after, size)
            .await?;
        let next_page_token = match (more, teams.last()) {
            (true, Some(last)) => paging::encode("teams", last.id.0),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = TeamId::parse("team_id", &request.team_id)?;
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid("update_mask", "name at least one field to update").into());
        }
        let team = request.team.unwrap_or_default();
        let mut patch = TeamPatch::default();
        let mut violations = Violations::default();
        for path in &paths {
            match path.as_str() {
                "name" => patch.name = violations.check(team_name("team.name", &team.name)),
                "description" => {
                    patch.description =
                        violations.check(team_description("team.description", &team.description))
                }
                "space_id" => {
                    patch.space_id =
                        violations.check(optional_team("team.space_id", &team.space_id))
                }
                other => {
                    violations.check::<()>(Err(Error::invalid(
                        "update_mask",
                        format!("unknown field {other:?}"),
                    )));
                }
            }
        }
        violations.finish()?;
        Ok(Response::new(
            self.ctx
                .app
                .update_team(&principal, id, patch, &client)
                .await?
                .into(),
        ))
    }

    async fn delete_team(
        &self,
        request: Request<pb::DeleteTeamRequest>,
    ) -> Result<Response<pb::DeleteTeamResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = TeamId::parse("team_id", &request.get_ref().team_id)?;
        self.ctx.app.delete_team(&principal, id, &client).await?;
        Ok(Response::new(pb::DeleteTeamResponse {}))
    }

    async fn add_team_members(
        &self,
        request: Request<pb::AddTeamMembersRequest>,
    ) -> Result<Response<pb::AddTeamMembersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = TeamId::parse("team_id", &request.team_id)?;
        let users = user_ids("user_ids", &request.user_ids)?;
        let role = team_role(request.role)?;
        let added = self
            .ctx
            .app
            .add_team_members(&principal, id, &users, role, &client)
            .await?;
        Ok(Response::new(pb::AddTeamMembersResponse {
            added: added.added as i64,
            skipped: added
                .skipped
                .into_iter()
                .map(|(user, reason)| pb::MemberSkipped {
                    user_id: user.to_string(),
                    reason: reason.to_owned(),
                })
                .collect(),
        }))
    }

    async fn remove_team_members(
        &self,
        request: Request<pb::RemoveTeamMembersRequest>,
    ) -> Result<Response<pb::RemoveTeamMembersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = TeamId::parse("team_id", &request.team_id)?;
        let users = user_ids("user_ids", &request.user_ids)?;
        let removed = self
            .ctx
            .app
            .remove_team_members(&principal, id, &users, &client)
            .await?;
        Ok(Response::new(pb::RemoveTeamMembersResponse {
            removed: removed as i64,
        }))
    }

    async fn list_team_members(
        &self,
        request: Request<pb::ListTeamMembersRequest>,
    ) -> Result<Response<pb::ListTeamMembersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let id = TeamId::parse("team_id", &request.team_id)?;
        let size = paging::page_size("page_size", request.page_size)?;
        let after = paging::decode("page_token", "team_members", &request.page_token)?.map(UserId);
        let (members, more) = self
            .ctx
            .app
            .list_team_members(&principal, id, after, size)
            .await?;
        let next_page_token = match (more, members.last()) {
            (true, Some((user, _, _))) => paging::encode("team_members", user.id.0),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTeamMembersResponse {
            members: members
                .into_iter()
                .map(|(user, role, added_at)| pb::TeamMember {
                    user: Some(user.into()),
                    role: super::convert::team_role(role) as i32,
                    added_at: Some(timestamp(added_at)),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn change_team_member_role(
        &self,
        request: Request<pb::ChangeTeamMemberRoleRequest>,
    ) -> Result<Response<pb::TeamMembership>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = TeamId::parse("team_id", &request.team_id)?;
        let user = UserId::parse("user_id", &request.user_id)?;
        let role = team_role(request.role)?;
        let changed = self
            .ctx
            .app
            .change_team_member_role(&principal, id, user, role, &client)
            .await?;
        Ok(Response::new(membership(changed)))
    }
}
