//! The vocabulary of roster: ids, newtypes that parse, users, accounts, principals, roles and the
//! one error type. No I/O here, and no knowledge of gRPC or of the database.

mod activity;
mod clock;
mod error;
mod ids;
mod principal;
mod profile;
mod roles;
mod secret;
mod tenant;
mod user;
mod values;

pub use activity::{ActivityRecord, ClientInfo, NewActivity};
pub use clock::{Clock, SystemClock};
pub use error::{Error, FieldViolation, Result, Violations};
pub use ids::{SessionId, TenantId, UserId};
pub use principal::Principal;
pub use profile::{
    AutoDial, DialerProfile, Extension, Language, PbxExtension, PhoneNumber, ProfileSecrets,
    SipSettings, SipUri, TimeZone, parse_network,
};
pub use roles::{ALL_PERMISSIONS, BuiltinRole, Permission, parse_roles, permissions_of};
pub use secret::Secret;
pub use tenant::{Tenant, TenantRef, slug_from_name};
pub use user::{MatchMode, User, UserCursor, UserFilter, UserOrder, UserPageRequest, UserStatus};
pub use values::{AccountName, Email, Login, Password, PersonName, Username};
