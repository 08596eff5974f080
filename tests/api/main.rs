//! The black-box test suite: every test starts the real server on `127.0.0.1:0` with a fresh
//! database (SQLite, or PostgreSQL when `ROSTER_TEST_DATABASE_URL` is set) and talks to it only
//! through its gRPC interface with generated clients.
//!
//! Run one backend: `cargo test --test api`; the other:
//! `ROSTER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres cargo test --test api`
//! (`bash tests/run.sh` starts a throwaway PostgreSQL and runs both). Set `ROSTER_TEST_LOG=debug`
//! to see the server's logs.

// Requests are built with `..Default::default()` so that a field added to a proto message does
// not break tests that do not care about it; where every field is set today, that is "needless".
#![allow(clippy::needless_update)]

mod harness;

mod activity;
mod auth;
mod events;
mod ip_acl;
mod lockout;
mod recovery;
mod references;
mod replicas;
mod roles;
mod security_support;
mod service;
mod service_accounts;
mod sessions;
mod teams;
mod trust;
mod two_factor;
mod users;
mod users_bulk;
mod users_matrix;
mod users_support;
mod webhooks;
