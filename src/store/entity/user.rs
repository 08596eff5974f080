use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub status: String,
    pub password_hash: Option<String>,
    pub password_change_required: bool,
    pub tokens_valid_after: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_login_at: Option<DateTimeUtc>,
    pub dialer_profile: Option<String>,
    pub caldav_token: Option<String>,
    pub pbx_password: Option<String>,
    pub token_generation: i64,
    pub email_verified_at: Option<DateTimeUtc>,
    pub pending_email: Option<String>,
    /// What the text query matches (migration 000023).
    pub search_text: String,
}

impl ActiveModelBehavior for ActiveModel {}
