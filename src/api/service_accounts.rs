//! `roster.v1.ServiceAccountService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, convert::timestamp, paging, pb};
use crate::{
    domain::service_accounts::{NewServiceAccount, patch_values},
    model::{
        ApiKey, ApiKeyId, Error, Result, ServiceAccount, ServiceAccountId, ServiceAccountPatch,
        normalize_role_keys,
    },
};

/// The ServiceAccountService implementation.
#[derive(Clone)]
pub struct ServiceAccountApi {
    ctx: ApiContext,
}

impl ServiceAccountApi {
    /// Serves ServiceAccountService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

const CURSOR: &str = "service_accounts";

impl From<ServiceAccount> for pb::ServiceAccount {
    fn from(account: ServiceAccount) -> Self {
        Self {
            id: account.id.to_string(),
            tenant_id: account.tenant_id.to_string(),
            name: account.name,
            description: account.description,
            roles: account.roles,
            created_at: Some(timestamp(account.created_at)),
            updated_at: Some(timestamp(account.updated_at)),
        }
    }
}

impl From<ApiKey> for pb::ApiKey {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id.to_string(),
            service_account_id: key.service_account_id.to_string(),
            prefix: key.prefix,
            created_at: Some(timestamp(key.created_at)),
            expire_time: key.expires_at.map(timestamp),
            last_used_at: key.last_used_at.map(timestamp),
        }
    }
}

impl TryFrom<pb::CreateServiceAccountRequest> for NewServiceAccount {
    type Error = Error;

    fn try_from(request: pb::CreateServiceAccountRequest) -> Result<Self> {
        let roles = normalize_role_keys("roles", &request.roles)?;
        NewServiceAccount::parse(&request.name, &request.description, roles)
    }
}

/// Builds a patch from `update_mask` paths, reading values from `account`.
fn patch(
    account: Option<pb::ServiceAccount>,
    mask: Option<prost_types::FieldMask>,
) -> Result<ServiceAccountPatch> {
    let paths = mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "name at least one field to update",
        ));
    }
    let account = account.unwrap_or_default();
    let mut name = None;
    let mut description = None;
    let mut roles = None;
    for path in &paths {
        match path.as_str() {
            "name" => name = Some(account.name.as_str()),
            "description" => description = Some(account.description.as_str()),
            "roles" => {
                roles = Some(normalize_role_keys(
                    "service_account.roles",
                    &account.roles,
                )?)
            }
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!("unknown field {other:?}"),
                ));
            }
        }
    }
    let (name, description) = patch_values(name, description)?;
    Ok(ServiceAccountPatch {
        name,
        description,
        roles,
    })
}

fn account_id(text: &str) -> Result<ServiceAccountId> {
    ServiceAccountId::parse("service_account_id", text)
}

#[tonic::async_trait]
impl pb::service_account_service_server::ServiceAccountService for ServiceAccountApi {
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let new = NewServiceAccount::try_from(request.into_inner())?;
        let account = self
            .ctx
            .app
            .create_service_account(&principal, new, &client)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn get_service_account(
        &self,
        request: Request<pb::GetServiceAccountRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let id = account_id(&request.get_ref().service_account_id)?;
        let account = self.ctx.app.get_service_account(&principal, id).await?;
        Ok(Response::new(account.into()))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let size = paging::page_size("page_size", request.page_size)?;
        let after =
            paging::decode("page_token", CURSOR, &request.page_token)?.map(ServiceAccountId);
        let (accounts, more) = self
            .ctx
            .app
            .list_service_accounts(&principal, after, size)
            .await?;
        let next_page_token = match (more, accounts.last()) {
            (true, Some(last)) => paging::encode(CURSOR, last.id.0),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListServiceAccountsResponse {
            service_accounts: accounts.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_service_account(
        &self,
        request: Request<pb::UpdateServiceAccountRequest>,
    ) -> Result<Response<pb::ServiceAccount>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = account_id(&request.service_account_id)?;
        let patch = patch(request.service_account, request.update_mask)?;
        let account = self
            .ctx
            .app
            .update_service_account(&principal, id, patch, &client)
            .await?;
        Ok(Response::new(account.into()))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = account_id(&request.get_ref().service_account_id)?;
        self.ctx
            .app
            .delete_service_account(&principal, id, &client)
            .await?;
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = account_id(&request.service_account_id)?;
        let expires_at = request
            .expire_time
            .as_ref()
            .map(|at| paging::instant("expire_time", at))
            .transpose()?;
        let (api_key, key) = self
            .ctx
            .app
            .create_api_key(&principal, id, expires_at, &client)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key,
            key: Some(key.into()),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let id = account_id(&request.get_ref().service_account_id)?;
        let keys = self.ctx.app.list_api_keys(&principal, id).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.get_ref();
        let id = account_id(&request.service_account_id)?;
        let key = ApiKeyId::parse("key_id", &request.key_id)?;
        self.ctx
            .app
            .revoke_api_key(&principal, id, key, &client)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
