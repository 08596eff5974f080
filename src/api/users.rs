//! `roster.v1.UserService`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

use super::{ApiContext, paging, pb};
use crate::{
    domain::{
        bulk::{BulkAction, BulkRequest, Selection},
        import::ImportOptions,
        users::{CreateUser, FormerOwner, ProfileField, UserPatch},
    },
    model::{
        AutoDial, DialerProfile, Email, Error, Extension, Language, MatchMode, PbxExtension,
        PersonName, PhoneNumber, ProfileSecrets, Result, Secret, SipSettings, SipUri, TeamId,
        TimeZone, UserCursor, UserFilter, UserId, UserOrder, UserPageRequest, UserStatus, Username,
        Violations, bounded, caller_id_name, limits, normalize_role_keys, parse_network,
        parse_tags, pbx_username,
    },
};

/// The UserService implementation.
#[derive(Clone)]
pub struct UserApi {
    ctx: ApiContext,
}

impl UserApi {
    /// Serves UserService with `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

fn optional<T>(text: &str, parse: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

fn secret(text: &str) -> Option<Secret> {
    (!text.is_empty()).then(|| Secret::new(text))
}

fn auto_dial(field: &str, value: i32) -> Result<AutoDial> {
    match pb::AutoDialMode::try_from(value) {
        Ok(pb::AutoDialMode::Unspecified | pb::AutoDialMode::Off) => Ok(AutoDial::Off),
        Ok(pb::AutoDialMode::Optional) => Ok(AutoDial::Optional),
        Ok(pb::AutoDialMode::Always) => Ok(AutoDial::Always),
        Err(_) => Err(Error::invalid(
            field,
            format!("unknown auto-dial mode {value}"),
        )),
    }
}

fn networks(field: &str, entries: &[String]) -> Result<Vec<ipnet::IpNet>> {
    bounded(field, entries, limits::NETWORKS)?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| parse_network(&format!("{field}[{index}]"), entry))
        .collect()
}

/// SIP settings and the PBX password they may carry.
fn sip(field: &str, settings: Option<&pb::SipSettings>) -> Result<(SipSettings, Option<Secret>)> {
    use pb::{pbx::Extension as PbxExt, sip_settings::Option as Sip};
    match settings.and_then(|s| s.option.as_ref()) {
        None => Ok((SipSettings::None, None)),
        Some(Sip::CustomUri(custom)) => Ok((
            SipSettings::CustomUri(SipUri::parse(
                &format!("{field}.custom_uri.uri"),
                &custom.uri,
            )?),
            None,
        )),
        Some(Sip::Webrtc(_)) => Ok((SipSettings::WebRtc, None)),
        Some(Sip::Pbx(pbx)) => {
            let username = pbx_username(&format!("{field}.pbx.username"), &pbx.username)?;
            let extension = match &pbx.extension {
                None => None,
                Some(PbxExt::Number(number)) => Some(PbxExtension::Number(Extension::parse(
                    &format!("{field}.pbx.number"),
                    number,
                )?)),
                Some(PbxExt::Dynamic(true)) => Some(PbxExtension::Dynamic),
                Some(PbxExt::Dynamic(false)) => None,
            };
            let settings = SipSettings::Pbx {
                username,
                extension,
            };
            Ok((settings, secret(&pbx.password)))
        }
    }
}

/// A whole Dialer profile from its message; `prefix` names the field in errors.
fn dialer_profile(
    prefix: &str,
    profile: &pb::DialerProfile,
) -> Result<(DialerProfile, ProfileSecrets)> {
    let field = |name: &str| format!("{prefix}.{name}");
    let mut violations = Violations::default();
    let oauth_email = violations.check(optional(&profile.oauth_email, |t| {
        Email::parse(&field("oauth_email"), t)
    }));
    let allowed_networks = violations.check(networks(
        &field("allowed_networks"),
        &profile.allowed_networks,
    ));
    let auto_dial = violations.check(auto_dial(&field("auto_dial"), profile.auto_dial));
    let caller_id_name = violations.check(caller_id_name(
        &field("caller_id_name"),
        &profile.caller_id_name,
    ));
    let caller_id_number = violations.check(optional(&profile.caller_id_number, |t| {
        PhoneNumber::parse(&field("caller_id_number"), t)
    }));
    let virtual_extension = violations.check(optional(&profile.virtual_extension, |t| {
        Extension::parse(&field("virtual_extension"), t)
    }));
    let timezone = violations.check(optional(&profile.timezone, |t| {
        TimeZone::parse(&field("timezone"), t)
    }));
    let language = violations.check(optional(&profile.language, |t| {
        Language::parse(&field("language"), t)
    }));
    let sip = violations.check(sip(&field("sip"), profile.sip.as_ref()));
    if profile.extended_ip_acl && profile.allowed_networks.is_empty() {
        violations.check::<()>(Err(Error::invalid(
            field("allowed_networks"),
            "the extended IP ACL needs at least one allowed network",
        )));
    }
    violations.finish()?;
    let unset = || Error::internal("profile parse left a field unset");
    let (sip, pbx_password) = sip.ok_or_else(unset)?;
    Ok((
        DialerProfile {
            oauth_email: oauth_email.ok_or_else(unset)?,
            active: profile.active,
            assign_leads: profile.assign_leads,
            extended_ip_acl: profile.extended_ip_acl,
            allowed_networks: allowed_networks.ok_or_else(unset)?,
            auto_dial: auto_dial.ok_or_else(unset)?,
            caller_id_name: caller_id_name.ok_or_else(unset)?,
            caller_id_number: caller_id_number.ok_or_else(unset)?,
            virtual_extension: virtual_extension.ok_or_else(unset)?,
            timezone: timezone.ok_or_else(unset)?,
            language: language.ok_or_else(unset)?,
            tenant_superuser: profile.tenant_superuser,
            sip,
        },
        ProfileSecrets {
            caldav_token: secret(&profile.caldav_token),
            pbx_password,
        },
    ))
}

impl TryFrom<pb::CreateUserRequest> for CreateUser {
    type Error = Error;

    fn try_from(request: pb::CreateUserRequest) -> Result<Self> {
        let mut violations = Violations::default();
        let email = violations.check(Email::parse("email", &request.email));
        let username = violations.check(optional(&request.username, |t| {
            Username::parse("username", t)
        }));
        let first_name = violations.check(PersonName::parse("first_name", &request.first_name));
        let last_name = violations.check(PersonName::parse("last_name", &request.last_name));
        let roles = violations.check(normalize_role_keys("roles", &request.roles));
        let tags = violations.check(parse_tags("tags", &request.tags));
        let password = violations.check(optional(&request.password, |t| {
            crate::model::Password::parse("password", t)
        }));
        let profile = match &request.dialer_profile {
            Some(profile) => violations.check(dialer_profile("dialer_profile", profile).map(Some)),
            None => Some(None),
        };
        if request.roles.is_empty() {
            violations.check::<()>(Err(Error::invalid("roles", "assign at least one role")));
        }
        violations.finish()?;
        let unset = || Error::internal("create parse left a field unset");
        let (dialer_profile, secrets) = match profile.ok_or_else(unset)? {
            Some((profile, secrets)) => (Some(profile), secrets),
            None => (None, ProfileSecrets::default()),
        };
        Ok(CreateUser {
            email: email.ok_or_else(unset)?,
            username: username.ok_or_else(unset)?,
            first_name: first_name.ok_or_else(unset)?,
            last_name: last_name.ok_or_else(unset)?,
            roles: roles.ok_or_else(unset)?,
            tags: tags.ok_or_else(unset)?,
            password: password.ok_or_else(unset)?,
            dialer_profile,
            secrets,
            return_activation_token: request.return_activation_token,
        })
    }
}

/// Builds a patch from `update_mask` paths, reading values from `user`.
fn patch(user: Option<pb::User>, mask: Option<prost_types::FieldMask>) -> Result<UserPatch> {
    let paths = mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "name at least one field to update",
        ));
    }
    let user = user.unwrap_or_default();
    let empty = pb::DialerProfile::default();
    let profile = user.dialer_profile.as_ref().unwrap_or(&empty);
    let mut patch = UserPatch {
        paths: paths.clone(),
        ..Default::default()
    };
    let mut violations = Violations::default();
    let field = |name: &str| format!("user.{name}");
    for path in &paths {
        let result: Result<()> = (|| {
            match path.as_str() {
                "email" => patch.email = Some(Email::parse(&field("email"), &user.email)?),
                "username" => {
                    patch.username = Some(Username::parse(&field("username"), &user.username)?)
                }
                "first_name" => {
                    patch.first_name =
                        Some(PersonName::parse(&field("first_name"), &user.first_name)?)
                }
                "last_name" => {
                    patch.last_name = Some(PersonName::parse(&field("last_name"), &user.last_name)?)
                }
                "roles" => patch.roles = Some(normalize_role_keys(&field("roles"), &user.roles)?),
                "tags" => patch.tags = Some(parse_tags(&field("tags"), &user.tags)?),
                "dialer_profile" => match &user.dialer_profile {
                    Some(profile) => {
                        let (profile, secrets) = dialer_profile(&field("dialer_profile"), profile)?;
                        patch.profile.push(ProfileField::Whole(Some(profile)));
                        patch.secrets = secrets;
                    }
                    None => patch.profile.push(ProfileField::Whole(None)),
                },
                other => {
                    let Some(name) = other.strip_prefix("dialer_profile.") else {
                        return Err(Error::invalid(
                            "update_mask",
                            format!("unknown field {other:?}"),
                        ));
                    };
                    let f = field(&format!("dialer_profile.{name}"));
                    let change = match name {
                        "oauth_email" => {
                            ProfileField::OauthEmail(optional(&profile.oauth_email, |t| {
                                Email::parse(&f, t)
                            })?)
                        }
                        "caldav_token" => {
                            patch.secrets.caldav_token = Some(
                                secret(&profile.caldav_token)
                                    .ok_or_else(|| Error::invalid(&f, "must not be empty"))?,
                            );
                            ProfileField::CaldavToken
                        }
                        "active" => ProfileField::Active(profile.active),
                        "assign_leads" => ProfileField::AssignLeads(profile.assign_leads),
                        "extended_ip_acl" => ProfileField::ExtendedIpAcl(profile.extended_ip_acl),
                        "allowed_networks" => {
                            ProfileField::AllowedNetworks(networks(&f, &profile.allowed_networks)?)
                        }
                        "auto_dial" => ProfileField::AutoDial(auto_dial(&f, profile.auto_dial)?),
                        "caller_id_name" => {
                            ProfileField::CallerIdName(caller_id_name(&f, &profile.caller_id_name)?)
                        }
                        "caller_id_number" => ProfileField::CallerIdNumber(optional(
                            &profile.caller_id_number,
                            |t| PhoneNumber::parse(&f, t),
                        )?),
                        "virtual_extension" => ProfileField::VirtualExtension(optional(
                            &profile.virtual_extension,
                            |t| Extension::parse(&f, t),
                        )?),
                        "timezone" => ProfileField::TimeZone(optional(&profile.timezone, |t| {
                            TimeZone::parse(&f, t)
                        })?),
                        "language" => ProfileField::Language(optional(&profile.language, |t| {
                            Language::parse(&f, t)
                        })?),
                        "tenant_superuser" => {
                            ProfileField::TenantSuperuser(profile.tenant_superuser)
                        }
                        "sip" => {
                            let (settings, password) = sip(&f, profile.sip.as_ref())?;
                            if password.is_some() {
                                patch.secrets.pbx_password = password;
                            }
                            ProfileField::Sip(settings)
                        }
                        _ => {
                            return Err(Error::invalid(
                                "update_mask",
                                format!("unknown field {other:?}"),
                            ));
                        }
                    };
                    patch.profile.push(change);
                }
            }
            Ok(())
        })();
        violations.check(result);
    }
    violations.finish()?;
    Ok(patch)
}

/// The filter of a list or a mass action.
fn filter(field: &str, filter: Option<pb::UserFilter>) -> Result<UserFilter> {
    let filter = filter.unwrap_or_default();
    let mut violations = Violations::default();
    let match_mode = match pb::MatchMode::try_from(filter.match_mode) {
        Ok(pb::MatchMode::Unspecified | pb::MatchMode::Contains) => MatchMode::Contains,
        Ok(pb::MatchMode::Prefix) => MatchMode::Prefix,
        Ok(pb::MatchMode::Exact) => MatchMode::Exact,
        Err(_) => {
            violations.check::<()>(Err(Error::invalid(
                format!("{field}.match_mode"),
                "unknown match mode",
            )));
            MatchMode::Contains
        }
    };
    let mut statuses = Vec::new();
    violations.check(bounded(
        &format!("{field}.statuses"),
        &filter.statuses,
        limits::STATUSES,
    ));
    for value in filter.statuses.iter().take(limits::STATUSES) {
        let status = match pb::UserStatus::try_from(*value) {
            Ok(pb::UserStatus::PendingConfirmation) => Some(UserStatus::PendingConfirmation),
            Ok(pb::UserStatus::Active) => Some(UserStatus::Active),
            Ok(pb::UserStatus::Inactive) => Some(UserStatus::Inactive),
            Ok(pb::UserStatus::Locked) => Some(UserStatus::Locked),
            _ => None,
        };
        match status {
            Some(status) => statuses.push(status),
            None => {
                violations.check::<()>(Err(Error::invalid(
                    format!("{field}.statuses"),
                    format!("unknown status {value}"),
                )));
            }
        }
    }
    let roles = violations.check(normalize_role_keys(
        &format!("{field}.roles"),
        &filter.roles,
    ));
    let team_ids = violations.check(team_ids(&format!("{field}.team_ids"), &filter.team_ids));
    let tags = violations.check(parse_tags(&format!("{field}.tags"), &filter.tags));
    let query = filter.query.trim().to_lowercase();
    if query.chars().count() > 200 {
        violations.check::<()>(Err(Error::invalid(
            format!("{field}.query"),
            "must be at most 200 characters",
        )));
    }
    violations.finish()?;
    Ok(UserFilter {
        query: (!query.is_empty()).then_some(query),
        match_mode,
        statuses,
        roles: roles.unwrap_or_default(),
        team_ids: team_ids.unwrap_or_default(),
        tags: tags.unwrap_or_default(),
        ids: None,
    })
}

/// The listing's name in its page tokens.
const USERS: &str = "users";

/// A fingerprint of the query, so that a page token is not reused with other filters or order.
fn fingerprint(filter: &UserFilter, order: UserOrder, descending: bool) -> String {
    let digest = Sha256::digest(format!("{filter:?}|{order:?}|{descending}").as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

/// The page token that continues the default listing (no filter, oldest first) after the user
/// `user_id`: `roster-bench` starts deep in a large account with it instead of paging there.
pub fn default_listing_token_after(user_id: &str) -> Result<String> {
    let request = UserPageRequest::try_from(pb::ListUsersRequest::default())?;
    let id = uuid::Uuid::parse_str(user_id).map_err(|_| Error::invalid("user_id", "not a UUID"))?;
    let query = fingerprint(&request.filter, request.order, request.descending);
    Ok(paging::token(
        USERS,
        paging::After {
            value: String::new(),
            id,
        },
        &query,
    ))
}

impl TryFrom<pb::ListUsersRequest> for UserPageRequest {
    type Error = Error;

    fn try_from(request: pb::ListUsersRequest) -> Result<Self> {
        let filter = filter("filter", request.filter)?;
        let order = match pb::UserOrder::try_from(request.order_by) {
            Ok(pb::UserOrder::Unspecified | pb::UserOrder::Created) => UserOrder::Created,
            Ok(pb::UserOrder::Email) => UserOrder::Email,
            Ok(pb::UserOrder::Username) => UserOrder::Username,
            Ok(pb::UserOrder::LastName) => UserOrder::LastName,
            Err(_) => return Err(Error::invalid("order_by", "unknown order")),
        };
        let page_size = paging::page_size("page_size", request.page_size)?;
        let expected = fingerprint(&filter, order, request.descending);
        let after =
            paging::after("page_token", USERS, &expected, &request.page_token)?.map(|after| {
                UserCursor {
                    value: after.value,
                    id: UserId(after.id),
                }
            });
        Ok(UserPageRequest {
            filter,
            order,
            descending: request.descending,
            page_size,
            after,
        })
    }
}

pub(crate) fn team_ids(field: &str, ids: &[String]) -> Result<Vec<TeamId>> {
    bounded(field, ids, limits::TEAMS)?;
    ids.iter()
        .enumerate()
        .map(|(i, id)| TeamId::parse(&format!("{field}[{i}]"), id))
        .collect()
}

fn user_id(field: &str, text: &str) -> Result<UserId> {
    UserId::parse(field, text)
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let create = CreateUser::try_from(request.into_inner())?;
        let (user, token) = self
            .ctx
            .app
            .create_user(&principal, create, &client)
            .await?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user.into()),
            activation_token: token.unwrap_or_default(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let id = user_id("user_id", &request.get_ref().user_id)?;
        Ok(Response::new(
            std::sync::Arc::unwrap_or_clone(self.ctx.app.get_user(&principal, id).await?).into(),
        ))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let ids = &request.get_ref().user_ids;
        bounded("user_ids", ids, limits::BATCH_GET)?;
        let mut violations = Violations::default();
        let parsed: Vec<Option<UserId>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| violations.check(user_id(&format!("user_ids[{i}]"), id)))
            .collect();
        violations.finish()?;
        let ids: Vec<UserId> = parsed.into_iter().flatten().collect();
        let (users, missing) = self.ctx.app.batch_get_users(&principal, &ids).await?;
        Ok(Response::new(pb::BatchGetUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
            missing_user_ids: missing.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let request = request.into_inner();
        let include_total = request.include_total_size;
        let page = UserPageRequest::try_from(request)?;
        let fingerprint = fingerprint(&page.filter, page.order, page.descending);
        let order = page.order;
        let result = self
            .ctx
            .app
            .list_users(&principal, page, include_total)
            .await?;
        let next_page_token = match (result.more, result.users.last()) {
            (true, Some(last)) => paging::token(
                USERS,
                paging::After {
                    value: order.sort_value(last),
                    id: last.id.0,
                },
                &fingerprint,
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: result.users.into_iter().map(Into::into).collect(),
            next_page_token,
            total_size: result.total_size.unwrap_or(0) as i64,
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let id = user_id("user_id", &request.user_id)?;
        let patch = patch(request.user, request.update_mask)?;
        Ok(Response::new(
            self.ctx
                .app
                .update_user(&principal, id, patch, &client)
                .await?
                .into(),
        ))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = user_id("user_id", &request.get_ref().user_id)?;
        self.ctx.app.delete_user(&principal, id, &client).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = user_id("user_id", &request.get_ref().user_id)?;
        Ok(Response::new(
            self.ctx
                .app
                .deactivate_user(&principal, id, &client)
                .await?
                .into(),
        ))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = user_id("user_id", &request.get_ref().user_id)?;
        Ok(Response::new(
            self.ctx
                .app
                .reactivate_user(&principal, id, &client)
                .await?
                .into(),
        ))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let return_token = request.get_ref().return_activation_token;
        let token = self
            .ctx
            .app
            .resend_invitation(&principal, id, return_token, &client)
            .await?;
        Ok(Response::new(pb::ResendInvitationResponse {
            activation_token: token.unwrap_or_default(),
        }))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let id = user_id("user_id", &request.get_ref().user_id)?;
        let require_change = request.get_ref().require_change;
        let temporary_password = self
            .ctx
            .app
            .reset_password(&principal, id, require_change, &client)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {
            temporary_password,
        }))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        let new_owner = user_id("new_owner_user_id", &request.new_owner_user_id)?;
        let former = match request.former_owner {
            Some(pb::transfer_ownership_request::FormerOwner::FormerOwnerRoles(list)) => {
                let roles = normalize_role_keys("former_owner_roles.roles", &list.roles)?;
                if roles.is_empty() {
                    return Err(Error::invalid(
                        "former_owner_roles.roles",
                        "give the former owner at least one role",
                    )
                    .into());
                }
                FormerOwner::Roles(roles)
            }
            Some(pb::transfer_ownership_request::FormerOwner::DeleteFormerOwner(true)) => {
                FormerOwner::Delete
            }
            _ => {
                return Err(Error::invalid(
                    "former_owner",
                    "choose the former owner's new roles (former_owner_roles) or their deletion (delete_former_owner)",
                )
                .into());
            }
        };
        let (new_owner, former) = self
            .ctx
            .app
            .transfer_ownership(&principal, new_owner, former, &client)
            .await?;
        Ok(Response::new(pb::TransferOwnershipResponse {
            new_owner: Some(new_owner.into()),
            former_owner: former.map(Into::into),
        }))
    }

    async fn import_users(
        &self,
        request: Request<Streaming<pb::ImportUsersRequest>>,
    ) -> Result<Response<pb::ImportUsersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let mut stream = request.into_inner();
        let mut csv = Vec::new();
        let mut options = None;
        while let Some(message) = stream.message().await? {
            if options.is_none() {
                options = Some(ImportOptions {
                    dry_run: message.dry_run,
                    skip_invalid_rows: message.skip_invalid_rows,
                    suppress_emails: message.suppress_emails,
                });
            }
            csv.extend_from_slice(&message.csv_chunk);
            if csv.len() > crate::domain::import::MAX_FILE_BYTES {
                return Err(Error::invalid("csv_chunk", "the file is larger than 256 MiB").into());
            }
        }
        let options = options.ok_or_else(|| Error::invalid("csv_chunk", "send the CSV file"))?;
        let report = self
            .ctx
            .app
            .import_users(&principal, csv, options, &client)
            .await?;
        Ok(Response::new(pb::ImportUsersResponse {
            rows: report.rows as i64,
            created: report.created as i64,
            invalid: report.invalid as i64,
            errors: report
                .errors
                .into_iter()
                .map(|e| pb::ImportError {
                    line: e.line as i64,
                    column: e.column,
                    message: e.message,
                })
                .collect(),
            dry_run: report.dry_run,
        }))
    }

    async fn bulk_update_users(
        &self,
        request: Request<pb::BulkUpdateUsersRequest>,
    ) -> Result<Response<pb::BulkUpdateUsersResponse>, Status> {
        let principal = self.ctx.principal(&request).await?;
        let client = self.ctx.client(&request);
        let request = request.into_inner();
        use pb::bulk_update_users_request::Selection as Sel;
        let selection = match request.selection {
            Some(Sel::UserIds(list)) => {
                if list.user_ids.is_empty() {
                    return Err(
                        Error::invalid("user_ids.user_ids", "select at least one user").into(),
                    );
                }
                bounded("user_ids.user_ids", &list.user_ids, limits::USERS)?;
                let ids = list
                    .user_ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| user_id(&format!("user_ids.user_ids[{i}]"), id))
                    .collect::<Result<Vec<_>>>()?;
                Selection::Ids(ids)
            }
            Some(Sel::Filter(f)) => Selection::Filter(filter("filter", Some(f))?),
            Some(Sel::AllUsers(true)) => Selection::All,
            _ => {
                return Err(
                    Error::invalid("selection", "choose user_ids, filter or all_users").into(),
                );
            }
        };
        let action = match pb::BulkAction::try_from(request.action) {
            Ok(pb::BulkAction::Activate) => BulkAction::Activate,
            Ok(pb::BulkAction::Deactivate) => BulkAction::Deactivate,
            Ok(pb::BulkAction::Delete) => BulkAction::Delete,
            Ok(pb::BulkAction::AssignRoles) | Ok(pb::BulkAction::UnassignRoles) => {
                let roles = normalize_role_keys("roles", &request.roles)?;
                if roles.is_empty() {
                    return Err(
                        Error::invalid("roles", "name the roles to assign or unassign").into(),
                    );
                }
                if request.action == pb::BulkAction::AssignRoles as i32 {
                    BulkAction::AssignRoles(roles)
                } else {
                    BulkAction::UnassignRoles(roles)
                }
            }
            Ok(pb::BulkAction::AssignTeams) | Ok(pb::BulkAction::UnassignTeams) => {
                let teams = team_ids("team_ids", &request.team_ids)?;
                if teams.is_empty() {
                    return Err(Error::invalid("team_ids", "name the teams").into());
                }
                if request.action == pb::BulkAction::AssignTeams as i32 {
                    BulkAction::AssignTeams(teams, super::teams::team_role(request.team_role)?)
                } else {
                    BulkAction::UnassignTeams(teams)
                }
            }
            Ok(pb::BulkAction::AssignTags) | Ok(pb::BulkAction::UnassignTags) => {
                let tags = parse_tags("tags", &request.tags)?;
                if tags.is_empty() {
                    return Err(Error::invalid("tags", "name the tags").into());
                }
                if request.action == pb::BulkAction::AssignTags as i32 {
                    BulkAction::AssignTags(tags)
                } else {
                    BulkAction::UnassignTags(tags)
                }
            }
            _ => return Err(Error::invalid("action", "choose a mass action").into()),
        };
        let outcome = self
            .ctx
            .app
            .bulk_update_users(
                &principal,
                BulkRequest {
                    selection,
                    action,
                    dry_run: request.dry_run,
                },
                &client,
            )
            .await?;
        Ok(Response::new(pb::BulkUpdateUsersResponse {
            matched: outcome.matched as i64,
            affected: outcome.affected as i64,
            skipped: outcome
                .skipped
                .into_iter()
                .map(|s| pb::BulkSkipped {
                    user_id: s.user_id.to_string(),
                    reason: s.reason.to_owned(),
                    message: s.message,
                })
                .collect(),
            dry_run: request.dry_run,
        }))
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z_.]{1,30}",
            "[A-Za-z0-9_-]{0,120}",
            "\\PC{0,60}",
            any::<String>(),
        ]
    }

    fn clients_error<T>(result: Result<T>) -> bool {
        matches!(result, Ok(_) | Err(Error::InvalidArgument(_)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_listing_request_is_a_page_or_the_clients_error(
            query in text(),
            match_mode in any::<i32>(),
            statuses in prop::collection::vec(any::<i32>(), 0..12),
            roles in prop::collection::vec(text(), 0..5),
            team_ids in prop::collection::vec(text(), 0..3),
            tags in prop::collection::vec(text(), 0..3),
            page_size in any::<i32>(),
            page_token in text(),
            order_by in any::<i32>(),
        ) {
            let request = pb::ListUsersRequest {
                filter: Some(pb::UserFilter {
                    query,
                    match_mode,
                    statuses,
                    roles,
                    team_ids,
                    tags,
                }),
                page_size,
                page_token,
                order_by,
                ..Default::default()
            };
            prop_assert!(clients_error(UserPageRequest::try_from(request)));
        }

        #[test]
        fn a_field_mask_is_a_patch_or_the_clients_error(
            paths in prop::collection::vec(text(), 0..6),
            email in text(),
            timezone in text(),
            networks in prop::collection::vec(text(), 0..3),
        ) {
            let user = pb::User {
                email,
                dialer_profile: Some(pb::DialerProfile {
                    timezone,
                    allowed_networks: networks,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mask = prost_types::FieldMask { paths };
            prop_assert!(clients_error(patch(Some(user), Some(mask))));
        }

        #[test]
        fn a_page_token_of_another_listing_or_made_up_is_refused(token in text()) {
            prop_assert!(clients_error(super::super::paging::decode("page_token", "sessions", &token)));
        }
    }
}
