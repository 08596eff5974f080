use chrono::{DateTime, Utc};

/// The source of "now", injected so that expiry logic can be tested.
pub trait Clock: Send + Sync + 'static {
    /// The current instant, truncated to milliseconds so it round-trips through every database.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}
