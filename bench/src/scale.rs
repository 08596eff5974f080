//! The large-account part of `roster-bench` (`--users N`): seeds an account through ImportUsers,
//! then times what the UserService issue asks for at that size: GetUser and a deep ListUsers page
//! (driven like the other RPCs, see [`super::Rpc`]), importing invitation rows, and deactivating
//! users by a filter, with their sessions refused on the next call.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tonic::{Request, transport::Channel};

use crate::run::{Fixture, PASSWORD};
use roster::{
    api::pb::{
        self, auth_service_client::AuthServiceClient, event_service_client::EventServiceClient,
        user_service_client::UserServiceClient,
    },
    domain::passwords::hash_blocking,
};

/// Rows per ImportUsers call while seeding.
const SEED_BATCH: u64 = 100_000;
/// Bytes per message of an ImportUsers stream.
const CHUNK_BYTES: usize = 1 << 20;
/// Users whose ids GetUser cycles through: the users an account's admins keep looking at. The
/// cache resists scans (a user read once does not push out users read often), so a set read
/// only once per measurement would measure the database, not the cache.
const WORKING_SET: usize = 2_000;
/// Users of the deactivated group who log in first, to check that their sessions end.
const SIGNED_IN: usize = 8;
/// The role of the group the bench deactivates by a filter.
const GROUP_ROLE: &str = "FINANCE";

/// What the scale part prepared and timed before the driven RPCs.
pub struct Prepared {
    /// GetUser cycles through these.
    pub user_ids: Vec<String>,
    /// A page token deep in the account's default listing.
    pub deep_page_token: String,
    /// Where the deep page starts (users before it).
    pub deep_position: u64,
    pub seeded: u64,
    pub seed_time: Duration,
    /// One pass of GetUser over the working set, each user read for the first time.
    pub first_reads: (u64, Duration),
    /// Tokens of users of the group, to check after the deactivation.
    signed_in: Vec<String>,
    /// Users the deactivation by the group's role selects.
    pub group_size: u64,
}

/// Timings of the one-shot operations.
pub struct Timed {
    pub deactivated: i64,
    pub deactivate_time: Duration,
    pub sessions_refused: (usize, usize),
    pub invited: i64,
    pub invite_time: Duration,
    /// From the import's answer until the file sink held a message for every invited user
    /// (they are made in the background); `None` when they did not all come within 5 minutes.
    pub invitations_written: Option<Duration>,
    /// From the deactivation's answer until a consumer watching the event feed had received
    /// its `user.deactivated` event for every deactivated user; `None`: not within a minute.
    pub events_received: Option<Duration>,
}

/// Opens a watch of the account's `user.deactivated` events from the end of the feed; the task
/// answers when it has received `expected` of them (or fails after `within`).
async fn watch_deactivations(
    channel: &Channel,
    fixture: &Fixture,
    expected: u64,
    within: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<Option<Instant>>> {
    let filter = || pb::EventFilter {
        types: vec!["user.deactivated".into()],
        ..Default::default()
    };
    let mut events = EventServiceClient::new(channel.clone());
    let end = events
        .list_events(authed(
            pb::ListEventsRequest {
                after: String::new(),
                filter: Some(filter()),
                page_size: 1000,
            },
            fixture,
        ))
        .await
        .context("ListEvents")?
        .into_inner()
        .next_cursor;
    let mut stream = events
        .watch_events(authed(
            pb::WatchEventsRequest {
                after: end,
                filter: Some(filter()),
            },
            fixture,
        ))
        .await
        .context("WatchEvents")?
        .into_inner();
    Ok(tokio::spawn(async move {
        let deadline = Instant::now() + within;
        let mut received = 0;
        while received < expected {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, stream.message()).await {
                Ok(Ok(Some(message))) => received += u64::from(message.event.is_some()),
                _ => return None,
            }
        }
        Some(Instant::now())
    }))
}

fn users(channel: &Channel) -> UserServiceClient<Channel> {
    UserServiceClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// `message` with the fixture's access token.
pub(super) fn authed<T>(message: T, fixture: &Fixture) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", fixture.bearer.clone());
    request
}

/// Imports `csv` in one ImportUsers call; the users created and the time the call took.
async fn import(
    channel: &Channel,
    fixture: &Fixture,
    csv: Vec<u8>,
    suppress_emails: bool,
) -> anyhow::Result<(i64, Duration)> {
    let messages: Vec<pb::ImportUsersRequest> = csv
        .chunks(CHUNK_BYTES)
        .map(|chunk| pb::ImportUsersRequest {
            suppress_emails,
            csv_chunk: chunk.to_vec(),
            ..Default::default()
        })
        .collect();
    let started = Instant::now();
    let report = users(channel)
        .import_users(authed(tokio_stream::iter(messages), fixture))
        .await
        .context("ImportUsers")?
        .into_inner();
    let took = started.elapsed();
    if report.invalid > 0 {
        bail!("ImportUsers refused rows: {:?}", report.errors.first());
    }
    Ok((report.created, took))
}

fn email(index: u64) -> String {
    format!("u{index:07}@scale.test")
}

/// Seeds `count` users (the first `group` of them with [`GROUP_ROLE`]) as a migration would: with
/// an argon2 hash each and no mail, and then a few more of the group who log in.
pub async fn prepare(
    channel: &Channel,
    fixture: &Fixture,
    count: u64,
    group: u64,
) -> anyhow::Result<Prepared> {
    let params = argon2::Params::new(64, 1, 1, None).map_err(|err| anyhow::anyhow!("{err}"))?;
    let hash = hash_blocking(&params, PASSWORD)?;
    let mut seeded = 0;
    let mut seed_time = Duration::ZERO;
    let mut next = 0u64;
    while next < count {
        let end = (next + SEED_BATCH).min(count);
        let mut csv = String::from("email,first_name,last_name,roles,password_hash\n");
        for index in next..end {
            let role = if index < group { GROUP_ROLE } else { "REPORTS" };
            csv.push_str(&format!(
                "{},First{index},Last{index},{role},\"{hash}\"\n",
                email(index)
            ));
        }
        let (created, took) = import(channel, fixture, csv.into_bytes(), true).await?;
        seeded += created as u64;
        seed_time += took;
        eprintln!(
            "bench: seeded {seeded} of {count} users ({:.1} s for the last {})",
            took.as_secs_f64(),
            end - next
        );
        next = end;
    }

    // The working set of GetUser: the first users of the default listing.
    let mut client = users(channel);
    let mut user_ids = Vec::with_capacity(WORKING_SET);
    let mut page_token = String::new();
    while user_ids.len() < WORKING_SET {
        let page = client
            .list_users(authed(
                pb::ListUsersRequest {
                    page_size: (WORKING_SET - user_ids.len()).min(1000) as i32,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                fixture,
            ))
            .await
            .context("ListUsers")?
            .into_inner();
        user_ids.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    // A page deep in the listing starts after a user found by email.
    let deep_position = count * 9 / 10;
    let deep_user = client
        .list_users(authed(
            pb::ListUsersRequest {
                filter: Some(pb::UserFilter {
                    query: email(deep_position),
                    ..Default::default()
                }),
                page_size: 1,
                ..Default::default()
            },
            fixture,
        ))
        .await
        .context("ListUsers by email")?
        .into_inner()
        .users
        .pop()
        .context("the deep user was not found")?;
    let deep_page_token = roster::api::default_listing_token_after(&deep_user.id)?;

    // Each user of the working set read once: none of them is cached yet.
    let started = Instant::now();
    let reads =
        futures::future::try_join_all(user_ids.chunks(user_ids.len().div_ceil(64).max(1)).map(
            |ids| {
                let mut client = client.clone();
                async move {
                    for id in ids {
                        client
                            .get_user(authed(
                                pb::GetUserRequest {
                                    user_id: id.clone(),
                                },
                                fixture,
                            ))
                            .await?;
                    }
                    Ok::<_, tonic::Status>(ids.len() as u64)
                }
            },
        ))
        .await
        .context("GetUser")?;
    let first_reads = (reads.iter().sum(), started.elapsed());

    // A few more users of the group, created, activated and logged in, to check that the
    // deactivation ends their sessions.
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut signed_in = Vec::new();
    for index in 0..SIGNED_IN {
        let email = format!("s{index}@signed-in.test");
        let created = client
            .create_user(authed(
                pb::CreateUserRequest {
                    email: email.clone(),
                    first_name: "Signed".into(),
                    last_name: format!("In{index}"),
                    roles: vec![GROUP_ROLE.into()],
                    password: PASSWORD.into(),
                    return_activation_token: true,
                    ..Default::default()
                },
                fixture,
            ))
            .await
            .context("CreateUser")?
            .into_inner();
        auth.activate_account(pb::ActivateAccountRequest {
            token: created.activation_token,
            password: String::new(),
        })
        .await
        .context("ActivateAccount")?;
        let session = auth
            .login(pb::LoginRequest {
                tenant: fixture.login.tenant.clone(),
                login: email,
                password: PASSWORD.into(),
            })
            .await
            .context("Login of a group user")?
            .into_inner();
        signed_in.push(session.access_token);
    }
    Ok(Prepared {
        user_ids,
        deep_page_token,
        deep_position,
        seeded,
        seed_time,
        first_reads,
        group_size: group + signed_in.len() as u64,
        signed_in,
    })
}

/// Deactivates the group by a role filter and imports `invitations` invitation rows (their
/// emails queued), timing each; checks that the group's sessions are refused.
pub async fn timed(
    channel: &Channel,
    fixture: &Fixture,
    prepared: &Prepared,
    invitations: u64,
    mail_dir: &Path,
) -> anyhow::Result<Timed> {
    let watcher = watch_deactivations(
        channel,
        fixture,
        prepared.group_size,
        Duration::from_secs(120),
    )
    .await?;
    let started = Instant::now();
    let outcome = users(channel)
        .bulk_update_users(authed(
            pb::BulkUpdateUsersRequest {
                selection: Some(pb::bulk_update_users_request::Selection::Filter(
                    pb::UserFilter {
                        roles: vec![GROUP_ROLE.into()],
                        ..Default::default()
                    },
                )),
                action: pb::BulkAction::Deactivate as i32,
                ..Default::default()
            },
            fixture,
        ))
        .await
        .context("BulkUpdateUsers")?
        .into_inner();
    let deactivate_time = started.elapsed();
    let answered = Instant::now();
    let events_received = watcher
        .await
        .ok()
        .flatten()
        .map(|done| done.saturating_duration_since(answered));
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut refused = 0;
    for token in &prepared.signed_in {
        let mut request = Request::new(pb::WhoAmIRequest {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        if auth.who_am_i(request).await.is_err() {
            refused += 1;
        }
    }

    let mut csv = String::from("email,first_name,last_name,roles\n");
    for index in 0..invitations {
        csv.push_str(&format!(
            "i{index:07}@invited.test,Invited{index},Person{index},REPORTS\n"
        ));
    }
    let messages_before = count_messages(mail_dir);
    let (invited, invite_time) = import(channel, fixture, csv.into_bytes(), false).await?;
    let answered = Instant::now();
    let mut invitations_written = None;
    while answered.elapsed() < Duration::from_secs(300) {
        if count_messages(mail_dir) >= messages_before + invited as usize {
            invitations_written = Some(answered.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Timed {
        deactivated: outcome.affected,
        deactivate_time,
        sessions_refused: (refused, prepared.signed_in.len()),
        invited,
        invite_time,
        invitations_written,
        events_received,
    })
}

/// The messages the file sink has written to `mail_dir`.
fn count_messages(mail_dir: &Path) -> usize {
    std::fs::read_dir(mail_dir).map_or(0, |entries| {
        entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
            .count()
    })
}

/// The seeding and one-shot lines of the report.
pub fn render(prepared: &Prepared, timed: Option<&Timed>) -> String {
    let mut out = String::new();
    let rate = |count: f64, took: Duration| count / took.as_secs_f64().max(1e-9);
    out.push_str(&format!(
        "large account: {} users seeded by ImportUsers (argon2 hashes, no mail) in {:.1} s, {:.0} rows/s\n",
        prepared.seeded,
        prepared.seed_time.as_secs_f64(),
        rate(prepared.seeded as f64, prepared.seed_time)
    ));
    let (reads, took) = prepared.first_reads;
    out.push_str(&format!(
        "GetUser, first read of each of {reads} users (not cached): {:.0} calls/s\n",
        rate(reads as f64, took)
    ));
    out.push_str(&format!(
        "GetUser below cycles through the same {reads} users (cached until a write)\n"
    ));
    if let Some(timed) = timed {
        out.push_str(&format!(
            "BulkUpdateUsers DEACTIVATE by a role filter: {} users in {:.2} s; sessions refused after it: {} of {}\n",
            timed.deactivated,
            timed.deactivate_time.as_secs_f64(),
            timed.sessions_refused.0,
            timed.sessions_refused.1
        ));
        out.push_str(&format!(
            "  its {} user.deactivated events, written in the change: {:.0} events/s; a watching consumer had them all {}\n",
            timed.deactivated,
            rate(timed.deactivated as f64, timed.deactivate_time),
            timed.events_received.map_or("not within 2 minutes".to_owned(), |took| format!(
                "{:.2} s after the answer",
                took.as_secs_f64()
            ))
        ));
        out.push_str(&format!(
            "ImportUsers of invitation rows (emails queued): {} users in {:.2} s\n",
            timed.invited,
            timed.invite_time.as_secs_f64()
        ));
        out.push_str(&match timed.invitations_written {
            Some(took) => format!(
                "  their tokens and messages, made in the background and written by the file sink: {:.1} s after the answer\n",
                took.as_secs_f64()
            ),
            None => "  their tokens and messages: not all written within 5 minutes of the answer\n"
                .to_owned(),
        });
    }
    out
}

/// The one-shot targets: met, the target, the value.
pub fn targets(
    timed: &Timed,
    invitations: u64,
    deactivate: u64,
) -> Vec<(Option<bool>, String, String)> {
    let seconds = |took: Duration| format!("{:.2} s", took.as_secs_f64());
    vec![
        (
            Some(
                timed.invite_time <= Duration::from_secs(2) && timed.invited as u64 == invitations,
            ),
            format!("import {invitations} invitation rows <= 2 s"),
            seconds(timed.invite_time),
        ),
        (
            Some(
                timed.deactivate_time <= Duration::from_secs(2)
                    && timed.deactivated as u64 >= deactivate
                    && timed.sessions_refused.0 == timed.sessions_refused.1,
            ),
            format!("deactivate {deactivate} users by a filter <= 2 s"),
            seconds(timed.deactivate_time),
        ),
        (
            Some(
                timed
                    .events_received
                    .is_some_and(|took| took <= Duration::from_secs(5)),
            ),
            format!("a watcher has the {deactivate} events <= 5 s after the answer"),
            timed.events_received.map_or("missing".to_owned(), seconds),
        ),
    ]
}

/// Calls of each search measured (after a few unmeasured ones).
const SEARCH_CALLS: usize = 15;
/// Users deactivated one by one, for the status filter with few matches.
const INACTIVE_USERS: usize = 5;

/// One search of the large account: what, its median latency without and with the total count,
/// the matches it found, and its target.
pub struct Search {
    pub what: String,
    pub p50: Duration,
    pub p50_counted: Duration,
    pub found: usize,
    pub total: i64,
    pub target: Duration,
}

/// The searches' baseline: a primary-key GetUser's median, measured the same way.
pub struct Searches {
    pub get_user_p50: Duration,
    pub searches: Vec<Search>,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Times the searches of the search issue on the seeded account (before its mass deactivation,
/// so that few users are inactive), one call at a time, and GetUser by id as the
/// baseline.
pub async fn searches(
    channel: &Channel,
    fixture: &Fixture,
    prepared: &Prepared,
) -> anyhow::Result<Searches> {
    let mut client = users(channel);
    let mut auth = AuthServiceClient::new(channel.clone());
    for index in 0..INACTIVE_USERS {
        let created = client
            .create_user(authed(
                pb::CreateUserRequest {
                    email: format!("d{index}@inactive.test"),
                    first_name: "Inactive".into(),
                    last_name: format!("Person{index}"),
                    roles: vec!["REPORTS".into()],
                    password: PASSWORD.into(),
                    return_activation_token: true,
                    ..Default::default()
                },
                fixture,
            ))
            .await
            .context("CreateUser (to deactivate)")?
            .into_inner();
        auth.activate_account(pb::ActivateAccountRequest {
            token: created.activation_token,
            password: String::new(),
        })
        .await
        .context("ActivateAccount")?;
        client
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    user_id: created.user.context("the created user")?.id,
                },
                fixture,
            ))
            .await
            .context("DeactivateUser")?;
    }
    // A user in the middle of the account whose number has six digits: its last name is the
    // only one containing "ast<k>" while the account has fewer than 10k users more.
    let k = (prepared.seeded / 2).clamp(100_000, 999_999);
    let exact = email(k);
    let stem = &k.to_string()[..5];
    use pb::MatchMode::{Contains, Exact, Prefix};
    let text = |query: &str, mode: pb::MatchMode| pb::UserFilter {
        query: query.to_owned(),
        match_mode: mode as i32,
        ..Default::default()
    };
    let cases = [
        (
            format!("exact email, contains mode ({exact})"),
            text(&exact, Contains),
            5,
        ),
        (
            format!("exact email, exact mode ({exact})"),
            text(&exact, Exact),
            5,
        ),
        (
            format!("contains, one match (ast{k})"),
            text(&format!("ast{k}"), Contains),
            50,
        ),
        (
            "contains, no match (zqxj)".to_owned(),
            text("zqxj", Contains),
            50,
        ),
        (
            format!("prefix (last{stem}, 11 matches)"),
            text(&format!("last{stem}"), Prefix),
            20,
        ),
        (
            format!("status INACTIVE ({INACTIVE_USERS} matches)"),
            pb::UserFilter {
                statuses: vec![pb::UserStatus::Inactive as i32],
                ..Default::default()
            },
            10,
        ),
    ];
    let ids: Vec<String> = prepared
        .user_ids
        .iter()
        .take(SEARCH_CALLS + 3)
        .cloned()
        .collect();
    let mut samples = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let started = Instant::now();
        client
            .get_user(authed(
                pb::GetUserRequest {
                    user_id: id.clone(),
                },
                fixture,
            ))
            .await
            .context("GetUser")?;
        if i >= 3 {
            samples.push(started.elapsed());
        }
    }
    let get_user_p50 = median(samples);
    let mut searches = Vec::new();
    for (what, filter, target_ms) in cases {
        let mut timings = [Vec::new(), Vec::new()];
        let (mut found, mut total) = (0, 0);
        for i in 0..SEARCH_CALLS + 3 {
            for (counted, timing) in timings.iter_mut().enumerate() {
                let started = Instant::now();
                let page = client
                    .list_users(authed(
                        pb::ListUsersRequest {
                            filter: Some(filter.clone()),
                            page_size: 50,
                            include_total_size: counted == 1,
                            ..Default::default()
                        },
                        fixture,
                    ))
                    .await
                    .with_context(|| format!("ListUsers, {what}"))?
                    .into_inner();
                if i >= 3 {
                    timing.push(started.elapsed());
                }
                found = page.users.len();
                if counted == 1 {
                    total = page.total_size;
                }
            }
        }
        let [plain, counted] = timings;
        searches.push(Search {
            what,
            p50: median(plain),
            p50_counted: median(counted),
            found,
            total,
            target: Duration::from_millis(target_ms),
        });
    }
    Ok(Searches {
        get_user_p50,
        searches,
    })
}

/// The searches' lines of the report.
pub fn render_searches(searches: &Searches) -> String {
    let ms = |took: Duration| took.as_secs_f64() * 1e3;
    let base = ms(searches.get_user_p50).max(1e-6);
    let mut out = format!(
        "searches, one call at a time, median of {SEARCH_CALLS} (baseline GetUser by id: {:.2} ms)\n",
        ms(searches.get_user_p50)
    );
    for search in &searches.searches {
        out.push_str(&format!(
            "  ListUsers {:<52} {:>8.2} ms ({:>6.1}x GetUser)  with total_size {:>8.2} ms ({:.2}x)  found {} of {}\n",
            search.what,
            ms(search.p50),
            ms(search.p50) / base,
            ms(search.p50_counted),
            ms(search.p50_counted) / ms(search.p50).max(1e-6),
            search.found,
            search.total
        ));
    }
    out
}

/// The searches' targets: met, the target, the value.
pub fn search_targets(searches: &Searches) -> Vec<(Option<bool>, String, String)> {
    let ms = |took: Duration| took.as_secs_f64() * 1e3;
    let mut lines = Vec::new();
    for search in &searches.searches {
        lines.push((
            Some(search.p50 <= search.target),
            format!("{} <= {} ms", search.what, search.target.as_millis()),
            format!("{:.2} ms", ms(search.p50)),
        ));
        let ratio = ms(search.p50_counted) / ms(search.p50).max(1e-6);
        lines.push((
            Some(ratio <= 2.0),
            "  the same with include_total_size <= 2x".to_owned(),
            format!("{ratio:.2}x"),
        ));
    }
    lines
}
