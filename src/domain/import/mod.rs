//! Bulk creation of users from CSV (the Dialer's "add multiple users from a CSV file").
//!
//! Columns (header first, any order, case-insensitive): `email` (required), `username`,
//! `first_name`, `last_name`, `roles` (role keys separated by `;`), `password`, `password_hash`
//! (an argon2 or bcrypt hash, for migrations), `timezone`, `language`, `caller_id_name`,
//! `caller_id_number`. A row without a password or hash is invited by email.

mod write;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::mpsc;

use serde_json::json;

use super::{
    App,
    auth::{PURPOSE_ACTIVATION, PURPOSE_INVITATION},
    mail,
    passwords::check_imported_hash,
    policy::{self, Action},
    tokens,
};
use crate::{
    model::{
        ClientInfo, DialerProfile, Email, Error, EventType, Language, NewActivity, NewEvent,
        Password, PersonName, PhoneNumber, Principal, Result, RoleDef, RoleScope, TenantId,
        TimeZone, User, UserId, UserStatus, Username, builtin_roles, normalize_role_keys,
    },
    store::{self, Touched, tokens::NewActionToken},
};

/// The largest CSV file accepted in one call.
pub const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;
/// At most this many problems are listed (all are counted).
const MAX_REPORTED_ERRORS: usize = 1_000;
/// Unknown header columns named in the error; the rest are counted.
const NAMED_UNKNOWN_COLUMNS: usize = 10;
/// A message's maker: (to, first name, account, link, hours valid).
type Compose = fn(&str, &str, &str, &str, i64) -> mail::Mail;
/// Good rows handed from the parser to the writers in the first chunk: small, so that the first
/// insert starts after a few milliseconds of parsing.
const FIRST_CHUNK: usize = 2_500;
/// The most good rows in a chunk: each chunk doubles the last, up to this.
const PARSED_CHUNK: usize = 10_000;
/// Users whose invitation tokens and messages are made in one transaction.
const INVITATION_CHUNK: usize = 2_000;
/// An import creating at least this many users refreshes the database's statistics after it.
pub const ANALYZE_AFTER_USERS: u64 = 10_000;

const COLUMNS: &[&str] = &[
    "email",
    "username",
    "first_name",
    "last_name",
    "roles",
    "password",
    "password_hash",
    "timezone",
    "language",
    "caller_id_name",
    "caller_id_number",
];

/// How to import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    pub skip_invalid_rows: bool,
    pub suppress_emails: bool,
}

/// A problem with one cell or row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line: u64,
    pub column: String,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub invalid: u64,
    pub errors: Vec<ImportError>,
    pub dry_run: bool,
}

/// A row that parsed.
struct Row {
    line: u64,
    user: User,
    password: Option<Password>,
    password_hash: Option<String>,
}

enum Secret {
    None,
    Password(Password),
    Hash(String),
}

impl App {
    /// Validates every row and (unless a dry run, or rows are bad and not to be skipped) creates
    /// the users in multi-row statements and queues their activation or invitation emails.
    ///
    /// An import that may write inserts each chunk of good rows while the parser reads the
    /// next, on two transactions at once on PostgreSQL (see [`write`]): they are rolled back if
    /// a bad row turns up later and bad rows are not to be skipped.
    pub async fn import_users(
        &self,
        principal: &Principal,
        csv: Vec<u8>,
        options: ImportOptions,
        client: &ClientInfo,
    ) -> Result<ImportReport> {
        policy::authorize(principal, Action::ImportUsers)?;
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut known_roles: HashMap<String, RoleDef> = builtin_roles()
            .into_iter()
            .map(|role| (role.key.clone(), role))
            .collect();
        known_roles.extend(
            store::roles::list(self.store.db(), principal.tenant_id)
                .await?
                .into_iter()
                .map(|role| (role.key.clone(), role)),
        );
        // Parsing and checking 100,000 rows takes a core for about half a second: not on the
        // runtime's threads, where it would hold up every call scheduled behind it.
        let (chunks, parsed) = mpsc::channel::<Vec<Row>>(2);
        let bad_row_seen = Arc::new(AtomicBool::new(false));
        let parser = {
            let principal = principal.clone();
            let bad_row_seen = bad_row_seen.clone();
            tokio::task::spawn_blocking(move || {
                let mut report = ImportReport {
                    dry_run: options.dry_run,
                    ..Default::default()
                };
                let mut errors = Vec::new();
                parse(
                    &principal,
                    &known_roles,
                    &csv,
                    now,
                    &mut report,
                    &mut errors,
                    |rows, errors_so_far| {
                        bad_row_seen.store(errors_so_far > 0, Ordering::Relaxed);
                        // The receiver is gone only when the import failed already.
                        chunks.blocking_send(rows).is_ok()
                    },
                )
                .map(|()| (report, errors))
            })
        };

        let intake = write::Intake::new(parsed, options, bad_row_seen);
        let first = intake.next().await;
        let more_may_follow = first.as_ref().is_some_and(|rows| rows.len() >= FIRST_CHUNK);
        let outcome = self
            .write_import(principal.tenant_id, &intake, first, more_may_follow)
            .await;
        // The parser stops at its next chunk once the intake is gone (after a failed write).
        drop(intake);
        let (mut written, secondary) = outcome?;
        let (mut report, mut errors) = parser
            .await
            .map_err(|err| Error::internal(format!("the CSV parser panicked: {err}")))??;
        tracing::debug!(rows = report.rows, took = ?started.elapsed(), "import parsed and inserted");

        let mut second_part = None;
        if let Some(mut secondary) = secondary {
            second_part = secondary.take_part();
            written.merge(secondary);
        }
        let writes = !options.dry_run
            && (options.skip_invalid_rows || (errors.is_empty() && written.taken.is_empty()));
        let Some(tx) = written.tx.take().filter(|_| writes) else {
            // Nothing is written (a transaction begun rolls back when dropped): every problem
            // is reported at once, the logins already taken in the account among them.
            let lines_and_users: Vec<(u64, &User)> = written
                .good_rows
                .iter()
                .map(|(line, user)| (*line, user))
                .collect();
            let taken =
                taken_logins(self.store.db(), principal.tenant_id, &lines_and_users).await?;
            errors.extend(taken.into_values());
            report.set_errors(errors);
            return Ok(report);
        };
        errors.extend(written.taken);
        report.set_errors(errors);
        let created: Vec<UserId> = written.created.iter().map(|(_, id)| *id).collect();
        if created.is_empty() {
            return Ok(report);
        }

        report.created = created.len() as u64;
        let activity = NewActivity {
            tenant_id: principal.tenant_id,
            actor: Some(principal.user_id),
            action: "users.imported",
            target_type: Some("users"),
            target_id: None,
            client: client.clone(),
            details: json!({ "rows": report.rows, "created": report.created, "invalid": report.invalid }),
        };
        let finish = async |tx: &store::Tx| {
            // The emails are queued as one batch: each token and message is made afterwards, a
            // chunk per transaction (see `send_invitation_batches`).
            if !options.suppress_emails {
                store::invitations::insert(tx, principal.tenant_id, &created, now).await?;
            }
            self.record(tx, activity).await?;
            // The feed's events last: the account's event counter stays locked until the commit.
            let mut events: Vec<NewEvent> = created
                .iter()
                .map(|user| {
                    NewEvent::on_user(
                        principal.tenant_id,
                        Some(principal.user_id),
                        EventType::UserCreated,
                        *user,
                        json!({ "imported": true, "invited": !options.suppress_emails }),
                    )
                })
                .collect();
            self.mark_service_account_actors(&mut events);
            store::events::append(tx, &events, now).await
        };
        self.commit_import(principal.tenant_id, tx, second_part, now, finish)
            .await?;
        // One user.created event per created user went in with the commit.
        crate::metrics::events().appended(report.created as usize);
        self.events.ring();
        // The import commits its own transactions (two, as one): it wakes the invitation maker.
        if !options.suppress_emails {
            self.invitation_wake.notify_one();
        }
        if report.created >= ANALYZE_AFTER_USERS {
            // After the answer: the statistics help the next queries, not this call.
            let store = self.store.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match store.refresh_user_statistics().await {
                    Ok(()) => {
                        tracing::debug!(took = ?started.elapsed(), "user statistics refreshed")
                    }
                    Err(err) => tracing::warn!(error = %err, "refreshing user statistics failed"),
                }
            });
        }
        tracing::info!(tenant_id = %principal.tenant_id, created = report.created, "users imported");
        Ok(report)
    }

    /// Makes the tokens and messages of the queued invitation batches, [`INVITATION_CHUNK`] users
    /// per transaction, until none is left or `stopping` says so. Users deleted, activated or
    /// sent a new invitation meanwhile are passed over.
    pub async fn send_invitation_batches(&self, stopping: impl Fn() -> bool) -> Result<u64> {
        let mut made = 0;
        while !stopping() {
            let tx = self.change().await?;
            let Some(batch) = store::invitations::next(&tx, INVITATION_CHUNK).await? else {
                return Ok(made);
            };
            let end = batch.done + batch.next_users.len();
            let invitees = store::users::invitees(
                &tx,
                batch.tenant_id,
                &batch.next_users,
                &[PURPOSE_ACTIVATION, PURPOSE_INVITATION],
            )
            .await?;
            let tenant = store::tenants::get(&tx, batch.tenant_id)
                .await?
                .ok_or(Error::NotFound("account"))?;
            let now = self.clock.now();
            let ttl = self.policies.activation_ttl;
            let hours = ttl.num_hours().max(1);
            let mut new_tokens = Vec::with_capacity(invitees.len());
            let mut mails = Vec::with_capacity(invitees.len());
            for invitee in &invitees {
                let token = tokens::random_secret();
                let link = self.link("activate", &token);
                let (purpose, compose) = if invitee.has_password {
                    (PURPOSE_ACTIVATION, mail::activation as Compose)
                } else {
                    (PURPOSE_INVITATION, mail::invitation as Compose)
                };
                let message = compose(
                    &invitee.email,
                    &invitee.first_name,
                    tenant.name.as_str(),
                    &link,
                    hours,
                );
                mails.push((message.to, message.subject, message.body));
                new_tokens.push(NewActionToken {
                    user_id: invitee.id,
                    purpose,
                    token_hash: tokens::token_hash(&token),
                });
            }
            store::tokens::insert_many(&tx, batch.tenant_id, &new_tokens, now, now + ttl).await?;
            store::outbox::enqueue_many(&tx, Some(batch.tenant_id), &mails, now).await?;
            store::invitations::advance(&tx, &batch, end).await?;
            let touched = invitees.iter().map(|invitee| invitee.id).collect();
            tx.touching(Touched::Users(batch.tenant_id, touched));
            self.commit(tx).await?;
            made += invitees.len() as u64;
        }
        Ok(made)
    }
}

impl ImportReport {
    /// Records the problems found: the lines they are on count as invalid, and the first
    /// [`MAX_REPORTED_ERRORS`] are reported, in line order.
    fn set_errors(&mut self, mut errors: Vec<ImportError>) {
        let mut bad_lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        bad_lines.sort_unstable();
        bad_lines.dedup();
        self.invalid = bad_lines.len() as u64;
        errors.sort_by_key(|e| e.line);
        errors.truncate(MAX_REPORTED_ERRORS);
        self.errors = errors;
    }
}

/// Which of `rows` (line, user) have an email or username taken in the account, by line, with the
/// error to report. Inside a transaction, the logins it has just taken count.
async fn taken_logins(
    db: &impl store::Conn,
    tenant_id: TenantId,
    rows: &[(u64, &User)],
) -> Result<HashMap<u64, ImportError>> {
    let emails: Vec<String> = rows
        .iter()
        .map(|(_, user)| user.email.as_str().to_owned())
        .collect();
    let usernames: Vec<String> = rows
        .iter()
        .map(|(_, user)| user.username.as_str().to_owned())
        .collect();
    let (taken_emails, taken_usernames) =
        store::users::taken_logins(db, tenant_id, &emails, &usernames).await?;
    Ok(rows
        .iter()
        .filter_map(|&(line, user)| {
            let column = if taken_emails.contains(user.email.as_str()) {
                "email"
            } else if taken_usernames.contains(user.username.as_str()) {
                "username"
            } else {
                return None;
            };
            Some((
                line,
                ImportError {
                    line,
                    column: column.into(),
                    message: format!("{column} is already taken in this account"),
                },
            ))
        })
        .collect())
}

/// Checks a row's roles: known, at least one, at most one Platform and one Inbox role, and
/// admin-grade roles only from the owner.
fn check_roles(
    principal: &Principal,
    known: &HashMap<String, RoleDef>,
    roles: Vec<String>,
) -> std::result::Result<Vec<String>, String> {
    if roles.is_empty() {
        return Err("assign at least one role".to_owned());
    }
    let mut defs = Vec::with_capacity(roles.len());
    for key in &roles {
        match known.get(key) {
            Some(role) => defs.push(role),
            None => return Err(format!("unknown role {key:?}")),
        }
    }
    for scope in [RoleScope::Platform, RoleScope::Inbox] {
        if defs.iter().filter(|role| role.scope == scope).count() > 1 {
            return Err(format!(
                "at most one {} role",
                scope.as_str().to_lowercase()
            ));
        }
    }
    // The rule of CreateUser: the same policy decides.
    let admin_grade = defs.iter().any(|role| role.is_admin_grade());
    super::policy::authorize_role_change(principal, &roles, &[], admin_grade)
        .map_err(|refusal| refusal.to_string())?;
    Ok(roles)
}

/// Parses and checks every row, collecting problems; returns the rows that are good so far.
fn parse(
    principal: &Principal,
    known_roles: &HashMap<String, RoleDef>,
    csv: &[u8],
    now: chrono::DateTime<chrono::Utc>,
    report: &mut ImportReport,
    errors: &mut Vec<ImportError>,
    mut emit: impl FnMut(Vec<Row>, usize) -> bool,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(csv);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|err| {
            Error::invalid(
                "csv_chunk",
                format!("line 1: cannot read the header: {err}"),
            )
        })?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_lowercase())
        .collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut header_errors = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (position, name) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|known| **known == name) {
            Some(known) if index.insert(known, position).is_some() => {
                header_errors.push(format!("column {name:?} appears twice"));
            }
            Some(_) => {}
            None => unknown.push(name),
        }
    }
    // One line, however many columns a hostile header has: the first few are named.
    if !unknown.is_empty() {
        let named: Vec<String> = unknown
            .iter()
            .take(NAMED_UNKNOWN_COLUMNS)
            .map(|name| format!("{:?}", name.chars().take(64).collect::<String>()))
            .collect();
        let more = unknown.len().saturating_sub(NAMED_UNKNOWN_COLUMNS);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        header_errors.push(format!(
            "unknown column{} {}{more} (known: {})",
            if unknown.len() == 1 { "" } else { "s" },
            named.join(", "),
            COLUMNS.join(", ")
        ));
    }
    header_errors.truncate(NAMED_UNKNOWN_COLUMNS + 1);
    if !index.contains_key("email") {
        header_errors.push("the email column is required".into());
    }
    if !header_errors.is_empty() {
        return Err(Error::invalid(
            "csv_chunk",
            format!("line 1: {}", header_errors.join("; ")),
        ));
    }

    let mut chunk_size = FIRST_CHUNK;
    let mut rows = Vec::with_capacity(chunk_size);
    let mut seen_emails: HashMap<String, u64> = HashMap::new();
    let mut seen_usernames: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        report.rows += 1;
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let line = err.position().map_or(0, |p| p.line());
                errors.push(ImportError {
                    line,
                    column: String::new(),
                    message: err.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(report.rows + 1, |p| p.line());
        let cell = |name: &str| index.get(name).and_then(|i| record.get(*i)).unwrap_or("");
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let mut check = |column: &'static str, result: std::result::Result<(), String>| {
            if let Err(message) = result {
                problems.push((column, message));
            }
        };
        let message = |err: Error| match err {
            Error::InvalidArgument(violations) => violations
                .into_iter()
                .map(|v| v.description)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };

        let email = Email::parse("email", cell("email")).map_err(message);
        let username = if cell("username").is_empty() {
            email
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|e| Username::parse("username", e.as_str()).map_err(message))
        } else {
            Username::parse("username", cell("username")).map_err(message)
        };
        let first_name = PersonName::parse("first_name", cell("first_name")).map_err(message);
        let last_name = PersonName::parse("last_name", cell("last_name")).map_err(message);
        let role_keys: Vec<String> = cell("roles")
            .split(';')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        let roles = normalize_role_keys("roles", &role_keys)
            .map_err(message)
            .and_then(|roles| check_roles(principal, known_roles, roles));
        let secret = match (cell("password"), cell("password_hash")) {
            ("", "") => Ok(Secret::None),
            (password, "") => Password::parse("password", password)
                .map(Secret::Password)
                .map_err(message),
            ("", hash) => check_imported_hash(hash)
                .map(|()| Secret::Hash(hash.to_owned()))
                .map_err(str::to_owned),
            _ => Err("give either password or password_hash, not both".to_owned()),
        };
        let optional = |name: &str| Some(cell(name)).filter(|v| !v.is_empty());
        let timezone = optional("timezone")
            .map(|v| TimeZone::parse("timezone", v).map_err(message))
            .transpose();
        let language = optional("language")
            .map(|v| Language::parse("language", v).map_err(message))
            .transpose();
        let caller_id_number = optional("caller_id_number")
            .map(|v| PhoneNumber::parse("caller_id_number", v).map_err(message))
            .transpose();
        // The API's rule, the same function.
        let caller_id_name =
            match crate::model::caller_id_name("caller_id_name", cell("caller_id_name")) {
                Ok(name) => name,
                Err(err) => {
                    check("caller_id_name", Err(message(err)));
                    None
                }
            };
        check("email", email.as_ref().map(|_| ()).map_err(Clone::clone));
        // A username derived from a bad email is the email's problem: report it once.
        if !cell("username").is_empty() || email.is_ok() {
            check(
                "username",
                username.as_ref().map(|_| ()).map_err(Clone::clone),
            );
        }
        check(
            "first_name",
            first_name.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        check(
            "last_name",
            last_name.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        check("roles", roles.as_ref().map(|_| ()).map_err(Clone::clone));
        check(
            if cell("password").is_empty() {
                "password_hash"
            } else {
                "password"
            },
            secret.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        check(
            "timezone",
            timezone.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        check(
            "language",
            language.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        check(
            "caller_id_number",
            caller_id_number.as_ref().map(|_| ()).map_err(Clone::clone),
        );

        if let Ok(email) = &email
            && let Some(first) = seen_emails.insert(email.as_str().to_owned(), line)
        {
            problems.push(("email", format!("duplicates line {first}")));
        }
        if let Ok(username) = &username
            && let Some(first) = seen_usernames.insert(username.as_str().to_owned(), line)
        {
            problems.push(("username", format!("duplicates line {first}")));
        }
        if !problems.is_empty() {
            errors.extend(problems.into_iter().map(|(column, message)| ImportError {
                line,
                column: column.into(),
                message,
            }));
            continue;
        }
        let (
            Ok(email),
            Ok(username),
            Ok(first_name),
            Ok(last_name),
            Ok(roles),
            Ok(secret),
            Ok(timezone),
            Ok(language),
            Ok(caller_id_number),
        ) = (
            email,
            username,
            first_name,
            last_name,
            roles,
            secret,
            timezone,
            language,
            caller_id_number,
        )
        else {
            continue;
        };
        let has_profile = timezone.is_some()
            || language.is_some()
            || caller_id_name.is_some()
            || caller_id_number.is_some();
        let dialer_profile = has_profile.then(|| DialerProfile {
            timezone,
            language,
            caller_id_name,
            caller_id_number,
            active: true,
            ..Default::default()
        });
        let (password, password_hash) = match secret {
            Secret::None => (None, None),
            Secret::Password(password) => (Some(password), None),
            Secret::Hash(hash) => (None, Some(hash)),
        };
        rows.push(Row {
            line,
            user: User {
                id: UserId::new(),
                tenant_id: principal.tenant_id,
                email,
                username,
                first_name,
                last_name,
                status: UserStatus::PendingConfirmation,
                roles,
                is_admin: false,
                tags: Vec::new(),
                memberships: Vec::new(),
                is_owner: false,
                password_change_required: false,
                dialer_profile,
                caldav_token_set: false,
                pbx_password_set: false,
                created_at: now,
                updated_at: now,
                last_login_at: None,
                email_verified: false,
                pending_email: None,
            },
            password,
            password_hash,
        });
        if rows.len() == chunk_size {
            chunk_size = (chunk_size * 2).min(PARSED_CHUNK);
            let full = std::mem::replace(&mut rows, Vec::with_capacity(chunk_size));
            if !emit(full, errors.len()) {
                return Ok(());
            }
        }
    }
    if !rows.is_empty() {
        emit(rows, errors.len());
    }
    Ok(())
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{SessionId, TenantId, UserId};

    fn owner() -> Principal {
        let now = chrono::Utc::now();
        Principal {
            tenant_id: TenantId::new(),
            user_id: UserId::new(),
            session_id: SessionId::new(),
            roles: Vec::new(),
            permissions: Vec::new(),
            is_owner: true,
            password_change_required: false,
            two_factor_enrollment_required: false,
            issued_at: now,
            expires_at: now,
            service_account: false,
        }
    }

    /// Parses `csv` as an import would; the rows that parsed and the report.
    fn run(csv: &[u8]) -> (Result<()>, ImportReport, Vec<ImportError>, usize) {
        let known: HashMap<String, RoleDef> = builtin_roles()
            .into_iter()
            .map(|role| (role.key.clone(), role))
            .collect();
        let mut report = ImportReport::default();
        let mut errors = Vec::new();
        let mut parsed = 0;
        let result = parse(
            &owner(),
            &known,
            csv,
            chrono::Utc::now(),
            &mut report,
            &mut errors,
            |rows, _| {
                parsed += rows.len();
                true
            },
        );
        (result, report, errors, parsed)
    }

    /// A cell: often a plausible value, sometimes anything.
    fn cell() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z]{1,8}@[a-z]{1,6}\\.test",
            "[A-Z_;]{0,20}",
            "\\PC{0,40}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_bytes_are_parsed_or_refused_as_the_clients_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let (result, ..) = run(&bytes);
            if let Err(err) = result {
                prop_assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            }
        }

        #[test]
        fn rows_of_known_columns_are_each_created_or_reported(
            header in prop::sample::subsequence(COLUMNS.to_vec(), 1..COLUMNS.len()),
            rows in prop::collection::vec(prop::collection::vec(cell(), 12), 0..20),
        ) {
            let mut header: Vec<&str> = header;
            if !header.contains(&"email") {
                header.insert(0, "email");
            }
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(&header).unwrap();
            for row in &rows {
                let cells: Vec<&str> = (0..header.len()).map(|i| row[i % row.len()].as_str()).collect();
                writer.write_record(&cells).unwrap();
            }
            let csv = writer.into_inner().unwrap();
            let (result, report, errors, parsed) = run(&csv);
            prop_assert!(result.is_ok(), "{result:?}");
            // Every row is counted, and is either good or has at least one reported problem.
            prop_assert_eq!(report.rows as usize, rows.len());
            let bad_lines: std::collections::HashSet<u64> = errors.iter().map(|e| e.line).collect();
            prop_assert_eq!(parsed + bad_lines.len(), rows.len());
        }
    }
}
