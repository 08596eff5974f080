//! SeaORM entities, one per table (see `migrations/`).

pub mod action_token;
pub mod activity;
pub mod outbox;
pub mod server_key;
pub mod session;
pub mod tenant;
pub mod user;
pub mod user_role;
