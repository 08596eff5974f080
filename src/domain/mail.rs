//! Outgoing mail: message templates, the transports (a folder of `.eml` files or SMTP through
//! lettre) and the background sender that drains the transactional outbox with retries.

use std::{path::PathBuf, sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Body, Mailbox,
        header::{ContentTransferEncoding, ContentType},
    },
    transport::smtp::authentication::Credentials,
};
use tokio::sync::{Notify, watch};

use crate::{
    model::{Clock, Error, Result},
    store::{self, Store, outbox::PendingMail},
};

/// Where mail goes.
#[derive(Clone)]
pub enum MailTransport {
    /// Each message becomes an RFC 5322 `.eml` file in this folder (development).
    Folder(PathBuf),
    /// An SMTP relay.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(dir) => write!(f, "Folder({})", dir.display()),
            Self::Smtp(_) => f.write_str("Smtp"),
        }
    }
}

impl MailTransport {
    /// Builds a transport from `file://DIR`, `smtp://[user:pass@]host[:port]` (plain, for local
    /// relays) or `smtps://...` (implicit TLS).
    pub fn from_url(url: &url::Url) -> std::result::Result<Self, String> {
        match url.scheme() {
            "file" => {
                // file://./mail is a relative folder; url puts "." in the host.
                let path = match url.host_str() {
                    Some(host) if !host.is_empty() => format!("{host}{}", url.path()),
                    _ => url.path().to_owned(),
                };
                Ok(Self::Folder(PathBuf::from(path)))
            }
            scheme @ ("smtp" | "smtps") => {
                let host = url.host_str().ok_or("an smtp URL needs a host")?;
                let mut builder = if scheme == "smtps" {
                    AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
                } else {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                };
                if let Some(port) = url.port() {
                    builder = builder.port(port);
                }
                if !url.username().is_empty() {
                    builder = builder.credentials(Credentials::new(
                        url.username().to_owned(),
                        url.password().unwrap_or_default().to_owned(),
                    ));
                }
                Ok(Self::Smtp(
                    builder.timeout(Some(Duration::from_secs(15))).build(),
                ))
            }
            other => Err(format!(
                "unsupported scheme {other:?} (use file:// or smtp://)"
            )),
        }
    }

    async fn send(&self, message: Message, id: uuid::Uuid) -> Result<()> {
        match self {
            Self::Folder(dir) => {
                // One trip to a blocking thread per message (three, with tokio::fs, made the
                // folder the slow end of a 100,000-invitation import).
                let dir = dir.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    let path = dir.join(format!("{id}.eml"));
                    let partial = dir.join(format!(".{id}.eml.partial"));
                    // Write then rename, so a reader never sees half a message.
                    std::fs::write(&partial, bytes)?;
                    std::fs::rename(&partial, &path)
                })
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)
            }
            Self::Smtp(transport) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(Error::internal),
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The activation email sent at sign-up and to users created with a password.
pub fn activation(to: &str, first_name: &str, account: &str, link: &str, valid_hours: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Activate your {account} account"),
        body: format!(
            "Hello {first_name},\r\n\r\nPlease confirm your email address to activate your account \
             {account}.\r\n\r\nActivate my account: {link}\r\n\r\nThe link is valid for {valid_hours} hours. \
             If you did not expect this message, ignore it.\r\n"
        ),
    }
}

/// The invitation email for users created without a password.
pub fn invitation(to: &str, first_name: &str, account: &str, link: &str, valid_hours: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("You are invited to {account}"),
        body: format!(
            "Hello {first_name},\r\n\r\nYou have been invited to join the account {account}. \
             Choose your password to complete your registration.\r\n\r\nConfirm: {link}\r\n\r\n\
             The link is valid for {valid_hours} hours.\r\n"
        ),
    }
}

/// The link that confirms a new address (the user's own change, or one an admin made).
pub fn email_confirmation(
    to: &str,
    first_name: &str,
    account: &str,
    link: &str,
    valid_hours: i64,
) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Confirm your email address for {account}"),
        body: format!(
            "Hello {first_name},\r\n\r\nPlease confirm that this is your email address for the \
             account {account}.\r\n\r\nConfirm my address: {link}\r\n\r\nThe link is valid for \
             {valid_hours} hours. If you did not expect this message, ignore it.\r\n"
        ),
    }
}

/// Tells the old address that the account's address is changing.
pub fn email_change_notice(
    to: &str,
    first_name: &str,
    account: &str,
    new_address: &str,
    waits_for_confirmation: bool,
) -> Mail {
    let when = if waits_for_confirmation {
        "once the new address confirms it"
    } else {
        "now (an administrator made the change)"
    };
    Mail {
        to: to.to_owned(),
        subject: format!("Your email address for {account} is changing"),
        body: format!(
            "Hello {first_name},\r\n\r\nThe email address of your account {account} changes to \
             {new_address} {when}.\r\n\r\nIf you did not ask for this, contact your account's \
             administrator at once.\r\n"
        ),
    }
}

/// The "forgot password" email.
pub fn password_reset(
    to: &str,
    first_name: &str,
    account: &str,
    link: &str,
    valid_minutes: i64,
) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Reset your {account} password"),
        body: format!(
            "Hello {first_name},\r\n\r\nSomeone asked to reset the password of your account \
             {account}. Choose a new password here: {link}\r\n\r\nThe link is valid for \
             {valid_minutes} minutes and works once. If you did not ask for it, ignore this \
             message: your password stays as it is.\r\n"
        ),
    }
}

/// Encodes a text body as 7bit (or 8bit when it is not ASCII) so that links stay intact in the
/// raw message; lettre's chooser would switch to quoted-printable above 76 characters a line,
/// while RFC 5322 allows 998.
fn plain_body(text: &str) -> std::result::Result<Body, String> {
    let normalised = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if normalised.split("\r\n").any(|line| line.len() > 998) {
        return Err("a body line is longer than 998 octets".into());
    }
    let encoding = if normalised.is_ascii() {
        ContentTransferEncoding::SevenBit
    } else {
        ContentTransferEncoding::EightBit
    };
    Ok(Body::dangerous_pre_encoded(
        normalised.into_bytes(),
        encoding,
    ))
}

/// Messages of one pass in flight at once.
const SENDS_AT_ONCE: usize = 8;

/// Sends queued mail until shutdown.
pub struct OutboxSender {
    pub store: Store,
    pub transport: MailTransport,
    pub from: Mailbox,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub max_attempts: i32,
}

impl OutboxSender {
    /// Runs until `shutdown` turns true, waking on `wake` or every second.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(err) = self.deliver_due(&shutdown).await {
                tracing::warn!(error = %err, "mail outbox pass failed");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Sends what is due, a batch at a time; stops after the batch in hand at shutdown (a large
    /// import queues 100,000 messages: the rest waits for the next start or another replica).
    async fn deliver_due(&self, shutdown: &watch::Receiver<bool>) -> Result<()> {
        let db = self.store.db();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let now = self.clock.now();
            let due = store::outbox::due(db, now, self.max_attempts, 200).await?;
            if due.is_empty() {
                return Ok(());
            }
            // One claim for the batch keeps other replicas off these messages while they are sent.
            let claimed =
                store::outbox::claim_many(db, &due, now, now + chrono::Duration::minutes(5))
                    .await?;
            // A few at a time: the folder's writes and SMTP's pooled connections overlap.
            let claimed: Vec<&PendingMail> = due
                .iter()
                .filter(|mail| claimed.contains(&mail.id))
                .collect();
            let mut outcomes = Vec::with_capacity(claimed.len());
            for group in claimed.chunks(SENDS_AT_ONCE) {
                let results =
                    futures::future::join_all(group.iter().map(|mail| self.deliver(mail))).await;
                outcomes.extend(group.iter().copied().zip(results));
            }
            let mut sent = Vec::with_capacity(outcomes.len());
            for (mail, outcome) in outcomes {
                match outcome {
                    Ok(()) => sent.push(mail.id),
                    Err(err) => self.failed(mail, &err).await?,
                }
            }
            store::outbox::mark_sent_many(db, &sent, self.clock.now()).await?;
            tracing::info!(sent = sent.len(), "mail sent");
        }
    }

    /// Builds and sends one message; the error says why it did not go.
    async fn deliver(&self, mail: &PendingMail) -> std::result::Result<(), String> {
        let message = self.build(mail)?;
        self.transport
            .send(message, mail.id)
            .await
            .map_err(|err| err.to_string())
    }

    async fn failed(&self, mail: &PendingMail, error: &str) -> Result<()> {
        let backoff = 2_i64
            .saturating_pow(mail.attempts.clamp(0, 12) as u32)
            .min(3600);
        let retry_at = self.clock.now() + chrono::Duration::seconds(backoff);
        tracing::warn!(mail_id = %mail.id, attempts = mail.attempts + 1, error, "mail delivery failed");
        store::outbox::mark_failed(self.store.db(), mail.id, error, retry_at).await
    }

    fn build(&self, mail: &PendingMail) -> std::result::Result<Message, String> {
        let to: Mailbox = mail
            .recipient
            .parse()
            .map_err(|e| format!("recipient: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(plain_body(&mail.body)?)
            .map_err(|e| e.to_string())
    }
}
