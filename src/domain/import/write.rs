//! Writing an import: the transactions that insert its chunks, and how they commit as one.
//!
//! PostgreSQL inserts a statement's rows on one core, and most of an import's time is its
//! indexes' work there. So on PostgreSQL an import of more than one chunk is written by two
//! transactions on two connections, each taking the next chunk when it is free (100,000
//! invitation rows into a 1,000,000-user account: 1.3-1.4 s of the database's time instead of
//! 1.7-2.3 s, measured in psql on this machine's two cores).
//!
//! Nothing is committed unless both wrote everything they were given. Then the second commits
//! first, leaving a record of the users it created (`import_parts`), and the first commits
//! with the invitations, the activity record and the removal of that record. Between the two
//! commits (a few milliseconds) a reader may see the second part's users alone; if the first
//! never commits (the server stopped there), [`App::undo_unfinished_imports`] deletes them.
//!
//! What keeps two transactions of one call from waiting for each other, which PostgreSQL could
//! not see as a deadlock (each would wait for a commit that waits for the other):
//! - their rows never share a login: the parser refuses a file's duplicates before any insert;
//! - the imports of one account write one at a time (`store::imports::lock_account`);
//! - the account's shared users lock (migration 000016) is taken by the first before the
//!   second starts, and the second only takes it when no deletion is queued for it, else the
//!   first writes alone;
//! - the second waits for no lock longer than [`SECOND_PART_LOCK_WAIT_MS`].
//!
//! On SQLite (one writer) an import is one transaction.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::{Mutex, mpsc};

use super::{ImportError, ImportOptions, Row};
use crate::{
    domain::App,
    model::{Result, TenantId, User, UserId},
    store::{self, users::NewUser},
};

/// The longest lock wait of an import's second transaction. Its rows conflict with no writer of
/// the account but a single-user call committing at once, so a longer wait can only be a cycle
/// through the import's own first transaction: it fails the import instead of hanging it.
const SECOND_PART_LOCK_WAIT_MS: u32 = 5_000;

/// The parsed chunks of an import, taken in turn by its writing transactions.
pub(super) struct Intake {
    chunks: Mutex<mpsc::Receiver<Vec<Row>>>,
    options: ImportOptions,
    bad_row_seen: Arc<AtomicBool>,
    taken_seen: AtomicBool,
}

impl Intake {
    pub(super) fn new(
        chunks: mpsc::Receiver<Vec<Row>>,
        options: ImportOptions,
        bad_row_seen: Arc<AtomicBool>,
    ) -> Self {
        Self {
            chunks: Mutex::new(chunks),
            options,
            bad_row_seen,
            taken_seen: AtomicBool::new(false),
        }
    }

    /// The next chunk, or `None` once the parser is done.
    pub(super) async fn next(&self) -> Option<Vec<Row>> {
        self.chunks.lock().await.recv().await
    }

    /// Whether rows may still be written: not a dry run, and (unless bad rows are skipped) no
    /// bad row or taken login found so far, since then nothing will be.
    pub(super) fn may_write(&self) -> bool {
        !self.options.dry_run
            && (self.options.skip_invalid_rows
                || !(self.bad_row_seen.load(Ordering::Relaxed)
                    || self.taken_seen.load(Ordering::Relaxed)))
    }
}

/// What one writing transaction did: the users it created and the logins it found taken (by
/// line), and every good row it was given (to report taken logins if nothing is written).
#[derive(Default)]
pub(super) struct Written {
    pub tx: Option<store::Tx>,
    pub created: Vec<(u64, UserId)>,
    pub taken: Vec<ImportError>,
    pub good_rows: Vec<(u64, User)>,
}

/// An import's second transaction and the users it created.
pub(super) struct SecondPart {
    tx: store::Tx,
    user_ids: Vec<UserId>,
}

impl Written {
    fn with(tx: store::Tx) -> Self {
        Self {
            tx: Some(tx),
            ..Default::default()
        }
    }

    /// The transaction and the users created, if this wrote any (else its transaction, dropped,
    /// rolls back).
    pub(super) fn take_part(&mut self) -> Option<SecondPart> {
        let user_ids: Vec<UserId> = self.created.iter().map(|(_, id)| *id).collect();
        self.tx
            .take()
            .filter(|_| !user_ids.is_empty())
            .map(|tx| SecondPart { tx, user_ids })
    }

    /// Adds what `other` did, in line order.
    pub(super) fn merge(&mut self, other: Written) {
        self.created.extend(other.created);
        self.created.sort_unstable_by_key(|(line, _)| *line);
        self.taken.extend(other.taken);
        self.good_rows.extend(other.good_rows);
    }
}

impl App {
    /// Writes the chunks of `intake`, the first one given, on one transaction (two on PostgreSQL
    /// when more than one chunk may come); returns what the first and the second wrote.
    pub(super) async fn write_import(
        &self,
        tenant_id: TenantId,
        intake: &Intake,
        first: Option<Vec<Row>>,
        more_may_follow: bool,
    ) -> Result<(Written, Option<Written>)> {
        let mut primary = Written::default();
        let mut secondary = None;
        if first.is_some() && intake.may_write() {
            // The import commits its transactions itself, as one (`commit_import`).
            let tx = self.store.begin().await?;
            if self.store.is_postgres() {
                store::imports::lock_account(&tx, tenant_id).await?;
                // A second connection, if the pool leaves one for other calls meanwhile.
                if more_may_follow && self.store.max_connections() >= 3 {
                    store::users::lock_account_users(&tx, tenant_id, false).await?;
                    secondary = self.begin_second_part(tenant_id).await?.map(Written::with);
                }
            }
            primary.tx = Some(tx);
        }
        futures::try_join!(
            self.write_chunks(tenant_id, intake, primary, first),
            async {
                match secondary {
                    Some(written) => self
                        .write_chunks(tenant_id, intake, written, None)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            }
        )
    }

    /// The second transaction of an import, unless a deletion is queued for the account's users
    /// lock (it would wait behind it, and the deletion behind the first transaction).
    async fn begin_second_part(&self, tenant_id: TenantId) -> Result<Option<store::Tx>> {
        let tx = self.store.begin().await?;
        store::imports::limit_lock_waits(&tx, SECOND_PART_LOCK_WAIT_MS).await?;
        if store::imports::try_lock_users_shared(&tx, tenant_id).await? {
            Ok(Some(tx))
        } else {
            tracing::debug!(%tenant_id, "a deletion is waiting: the import is written by one transaction");
            Ok(None)
        }
    }

    /// Inserts chunks on `written`'s transaction while rows may be written (the rest only
    /// collected), starting with `first`, until the intake is empty.
    async fn write_chunks(
        &self,
        tenant_id: TenantId,
        intake: &Intake,
        mut written: Written,
        mut first: Option<Vec<Row>>,
    ) -> Result<Written> {
        loop {
            let chunk = match first.take() {
                Some(chunk) => chunk,
                None => match intake.next().await {
                    Some(chunk) => chunk,
                    None => return Ok(written),
                },
            };
            let Some(tx) = written.tx.as_ref().filter(|_| intake.may_write()) else {
                written
                    .good_rows
                    .extend(chunk.into_iter().map(|row| (row.line, row.user)));
                continue;
            };
            let (inserted, taken, users) = self.insert_chunk(tx, tenant_id, chunk).await?;
            written.created.extend(
                users
                    .iter()
                    .filter(|(_, user)| inserted.contains(&user.id))
                    .map(|(line, user)| (*line, user.id)),
            );
            if !taken.is_empty() {
                intake.taken_seen.store(true, Ordering::Relaxed);
            }
            written.taken.extend(taken);
            written.good_rows.extend(users);
        }
    }

    /// Inserts a chunk of good rows (hashing clear-text passwords, as many at once as the hasher
    /// allows). Returns the ids inserted, an error for each row whose login the database found
    /// taken (the unique indexes tell, as it inserts: one pass instead of a lookup and then an
    /// insert), and the rows' users, by line.
    async fn insert_chunk(
        &self,
        tx: &store::Tx,
        tenant_id: TenantId,
        rows: Vec<Row>,
    ) -> Result<(HashSet<UserId>, Vec<ImportError>, Vec<(u64, User)>)> {
        // Only rows with a clear-text password wait for the hasher (an invitation row has none).
        let hashes = futures::future::try_join_all(
            rows.iter()
                .filter_map(|row| row.password.as_ref())
                .map(|password| self.passwords.hash(password.expose())),
        )
        .await?;
        let mut hashes = hashes.into_iter();
        let mut lines = Vec::with_capacity(rows.len());
        let new_users: Vec<NewUser> = rows
            .into_iter()
            .map(|row| {
                lines.push(row.line);
                let password_hash = match row.password {
                    Some(_) => hashes.next(),
                    None => row.password_hash,
                };
                NewUser {
                    user: row.user,
                    password_hash,
                    secrets: Default::default(),
                }
            })
            .collect();
        let inserted = store::users::insert_many(tx, tenant_id, &new_users).await?;
        let users: Vec<(u64, User)> = lines
            .into_iter()
            .zip(new_users.into_iter().map(|new| new.user))
            .collect();
        if inserted.len() == users.len() {
            return Ok((inserted, Vec::new(), users));
        }
        let skipped: Vec<(u64, &User)> = users
            .iter()
            .filter(|(_, user)| !inserted.contains(&user.id))
            .map(|(line, user)| (*line, user))
            .collect();
        let taken = super::taken_logins(tx, tenant_id, &skipped).await?;
        let errors = skipped
            .iter()
            .map(|&(line, _)| {
                taken.get(&line).cloned().unwrap_or_else(|| ImportError {
                    line,
                    column: "email".into(),
                    message: "email is already taken in this account".into(),
                })
            })
            .collect();
        Ok((inserted, errors, users))
    }

    /// Commits an import's transactions as one (see the module's comment), after `finish` has
    /// written the rest of the import (its invitations, its activity record) on the first.
    ///
    /// The second part commits while `finish` runs, and without waiting for the database to
    /// flush its log: the first's commit, later in the log, waits for the flush of both (and
    /// the log written while `finish` ran is flushed meanwhile). So the answer comes only once
    /// both are durable; a crash before that loses the first, and the second is undone.
    pub(super) async fn commit_import(
        &self,
        tenant_id: TenantId,
        primary: store::Tx,
        second_part: Option<SecondPart>,
        now: chrono::DateTime<chrono::Utc>,
        finish: impl AsyncFnOnce(&store::Tx) -> Result<()>,
    ) -> Result<()> {
        let Some(second) = second_part else {
            finish(&primary).await?;
            return self.store.commit(primary).await;
        };
        let import_id = uuid::Uuid::now_v7();
        let (second_committed, finished) = futures::join!(
            async {
                store::imports::record_part(
                    &second.tx,
                    import_id,
                    1,
                    tenant_id,
                    &second.user_ids,
                    now,
                )
                .await?;
                store::imports::commit_without_waiting_for_flush(&second.tx).await?;
                self.store.commit(second.tx).await
            },
            finish(&primary),
        );
        // The second part failed: the first rolls back as it is dropped, and nothing is written
        // (or, if the failure was the answer to a commit that happened, the record stays for
        // the background pass, which can take the import lock once the first is gone).
        second_committed?;
        let first_committed = match finished {
            Ok(()) => {
                async {
                    store::imports::forget(&primary, import_id).await?;
                    self.store.commit(primary).await
                }
                .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = first_committed {
            tracing::error!(%tenant_id, %import_id, error = %err, "an import's first part failed after its second committed: undoing the second");
            if let Err(undo) = self.undo_unfinished_imports().await {
                tracing::warn!(error = %undo, "undoing an unfinished import failed: the background pass will retry");
            }
            return Err(err);
        }
        Ok(())
    }

    /// Deletes the users of import parts whose first part never committed (see the module's
    /// comment); returns how many. An account whose import lock is held is passed over: an
    /// import is writing there, perhaps the one the part belongs to.
    pub async fn undo_unfinished_imports(&self) -> Result<u64> {
        if !self.store.is_postgres() {
            return Ok(0);
        }
        let mut undone = 0;
        for tenant_id in store::imports::accounts_with_parts(self.store.db()).await? {
            let tx = self.change().await?;
            if !store::imports::try_lock_account(&tx, tenant_id).await? {
                continue;
            }
            for part in store::imports::take_parts(&tx, tenant_id).await? {
                let deleted = store::users::delete(&tx, tenant_id, &part.user_ids).await?;
                tracing::warn!(%tenant_id, import_id = %part.import_id, part = part.part, deleted, "an import stopped between its commits: the users of its second part were deleted");
                undone += deleted;
            }
            self.commit(tx).await?;
        }
        Ok(undone)
    }
}
