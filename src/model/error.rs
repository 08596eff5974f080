use std::fmt;

/// The result type of the domain and the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One bad field of a request, with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, e.g. `email` or `profile.timezone`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything that can go wrong in roster, mapped once to a gRPC status by the api layer.
/// `reason` values are stable, machine-readable codes (`google.rpc.ErrorInfo.reason`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: one entry per offending field.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist in the caller's account (or belongs to another one).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique value is taken.
    #[error("{}: {}", .0.field, .0.description)]
    AlreadyExists(FieldViolation),
    /// The target is not in a state that allows the operation.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    /// The caller is known but not allowed.
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    /// The caller is not (or no longer) authenticated.
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// A limit was reached.
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        /// When trying again may succeed (sent as google.rpc.RetryInfo).
        retry_after: Option<std::time::Duration>,
    },
    /// A position outside what exists (an event cursor older than the retained events);
    /// `metadata` tells the client where it may resume.
    #[error("{message}")]
    OutOfRange {
        reason: &'static str,
        message: String,
        metadata: Vec<(&'static str, String)>,
    },
    /// The change met a concurrent one and was undone (the database broke a deadlock); the same
    /// call may be made again.
    #[error("aborted by a concurrent change: {0}")]
    Aborted(String),
    /// A dependency (the database) cannot be reached.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the cause, with its whole chain of sources, is logged,
    /// never returned.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// A taken unique value.
    pub fn already_exists(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::AlreadyExists(FieldViolation::new(field, description))
    }

    /// A refused state transition.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    /// A refused action.
    pub fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            reason,
            message: message.into(),
        }
    }

    /// A refused identity.
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    /// The caller's own user is gone (deleted by another call, maybe on another replica whose
    /// revocation has not arrived yet): their token no longer names anyone, so it is refused
    /// as a revoked one would be, never answered NOT_FOUND.
    pub fn caller_gone() -> Self {
        Self::unauthenticated("TOKEN_REVOKED", "the access token has been revoked")
    }

    /// An unexpected failure described by `cause`.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::Internal(cause.to_string().into())
    }

    /// An unexpected failure caused by `source`, kept with its chain for the log.
    pub fn internal_from(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(source))
    }

    /// This error and every source below it, outermost first: "a: b: c".
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            // thiserror's "{0}" already shows the first cause; list only what it does not.
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

/// Refuses a repeated field with more than `max` entries, naming the field and the bound, before
/// any entry is looked at: every repeated field of a request has one.
pub fn bounded<T>(field: &str, items: &[T], max: usize) -> Result<()> {
    if items.len() > max {
        return Err(Error::invalid(
            field,
            format!("at most {max} entries (got {})", items.len()),
        ));
    }
    Ok(())
}

/// Bounds of repeated request fields (docs/api-conventions.md, "Errors").
pub mod limits {
    /// Role keys in one list (a user's roles, a filter's, a mass action's).
    pub const ROLES: usize = 100;
    /// Tags of a user, a filter or a mass action.
    pub const TAGS: usize = 100;
    /// Teams in a filter or a mass action.
    pub const TEAMS: usize = 100;
    /// Statuses in a filter.
    pub const STATUSES: usize = 10;
    /// Allowed networks of a user's IP allow-list.
    pub const NETWORKS: usize = 100;
    /// Permissions of a custom role.
    pub const PERMISSIONS: usize = 100;
    /// Team kinds in a filter.
    pub const KINDS: usize = 10;
    /// Users named in one call (a mass action's selection, team members added or removed).
    pub const USERS: usize = 100_000;
    /// Users read by one BatchGetUsers call.
    pub const BATCH_GET: usize = 1_000;
    /// Event types in a feed's filter.
    pub const EVENT_TYPES: usize = 50;
    /// Field violations described in one error's message and details (the rest are counted),
    /// so that an error stays a few KiB, inside every client's metadata limit.
    pub const VIOLATIONS: usize = 16;
    /// Characters of one violation's field or description.
    pub const DESCRIPTION_CHARS: usize = 400;
    /// Characters of all the violations an error describes, together.
    pub const MESSAGE_CHARS: usize = 2_000;
}

/// Collects field violations while parsing a request, so that every bad field is reported at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value or records the violation.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Error::InvalidArgument(mut found)) => {
                self.0.append(&mut found);
                None
            }
            Err(other) => {
                self.0.push(FieldViolation::new("", other.to_string()));
                None
            }
        }
    }

    /// Ok when nothing was recorded.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the pool gave up")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_internal_error_keeps_its_whole_chain_of_causes() {
        let cause = Outer(std::io::Error::other("connection reset by peer"));
        let err = Error::internal_from(cause);
        assert_eq!(
            err.chain(),
            "internal error: the pool gave up: connection reset by peer"
        );
        assert_eq!(Error::internal("plain").chain(), "internal error: plain");
    }
}
