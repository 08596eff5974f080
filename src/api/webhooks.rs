//! `roster.v1.WebhookService`.

use tonic::{Request, Response, Status};

use super::{ApiContext, convert::timestamp, paging, pb};
use crate::{
    domain::webhooks::{NewWebhookEndpoint, WebhookRules, parse_description, parse_url},
    model::{
        DeliveryStatus, Error, EventFilter, Result, WebhookDelivery, WebhookDeliveryId,
        WebhookEndpoint, WebhookEndpointId, WebhookEndpointPatch,
    },
};

/// The WebhookService implementation.
#[derive(Clone)]
pub struct WebhookApi {
    ctx: ApiContext,
}

impl WebhookApi {
    /// Serves WebhookService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }

    fn rules(&self) -> &WebhookRules {
        &self.ctx.app.policies.webhooks
    }
}

const ENDPOINTS: &str = "webhook_endpoints";
const DELIVERIES: &str = "webhook_deliveries";

impl From<WebhookEndpoint> for pb::WebhookEndpoint {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            tenant_id: endpoint.tenant_id.to_string(),
            url: endpoint.url.to_string(),
            description: endpoint.description,
            event_types: endpoint
                .event_types
                .iter()
                .map(|kind| kind.as_str().to_owned())
                .collect(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.unwrap_or_default(),
            cursor: endpoint.cursor.to_string(),
            failing_since: endpoint.failing_since.map(timestamp),
            created_at: Some(timestamp(endpoint.created_at)),
            updated_at: Some(timestamp(endpoint.updated_at)),
        }
    }
}

fn status_of(status: DeliveryStatus) -> pb::WebhookDeliveryStatus {
    match status {
        DeliveryStatus::Pending => pb::WebhookDeliveryStatus::Pending,
        DeliveryStatus::Delivered => pb::WebhookDeliveryStatus::Delivered,
        DeliveryStatus::Failed => pb::WebhookDeliveryStatus::Failed,
    }
}

impl From<WebhookDelivery> for pb::WebhookDelivery {
    fn from(delivery: WebhookDelivery) -> Self {
        Self {
            id: delivery.id.to_string(),
            endpoint_id: delivery.endpoint_id.to_string(),
            event_id: delivery.event_id.to_string(),
            event_cursor: delivery.event_cursor.to_string(),
            event_type: delivery.event_type,
            status: status_of(delivery.status) as i32,
            attempts: delivery.attempts,
            response_code: delivery.response_code.unwrap_or_default(),
            last_error: delivery.last_error.unwrap_or_default(),
            next_attempt_time: delivery.next_attempt_at.map(timestamp),
            created_at: Some(timestamp(delivery.created_at)),
            last_attempt_at: delivery.last_attempt_at.map(timestamp),
            delivered_at: delivery.delivered_at.map(timestamp),
        }
    }
}

fn endpoint_id(text: &str) -> Result<WebhookEndpointId> {
    WebhookEndpointId::parse("endpoint_id", text)
}

/// The request's status filter: none for UNSPECIFIED.
fn status_filter(value: i32) -> Result<Option<DeliveryStatus>> {
    match pb::WebhookDeliveryStatus::try_from(value) {
        Ok(pb::WebhookDeliveryStatus::Unspecified) => Ok(None),
        Ok(pb::WebhookDeliveryStatus::Pending) => Ok(Some(DeliveryStatus::Pending)),
        Ok(pb::WebhookDeliveryStatus::Delivered) => Ok(Some(DeliveryStatus::Delivered)),
        Ok(pb::WebhookDeliveryStatus::Failed) => Ok(Some(DeliveryStatus::Failed)),
        Err(_) => Err(Error::invalid("status", format!("unknown status {value}"))),
    }
}

/// A deliveries page token: the cursor of the last event shown, behind the usual kind check.
fn deliveries_token(cursor: i64) -> String {
    paging::encode(
        DELIVERIES,
        uuid::Uuid::from_u64_pair(0, u64::try_from(cursor).unwrap_or_default()),
    )
}

fn deliveries_after(token: &str) -> Result<Option<i64>> {
    Ok(paging::decode("page_token", DELIVERIES, token)?
        .map(|id| i64::try_from(id.as_u64_pair().1).unwrap_or(i64::MAX)))
}

/// Builds a new endpoint from a create request, checking every field.
fn new_endpoint(
    request: pb::CreateWebhookEndpointRequest,
    rules: &WebhookRules,
) -> Result<NewWebhookEndpoint> {
    Ok(NewWebhookEndpoint {
        url: parse_url("url", &request.url, rules)?,
        description: parse_description("description", &request.description)?,
        event_types: EventFilter::parse_types("event_types", &request.event_types)?,
    })
}

/// Builds a patch from `update_mask` paths, reading values from `endpoint`.
fn patch(
    endpoint: Option<pb::WebhookEndpoint>,
    mask: Option<prost_types::FieldMask>,
    rules: &WebhookRules,
) -> Result<WebhookEndpointPatch> {
    let paths = mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "name at least one field to update",
        ));
    }
    let endpoint = endpoint.unwrap_or_default();
    let mut patch = WebhookEndpointPatch::default();
    for path in &paths {
        match path.as_str() {
            "url" => patch.url = Some(parse_url("endpoint.url", &endpoint.url, rules)?),
            "description" => {
                patch.description = Some(parse_description(
                    "endpoint.description",
                    &endpoint.description,
                )?)
            }
            "event_types" | "eventTypes" => {
                patch.event_types = Some(EventFilter::parse_types(
                    "endpoint.event_types",
                    &endpoint.event_types,
                )?)
            }
            "enabled" => patch.enabled = Some(endpoint.enabled),
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!("unknown field {other:?}"),
                ));
            }
        }
    }
    Ok(patch)
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for WebhookApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let new = new_endpoint(request.into_inner(), self.rules())?;
        let (endpoint, signing_secret) = self
            .ctx
            .app
            .create_webhook_endpoint(&principal, new, &client)
            .await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            endpoint: Some(endpoint.into()),
            signing_secret,
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        let endpoint = self.ctx.app.get_webhook_endpoint(&principal, id).await?;
        Ok(Response::new(endpoint.into()))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let size = paging::page_size("page_size", request.page_size)?;
        let after =
            paging::decode("page_token", ENDPOINTS, &request.page_token)?.map(WebhookEndpointId);
        let (endpoints, more) = self
            .ctx
            .app
            .list_webhook_endpoints(&principal, after, size)
            .await?;
        let next_page_token = match (more, endpoints.last()) {
            (true, Some(last)) => paging::encode(ENDPOINTS, last.id.0),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let patch = patch(request.endpoint, request.update_mask, self.rules())?;
        let endpoint = self
            .ctx
            .app
            .update_webhook_endpoint(&principal, id, patch, &client)
            .await?;
        Ok(Response::new(endpoint.into()))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = endpoint_id(&request.get_ref().endpoint_id)?;
        self.ctx
            .app
            .delete_webhook_endpoint(&principal, id, &client)
            .await?;
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let status = status_filter(request.status)?;
        let size = paging::page_size("page_size", request.page_size)?;
        let before = deliveries_after(&request.page_token)?;
        let (deliveries, more) = self
            .ctx
            .app
            .list_webhook_deliveries(&principal, id, status, before, size)
            .await?;
        let next_page_token = match (more, deliveries.last()) {
            (true, Some(last)) => deliveries_token(last.event_cursor),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: deliveries.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = endpoint_id(&request.endpoint_id)?;
        let delivery_id = WebhookDeliveryId::parse("delivery_id", &request.delivery_id)?;
        let delivery = self
            .ctx
            .app
            .redeliver_webhook(&principal, id, delivery_id, &client)
            .await?;
        Ok(Response::new(delivery.into()))
    }
}
