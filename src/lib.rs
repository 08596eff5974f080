//! roster: a multi-tenant user-management service over gRPC.
//!
//! The layers run one way: [`api`] (transport) -> [`domain`] (rules and use cases) -> [`store`]
//! (database), all speaking the vocabulary of [`model`].

pub mod api;
pub mod config;
pub mod domain;
pub mod import_command;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
pub mod telemetry;
