//! SeaORM entities, one per table (see `migrations/`).

pub mod action_token;
pub mod activity;
pub mod api_key;
pub mod backup_code;
pub mod event;
pub mod event_counter;
pub mod invitation_batch;
pub mod outbox;
pub mod role;
pub mod role_change;
pub mod server_key;
pub mod service_account;
pub mod session;
pub mod team;
pub mod team_member;
pub mod tenant;
pub mod two_factor;
pub mod user;
pub mod user_lockout;
pub mod user_role;
pub mod user_tag;
pub mod webhook_delivery;
pub mod webhook_endpoint;
