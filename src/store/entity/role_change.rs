use sea_orm::entity::prelude::*;

/// When a user's roles last changed (see the `role_changes` migration).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "role_changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub changed_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
