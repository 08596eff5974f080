//! Schema migrations for roster, applied at start (and by `roster migrate`).
//!
//! Every table that holds tenant data has `tenant_id` first in its keys and indexes, so that
//! every query is tenant-scoped by construction and uses an index prefix.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_foundation;
mod m20261122_000002_user_profiles;
mod m20261122_000003_teams_roles;
mod m20261122_000010_security;
mod m20261123_000011_mass_updates;
mod m20261123_000012_invitation_batches;
mod m20261123_000013_outbox_priority;
mod m20261123_000014_tenant_scoped_references;
mod m20261123_000015_role_changes;
mod m20261124_000016_set_based_references;
mod m20261125_000017_clear_profile_secrets;
mod m20261125_000018_import_parts;
mod m20261202_000019_email_verification;
mod m20261202_000020_events;
mod m20261202_000021_service_accounts;
mod m20261202_000022_webhooks;
pub mod m20261202_000023_user_search;
mod m20261202_000024_user_statuses;

/// The ordered list of migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_foundation::Migration),
            Box::new(m20261122_000002_user_profiles::Migration),
            Box::new(m20261122_000003_teams_roles::Migration),
            Box::new(m20261122_000010_security::Migration),
            Box::new(m20261123_000011_mass_updates::Migration),
            Box::new(m20261123_000012_invitation_batches::Migration),
            Box::new(m20261123_000013_outbox_priority::Migration),
            Box::new(m20261123_000014_tenant_scoped_references::Migration),
            Box::new(m20261123_000015_role_changes::Migration),
            Box::new(m20261124_000016_set_based_references::Migration),
            Box::new(m20261125_000017_clear_profile_secrets::Migration),
            Box::new(m20261125_000018_import_parts::Migration),
            Box::new(m20261202_000019_email_verification::Migration),
            Box::new(m20261202_000020_events::Migration),
            Box::new(m20261202_000021_service_accounts::Migration),
            Box::new(m20261202_000022_webhooks::Migration),
            Box::new(m20261202_000023_user_search::Migration),
            Box::new(m20261202_000024_user_statuses::Migration),
        ]
    }
}
