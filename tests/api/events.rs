//! EventService: the durable event feed, its cursors, retention, and the commits it orders.

use std::time::Duration;

use roster::api::pb::{self, event_service_client::EventServiceClient};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};

use crate::harness::{TestApp, authed, expect_bad_fields, expect_code, spawn_app, spawn_app_with};
use crate::roles::change_role;
use crate::teams::{add_members, team};
use crate::users_support::*;

fn events_client(app: &TestApp) -> EventServiceClient<Channel> {
    EventServiceClient::new(app.channel.clone())
}

/// Calls ListEvents.
async fn list_events(
    app: &TestApp,
    token: &str,
    after: &str,
    filter: Option<pb::EventFilter>,
    page_size: i32,
) -> Result<pb::ListEventsResponse, Status> {
    events_client(app)
        .list_events(authed(
            pb::ListEventsRequest {
                after: after.to_owned(),
                filter,
                page_size,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Every event of the account after `after`, a page of `page` at a time.
async fn all_events(app: &TestApp, token: &str, after: &str, page: i32) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let response = list_events(app, token, &cursor, None, page)
            .await
            .expect("ListEvents");
        events.extend(response.events);
        cursor = response.next_cursor;
        if !response.more {
            return events;
        }
    }
}

fn types(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

fn cursors(events: &[pb::Event]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event.cursor.parse().expect("a numeric cursor"))
        .collect()
}

/// Opens WatchEvents after `after`.
async fn watch(
    app: &TestApp,
    token: &str,
    after: &str,
    filter: Option<pb::EventFilter>,
) -> tonic::Streaming<pb::WatchEventsResponse> {
    events_client(app)
        .watch_events(authed(
            pb::WatchEventsRequest {
                after: after.to_owned(),
                filter,
            },
            token,
        ))
        .await
        .expect("WatchEvents")
        .into_inner()
}

/// The next `count` events of a watch (progress messages passed over), each within 10 s.
async fn next_events(
    stream: &mut tonic::Streaming<pb::WatchEventsResponse>,
    count: usize,
) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events came", events.len()))
            .expect("the stream goes on")
            .expect("a message");
        if let Some(event) = message.event {
            assert_eq!(message.cursor, event.cursor);
            events.push(event);
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_an_event_numbered_in_commit_order_and_resumable_from_any_cursor() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let other = org(&app, "Other", "olga@other.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let carol = member(&app, &acme, "carol@acme.test", &["REPORTS"]).await;
    update(
        &app,
        acme.token(),
        &bob.user_id,
        pb::User {
            first_name: "Robert".into(),
            ..Default::default()
        },
        &["first_name"],
    )
    .await
    .unwrap();
    deactivate(&app, acme.token(), &carol.user_id)
        .await
        .unwrap();
    reactivate(&app, acme.token(), &carol.user_id)
        .await
        .unwrap();
    change_role(
        &app,
        acme.token(),
        &bob.user_id,
        Some(&["ORDERS"]),
        None,
        None,
    )
    .await
    .unwrap();
    let support = team(&app, acme.token(), pb::TeamKind::Team, "Support").await;
    add_members(
        &app,
        acme.token(),
        &support.id,
        &[&bob.user_id, &carol.user_id],
        pb::TeamRole::Member,
    )
    .await
    .unwrap();
    bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: by_ids(&[&bob.user_id, &carol.user_id]),
            action: pb::BulkAction::Deactivate as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    delete(&app, acme.token(), &bob.user_id).await.unwrap();

    let events = all_events(&app, acme.token(), "", 3).await;
    assert_eq!(
        types(&events),
        [
            "user.created", // the owner, at sign-up
            "user.activated",
            "user.created",
            "user.activated",
            "user.created",
            "user.activated",
            "user.updated",
            "user.deactivated",
            "user.reactivated",
            "user.roles_changed",
            "team.member_added",
            "team.member_added",
            "user.deactivated",
            "user.deactivated",
            "user.deleted",
        ]
    );
    assert_eq!(cursors(&events), (1..=15).collect::<Vec<_>>(), "no gaps");
    let deleted = events.last().unwrap();
    assert_eq!(deleted.target_type, "user");
    assert_eq!(deleted.target_id, bob.user_id);
    assert_eq!(deleted.actor_user_id, acme.owner.user_id);
    assert_eq!(deleted.tenant_id, acme.account.tenant_id);
    assert!(deleted.occurred_at.is_some());
    let updated = &events[6];
    assert!(
        format!("{:?}", updated.fields).contains("first_name"),
        "{updated:?}"
    );
    let joined = &events[10];
    let team_id = joined.fields.as_ref().unwrap().fields["team_id"].clone();
    assert_eq!(
        team_id.kind,
        Some(prost_types::value::Kind::StringValue(support.id.clone()))
    );
    // The mass action's events name each user, like the single ones.
    let bulk_targets: Vec<&str> = events[12..14]
        .iter()
        .map(|e| e.target_id.as_str())
        .collect();
    assert!(bulk_targets.contains(&bob.user_id.as_str()));
    assert!(bulk_targets.contains(&carol.user_id.as_str()));
    // Never a secret in the feed.
    let text = format!("{events:?}");
    assert!(!text.contains(crate::harness::PASSWORD) && !text.contains("password_hash"));

    // Resuming after any cursor gives exactly the rest.
    for cut in [0usize, 1, 7, 14, 15] {
        let rest = all_events(&app, acme.token(), &cut.to_string(), 4).await;
        assert_eq!(cursors(&rest), ((cut as i64 + 1)..=15).collect::<Vec<_>>());
    }
    let end = list_events(&app, acme.token(), "15", None, 0)
        .await
        .unwrap();
    assert!(end.events.is_empty() && !end.more);
    assert_eq!(end.next_cursor, "15");

    // A filter narrows, and its next cursor still moves past what it passed over.
    let deletions = list_events(
        &app,
        acme.token(),
        "",
        Some(pb::EventFilter {
            types: vec!["user.deleted".into(), "team.*".into()],
            ..Default::default()
        }),
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        types(&deletions.events),
        ["team.member_added", "team.member_added", "user.deleted"]
    );
    assert_eq!(deletions.next_cursor, "15");
    let about_carol = list_events(
        &app,
        acme.token(),
        "",
        Some(pb::EventFilter {
            target_id: carol.user_id.clone(),
            ..Default::default()
        }),
        0,
    )
    .await
    .unwrap();
    assert!(
        about_carol
            .events
            .iter()
            .all(|e| e.target_id == carol.user_id)
    );
    assert_eq!(about_carol.events.len(), 6);

    // The other account has its own feed, numbered from 1, with none of Acme's events.
    let theirs = all_events(&app, other.token(), "", 50).await;
    assert_eq!(types(&theirs), ["user.created", "user.activated"]);
    assert!(
        theirs
            .iter()
            .all(|e| e.tenant_id == other.account.tenant_id)
    );
    let foreign = list_events(
        &app,
        other.token(),
        "",
        Some(pb::EventFilter {
            target_id: bob.user_id.clone(),
            ..Default::default()
        }),
        0,
    )
    .await
    .unwrap();
    assert!(foreign.events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_needs_events_read_and_names_bad_input() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let reports = member(&app, &acme, "rita@acme.test", &["REPORTS"]).await;
    let admin = member(&app, &acme, "adam@acme.test", &["ADMIN"]).await;
    expect_code(
        list_events(&app, &reports.access_token, "", None, 0).await,
        Code::PermissionDenied,
    );
    let refused = events_client(&app)
        .watch_events(authed(
            pb::WatchEventsRequest::default(),
            &reports.access_token,
        ))
        .await;
    expect_code(refused, Code::PermissionDenied);
    expect_code(
        list_events(&app, "not-a-token", "", None, 0).await,
        Code::Unauthenticated,
    );
    assert!(
        list_events(&app, &admin.access_token, "", None, 0)
            .await
            .is_ok()
    );

    expect_bad_fields(
        list_events(
            &app,
            acme.token(),
            "ten",
            Some(pb::EventFilter {
                types: vec!["user.exploded".into()],
                target_id: "nobody".into(),
            }),
            5000,
        )
        .await,
        &["after", "filter.types[0]", "filter.target_id", "page_size"],
    );
    expect_bad_fields(
        list_events(&app, acme.token(), "-1", None, 0).await,
        &["after"],
    );
    // A cursor beyond the end (another account's, say) is refused, never an empty page.
    expect_bad_fields(
        list_events(&app, acme.token(), "999999", None, 0).await,
        &["after"],
    );
    let too_many = pb::EventFilter {
        types: vec!["user.*".into(); 51],
        ..Default::default()
    };
    expect_bad_fields(
        list_events(&app, acme.token(), "", Some(too_many), 0).await,
        &["filter.types"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_replays_then_goes_live_and_a_consumer_back_after_a_restart_misses_nothing() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    // 4 events so far; watch after the 2nd: the replay is the 3rd and 4th, then live.
    let mut stream = watch(&app, acme.token(), "2", None).await;
    let replayed = next_events(&mut stream, 2).await;
    assert_eq!(cursors(&replayed), [3, 4]);
    deactivate(&app, acme.token(), &bob.user_id).await.unwrap();
    let live = next_events(&mut stream, 1).await;
    assert_eq!(types(&live), ["user.deactivated"]);
    assert_eq!(cursors(&live), [5]);
    drop(stream);

    // While the consumer is away, changes go on; then roster restarts too.
    reactivate(&app, acme.token(), &bob.user_id).await.unwrap();
    delete(&app, acme.token(), &bob.user_id).await.unwrap();
    let app = app.restart().await;
    let acme = Org {
        owner: login(&app, &acme, &acme.owner.email, &acme.owner.password).await,
        ..acme
    };
    let mut stream = watch(&app, acme.token(), "5", None).await;
    let missed = next_events(&mut stream, 2).await;
    assert_eq!(types(&missed), ["user.reactivated", "user.deleted"]);
    assert_eq!(cursors(&missed), [6, 7]);
    // The new owner login is no event; a new user is, live on the resumed watch.
    pending(&app, acme.token(), "dave@acme.test", &["REPORTS"]).await;
    let live = next_events(&mut stream, 1).await;
    assert_eq!(types(&live), ["user.created"]);
    assert_eq!(cursors(&live), [8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_watch_reports_progress_past_what_it_passes_over() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let mut stream = watch(
        &app,
        acme.token(),
        "",
        Some(pb::EventFilter {
            types: vec!["user.deleted".into()],
            ..Default::default()
        }),
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message")
        .unwrap()
        .unwrap();
    assert!(first.event.is_none(), "{first:?}");
    assert_eq!(first.cursor, "4");
    delete(&app, acme.token(), &bob.user_id).await.unwrap();
    let deleted = next_events(&mut stream, 1).await;
    assert_eq!(types(&deleted), ["user.deleted"]);
    assert_eq!(deleted[0].target_id, bob.user_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_reach_a_watcher_each_exactly_once_and_in_cursor_order() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut stream = watch(&app, acme.token(), "2", None).await;
    let creations = (0..24).map(|i| {
        let app = &app;
        let token = acme.token().to_owned();
        async move {
            pending(app, &token, &format!("user{i}@acme.test"), &["REPORTS"]).await;
        }
    });
    futures::future::join_all(creations).await;
    let created = next_events(&mut stream, 24).await;
    assert_eq!(cursors(&created), (3..=26).collect::<Vec<_>>());
    let mut targets: Vec<&str> = created.iter().map(|e| e.target_id.as_str()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 24, "one event per user");
    // Nothing more: no event came twice.
    let extra = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(extra.is_err(), "unexpected {extra:?}");
    assert_eq!(all_events(&app, acme.token(), "", 100).await.len(), 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_answer_out_of_range_with_the_oldest_cursor() {
    let app = spawn_app_with(&[("event-retention", "1h")]).await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    app.clock.advance(Duration::from_secs(2 * 3600));
    let acme = Org {
        owner: login(&app, &acme, &acme.owner.email, &acme.owner.password).await,
        ..acme
    };
    pending(&app, acme.token(), "carol@acme.test", &["REPORTS"]).await;
    // The pass that deletes expired events runs at start.
    let app = app.restart().await;
    let acme = Org {
        owner: login(&app, &acme, &acme.owner.email, &acme.owner.password).await,
        ..acme
    };
    let expired = expect_code(
        list_events(&app, acme.token(), "1", None, 0).await,
        Code::OutOfRange,
    );
    let details = tonic_types::StatusExt::get_error_details(&expired);
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    assert_eq!(info.metadata["oldest_cursor"], "4");
    let watch_refused = events_client(&app)
        .watch_events(authed(
            pb::WatchEventsRequest {
                after: "0".into(),
                ..Default::default()
            },
            acme.token(),
        ))
        .await;
    expect_code(watch_refused, Code::OutOfRange);
    // From the oldest kept (or with no cursor), the feed goes on.
    let kept = all_events(&app, acme.token(), "4", 10).await;
    assert_eq!(cursors(&kept), [5]);
    assert_eq!(all_events(&app, acme.token(), "", 10).await, kept);
}

/// The classic trap of sequence-numbered feeds: a transaction takes number 10, a later one takes
/// 11 and commits first, a consumer reads 11 and resumes after it, and 10 is never seen. Here a
/// transaction of our own takes the account's next number exactly as roster's changes do and
/// stays open; a change made through the API meanwhile cannot commit ahead of it, a reader sees
/// neither, and once the first commits the reader sees both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_change_cannot_commit_its_events_ahead_of_an_earlier_one() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
    let app = spawn_app().await;
    if !app.postgres {
        // SQLite has one writer: transactions cannot overlap at all.
        return;
    }
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let bob = member(&app, &acme, "bob@acme.test", &["REPORTS"]).await;
    let head: i64 = 4;
    let db = app.database().await;
    let early = db.begin().await.unwrap();
    let tenant = uuid::Uuid::parse_str(&acme.account.tenant_id).unwrap();
    let row = early
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE event_counters SET last_seq = last_seq + 1 WHERE tenant_id = $1 RETURNING last_seq",
            [tenant.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    let taken: i64 = row.try_get("", "last_seq").unwrap();
    assert_eq!(taken, head + 1);
    early
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO events (tenant_id, seq, id, event_type, target_type, target_id, \
             actor_user_id, fields, created_at) VALUES ($1, $2, $3, 'user.updated', 'user', $4, \
             NULL, '{\"fields\": [\"probe\"]}', now())",
            [
                tenant.into(),
                taken.into(),
                uuid::Uuid::now_v7().into(),
                uuid::Uuid::parse_str(&bob.user_id).unwrap().into(),
            ],
        ))
        .await
        .unwrap();

    let later = {
        let app_token = acme.token().to_owned();
        let bob = bob.user_id.clone();
        let channel = app.channel.clone();
        tokio::spawn(async move {
            roster::api::pb::user_service_client::UserServiceClient::new(channel)
                .deactivate_user(authed(
                    pb::DeactivateUserRequest { user_id: bob },
                    &app_token,
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !later.is_finished(),
        "the later change committed ahead of the open one"
    );
    let meanwhile = list_events(&app, acme.token(), &head.to_string(), None, 0)
        .await
        .unwrap();
    assert!(meanwhile.events.is_empty(), "{meanwhile:?}");
    assert_eq!(
        meanwhile.next_cursor,
        head.to_string(),
        "the reader stays put"
    );

    early.commit().await.unwrap();
    later
        .await
        .unwrap()
        .expect("the later change commits after the early one");
    let after = all_events(&app, acme.token(), &head.to_string(), 10).await;
    assert_eq!(cursors(&after), [head + 1, head + 2]);
    assert_eq!(types(&after), ["user.updated", "user.deactivated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_receives_the_changes_committed_on_another() {
    let app = spawn_app().await;
    if !app.postgres {
        // Replicas share a PostgreSQL database.
        return;
    }
    let replica = app.replica().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut stream = watch(&replica, acme.token(), "", None).await;
    assert_eq!(cursors(&next_events(&mut stream, 2).await), [1, 2]);
    let started = std::time::Instant::now();
    pending(&app, acme.token(), "bob@acme.test", &["REPORTS"]).await;
    let live = next_events(&mut stream, 1).await;
    assert_eq!(types(&live), ["user.created"]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_and_a_mass_deletion_write_one_event_per_user() {
    let app = spawn_app().await;
    let acme = org(&app, "Acme", "ann@acme.test").await;
    let mut csv = String::from("email,first_name,last_name,roles\n");
    for i in 0..30 {
        csv.push_str(&format!("agent{i}@acme.test,Agent,Number{i},REPORTS\n"));
    }
    let report = import(&app, acme.token(), &csv, 256, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.created, 30);
    let events = all_events(&app, acme.token(), "2", 1000).await;
    assert_eq!(events.len(), 30);
    assert!(
        events
            .iter()
            .all(|e| e.r#type == "user.created" && format!("{:?}", e.fields).contains("imported"))
    );
    let deleted = bulk(
        &app,
        acme.token(),
        pb::BulkUpdateUsersRequest {
            selection: all_users(),
            action: pb::BulkAction::Delete as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(deleted.affected, 30, "all but the owner");
    let deletions = all_events(&app, acme.token(), "32", 1000).await;
    assert_eq!(deletions.len(), 30);
    let mut targets: Vec<&str> = deletions.iter().map(|e| e.target_id.as_str()).collect();
    targets.sort();
    let mut created: Vec<&str> = events.iter().map(|e| e.target_id.as_str()).collect();
    created.sort();
    assert_eq!(targets, created);
    assert!(deletions.iter().all(|e| e.r#type == "user.deleted"));
}
