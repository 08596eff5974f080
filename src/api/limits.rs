//! Per-address rate limits on the public calls that check a secret (Login, CompleteLogin,
//! SignUp, ActivateAccount and the password reset): checked before any password is hashed, so
//! that a flood costs the server next to nothing.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::model::Error;

/// A token bucket per client address: `per_minute` calls a minute, in bursts of as many.
pub struct AttemptLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for AttemptLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimiter").finish_non_exhaustive()
    }
}

impl AttemptLimiter {
    /// A limiter allowing `per_minute` attempts a minute per address (at least one).
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Takes one attempt of `address` (an unknown address shares one bucket), or refuses with
    /// RESOURCE_EXHAUSTED.
    pub fn check(&self, address: Option<IpAddr>) -> Result<(), Error> {
        let key = address.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        self.limiter.check_key(&key).map_err(|not_until| {
            // Whole seconds, at least one: clients sleep on it, and sub-second waits invite a
            // busy loop.
            let wait = not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock()));
            let retry_after = Duration::from_secs(wait.as_secs() + 1);
            Error::ResourceExhausted {
                reason: "TOO_MANY_ATTEMPTS",
                message: format!(
                    "too many attempts from this address: try again in {} s",
                    retry_after.as_secs()
                ),
                retry_after: Some(retry_after),
            }
        })
    }

    /// Forgets addresses whose buckets are full again.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_quota_and_others_are_not_affected() {
        let limiter = AttemptLimiter::new(3);
        let busy: IpAddr = "203.0.113.1".parse().unwrap();
        let quiet: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(Some(busy)).is_ok());
        }
        assert!(matches!(
            limiter.check(Some(busy)),
            Err(Error::ResourceExhausted {
                reason: "TOO_MANY_ATTEMPTS",
                retry_after: Some(wait),
                ..
            }) if wait >= Duration::from_secs(1) && wait <= Duration::from_secs(21)
        ));
        assert!(limiter.check(Some(quiet)).is_ok());
        limiter.prune();
    }
}
