use std::fmt;

use uuid::Uuid;

use super::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the id sent in request field `field`.
            pub fn parse(field: &str, text: &str) -> Result<Self> {
                Uuid::parse_str(text.trim())
                    .map(Self)
                    .map_err(|_| Error::invalid(field, concat!("must be a ", $what, " id (UUID)")))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies an account (tenant).
    TenantId, "tenant"
);
id_type!(
    /// Identifies a user.
    UserId, "user"
);
id_type!(
    /// Identifies a login session.
    SessionId, "session"
);

id_type!(
    /// A service account: a machine caller of an account.
    ServiceAccountId,
    "service account"
);

id_type!(
    /// An API key of a service account.
    ApiKeyId,
    "API key"
);

id_type!(
    /// A webhook endpoint of an account.
    WebhookEndpointId,
    "webhook endpoint"
);

id_type!(
    /// One event's delivery to one webhook endpoint.
    WebhookDeliveryId,
    "webhook delivery"
);
