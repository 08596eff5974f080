//! The vocabulary of roster: ids, newtypes that parse, users, accounts, principals, roles and the
//! one error type. No I/O here, and no knowledge of gRPC or of the database.

mod activity;
mod clock;
mod error;
mod event;
mod ids;
mod principal;
mod profile;
mod roles;
mod secret;
mod service_account;
mod session;
mod team;
mod tenant;
mod user;
mod values;
mod webhook;

pub use activity::{ActivityFilter, ActivityRecord, ClientInfo, NewActivity};
pub use clock::{Clock, SystemClock};
pub use error::{Error, FieldViolation, Result, Violations, bounded, limits};
pub use event::{Event, EventFilter, EventType, NewEvent};
pub use ids::{
    ApiKeyId, ServiceAccountId, SessionId, TenantId, UserId, WebhookDeliveryId, WebhookEndpointId,
};
pub use principal::Principal;
pub use profile::{
    AutoDial, DialerProfile, Extension, Language, PbxExtension, PhoneNumber, ProfileSecrets,
    SealedSecrets, SipSettings, SipUri, TimeZone, caller_id_name, parse_network, pbx_username,
};
pub use roles::{
    ADMIN_GRADE_PERMISSIONS, ALL_PERMISSIONS, BuiltinRole, Permission, PermissionKey, RoleDef,
    RoleScope, builtin_role, builtin_roles, effective_permissions, normalize_role_key,
    normalize_role_keys,
};
pub use secret::{SEALED_PREFIX, Secret};
pub use service_account::{ApiKey, ServiceAccount, ServiceAccountPatch};
pub use session::SessionRecord;
pub use team::{Membership, Team, TeamFilter, TeamId, TeamKind, TeamRole};
pub use tenant::{Tenant, TenantRef, slug_from_name};
pub use user::{
    MatchMode, SEARCH_SEPARATOR, User, UserCursor, UserFilter, UserOrder, UserPageRequest,
    UserStatus, search_text,
};
pub use values::{AccountName, Email, Login, Password, PersonName, Username, parse_tags};
pub use webhook::{
    DeliveryStatus, WEBHOOK_DESCRIPTION_CHARS, WEBHOOK_URL_CHARS, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointPatch,
};

#[cfg(test)]
mod proptests;
