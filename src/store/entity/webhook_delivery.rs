use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub redeliver: bool,
    pub created_at: DateTimeUtc,
    pub last_attempt_at: Option<DateTimeUtc>,
    pub delivered_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
