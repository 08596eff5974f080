//! Users, their account roles and their Dialer profiles, a file per concern: reading, listing,
//! writing, imports, labels (roles and tags), token generations and secrets.

mod generations;
mod import;
mod labels;
mod list;
mod read;
mod secrets;
mod write;

pub use generations::*;
pub use import::*;
pub use labels::*;
pub use list::*;
pub use read::*;
pub use secrets::*;
pub use write::*;

use crate::model::{SealedSecrets, User};

/// Largest number of ids bound in one statement (well under SQLite's 32,766 parameters).
pub const CHUNK: usize = 5_000;

/// A user together with what only authentication flows may see.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: Option<String>,
    /// Bumped to revoke every access token of the user.
    pub token_generation: i64,
}

/// A user to insert, with their secrets.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub user: User,
    pub password_hash: Option<String>,
    pub secrets: SealedSecrets,
}
