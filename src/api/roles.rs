//! `roster.v1.RoleService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, pb};
use crate::{
    domain::roles::RoleChange,
    model::{
        Error, Result, RoleDef, RoleScope, UserId, bounded, limits, normalize_role_key,
        normalize_role_keys,
    },
};

/// The RoleService implementation.
#[derive(Clone)]
pub struct RoleApi {
    ctx: ApiContext,
}

impl RoleApi {
    /// Serves RoleService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

fn scope(value: i32) -> Result<RoleScope> {
    match pb::RoleScope::try_from(value) {
        Ok(pb::RoleScope::Unspecified | pb::RoleScope::Account) => Ok(RoleScope::Account),
        Ok(pb::RoleScope::Platform) => Ok(RoleScope::Platform),
        Ok(pb::RoleScope::Inbox) => Ok(RoleScope::Inbox),
        Err(_) => Err(Error::invalid("scope", format!("unknown scope {value}"))),
    }
}

fn permissions(list: &[String]) -> Result<Vec<String>> {
    bounded("permissions", list, limits::PERMISSIONS)?;
    let mut permissions: Vec<String> = list.iter().map(|p| p.trim().to_lowercase()).collect();
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

impl TryFrom<pb::CreateRoleRequest> for RoleDef {
    type Error = Error;

    fn try_from(request: pb::CreateRoleRequest) -> Result<Self> {
        Ok(RoleDef {
            key: normalize_role_key("key", &request.key)?,
            name: request.name.trim().to_owned(),
            scope: scope(request.scope)?,
            permissions: permissions(&request.permissions)?,
            builtin: false,
        })
    }
}

/// An update names the whole role again; its scope stays ACCOUNT.
impl TryFrom<pb::UpdateRoleRequest> for RoleDef {
    type Error = Error;

    fn try_from(request: pb::UpdateRoleRequest) -> Result<Self> {
        Ok(RoleDef {
            key: normalize_role_key("key", &request.key)?,
            name: request.name.trim().to_owned(),
            scope: RoleScope::Account,
            permissions: permissions(&request.permissions)?,
            builtin: false,
        })
    }
}

impl From<RoleDef> for pb::Role {
    fn from(role: RoleDef) -> Self {
        let scope = match role.scope {
            RoleScope::Account => pb::RoleScope::Account,
            RoleScope::Platform => pb::RoleScope::Platform,
            RoleScope::Inbox => pb::RoleScope::Inbox,
        };
        Self {
            key: role.key,
            name: role.name,
            scope: scope as i32,
            permissions: role.permissions,
            builtin: role.builtin,
        }
    }
}

#[tonic::async_trait]
impl pb::role_service_server::RoleService for RoleApi {
    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let permissions = self
            .ctx
            .app
            .permission_catalogue(&principal)?
            .into_iter()
            .map(|(key, description)| pb::Permission {
                key: key.to_owned(),
                description: description.to_owned(),
            })
            .collect();
        Ok(Response::new(pb::ListPermissionsResponse { permissions }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let roles = self.ctx.app.list_roles(&principal).await?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let role = RoleDef::try_from(request.into_inner())?;
        Ok(Response::new(
            self.ctx
                .app
                .create_role(&principal, role, &client)
                .await?
                .into(),
        ))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let role = RoleDef::try_from(request.into_inner())?;
        Ok(Response::new(
            self.ctx
                .app
                .update_role(&principal, role, &client)
                .await?
                .into(),
        ))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let key = normalize_role_key("key", &request.get_ref().key)?;
        self.ctx.app.delete_role(&principal, &key, &client).await?;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn change_user_role(
        &self,
        request: Request<pb::ChangeUserRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let user = UserId::parse("user_id", &request.user_id)?;
        let single = |field: &str, value: Option<String>| -> Result<Option<Option<String>>> {
            match value {
                None => Ok(None),
                Some(text) if text.trim().is_empty() => Ok(Some(None)),
                Some(text) => normalize_role_key(field, &text).map(|key| Some(Some(key))),
            }
        };
        let change = RoleChange {
            account_roles: request
                .account_roles
                .map(|list| normalize_role_keys("account_roles.keys", &list.keys))
                .transpose()?,
            platform_role: single("platform_role", request.platform_role)?,
            inbox_role: single("inbox_role", request.inbox_role)?,
        };
        if change.account_roles.is_none()
            && change.platform_role.is_none()
            && change.inbox_role.is_none()
        {
            return Err(Error::invalid(
                "account_roles",
                "change at least one of account_roles, platform_role, inbox_role",
            )
            .into());
        }
        Ok(Response::new(
            self.ctx
                .app
                .change_user_role(&principal, user, change, &client)
                .await?
                .into(),
        ))
    }

    async fn remove_all_permissions(
        &self,
        request: Request<pb::RemoveAllPermissionsRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let user = UserId::parse("user_id", &request.get_ref().user_id)?;
        Ok(Response::new(
            self.ctx
                .app
                .remove_all_permissions(&principal, user, &client)
                .await?
                .into(),
        ))
    }
}
