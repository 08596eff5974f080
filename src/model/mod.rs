//! The vocabulary of roster: ids, newtypes that parse, users, accounts, principals, roles and the
//! one error type. No I/O here, and no knowledge of gRPC or of the database.

mod activity;
mod clock;
mod error;
mod ids;
mod principal;
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
pub use roles::{ALL_PERMISSIONS, BuiltinRole, Permission, permissions_of};
pub use secret::Secret;
pub use tenant::{Tenant, TenantRef, slug_from_name};
pub use user::{User, UserStatus};
pub use values::{AccountName, Email, Login, Password, PersonName, Username};
