//! Webhooks: endpoints of an account that receive its events over HTTPS, signed as the Standard
//! Webhooks specification says, and the log of their deliveries.

use chrono::{DateTime, Utc};

use super::{Error, EventType, Result, TenantId, WebhookDeliveryId, WebhookEndpointId};

/// Longest endpoint URL.
pub const WEBHOOK_URL_CHARS: usize = 2_000;
/// Longest endpoint description.
pub const WEBHOOK_DESCRIPTION_CHARS: usize = 400;

/// An endpoint as stored, without its signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub tenant_id: TenantId,
    pub url: url::Url,
    pub description: String,
    /// The event types it receives; empty for all of them.
    pub event_types: Vec<EventType>,
    pub enabled: bool,
    /// Why roster disabled it (it kept failing), if it did.
    pub disabled_reason: Option<String>,
    /// The last event of the feed it has received (or that its types passed over).
    pub cursor: i64,
    /// When its deliveries began failing without a success since.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// Whether the endpoint wants events of `kind`.
    pub fn wants(&self, kind: EventType) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&kind)
    }
}

/// Changes to an endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointPatch {
    pub url: Option<url::Url>,
    pub description: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet: being tried, or waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: the endpoint was disabled while this delivery failed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(Error::internal(format!(
                "unknown delivery status {other:?}"
            ))),
        }
    }
}

/// One event's delivery to one endpoint, with the outcome of its last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub tenant_id: TenantId,
    pub endpoint_id: WebhookEndpointId,
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: uuid::Uuid,
    pub event_cursor: i64,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// The HTTP status of the last attempt, if the endpoint answered.
    pub response_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Queued again by RedeliverWebhook.
    pub redeliver: bool,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}
