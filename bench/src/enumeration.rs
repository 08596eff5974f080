//! Whether the answers tell who exists: the latency of calls about an existing user against the
//! same calls about an unknown one, alternated one by one on one connection so that both see the
//! same machine, reported as medians and their ratio (1.00 tells nothing).

use std::{fmt::Write as _, time::Instant};

use anyhow::Context;
use roster::api::pb::{self, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

/// One comparison: the same call about an existing and about an unknown user.
pub struct Comparison {
    pub what: &'static str,
    pub existing: Vec<f64>,
    pub unknown: Vec<f64>,
    /// The answers' codes, existing then unknown (they must be the same).
    pub codes: (String, String),
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

impl Comparison {
    /// Median latency about the existing user over the unknown one's.
    pub fn ratio(&self) -> f64 {
        let unknown = median(&self.unknown);
        if unknown > 0.0 {
            median(&self.existing) / unknown
        } else {
            0.0
        }
    }
}

fn code<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// Runs `calls` pairs of RequestPasswordReset and of Login with a wrong password, for the
/// fixture's owner and for an unknown address of the same account. The server must count
/// failed logins under a high lockout threshold (the bench starts it so).
pub async fn probe(
    channel: &Channel,
    login: &pb::LoginRequest,
    calls: usize,
) -> anyhow::Result<Vec<Comparison>> {
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut reset = Comparison {
        what: "RequestPasswordReset",
        existing: Vec::new(),
        unknown: Vec::new(),
        codes: Default::default(),
    };
    let mut wrong = Comparison {
        what: "Login, wrong password",
        existing: Vec::new(),
        unknown: Vec::new(),
        codes: Default::default(),
    };
    for turn in 0..calls {
        let nobody = format!("nobody-{turn}@example.com");
        for (who, existing) in [(login.login.as_str(), true), (nobody.as_str(), false)] {
            let started = Instant::now();
            let answer = auth
                .request_password_reset(pb::RequestPasswordResetRequest {
                    tenant: login.tenant.clone(),
                    email: who.to_owned(),
                })
                .await;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            let slot = if existing {
                (&mut reset.existing, &mut reset.codes.0)
            } else {
                (&mut reset.unknown, &mut reset.codes.1)
            };
            slot.0.push(took);
            *slot.1 = code(&answer);

            let started = Instant::now();
            let answer = auth
                .login(pb::LoginRequest {
                    tenant: login.tenant.clone(),
                    login: who.to_owned(),
                    password: "Wr0ng-Password!".to_owned(),
                })
                .await;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            let slot = if existing {
                (&mut wrong.existing, &mut wrong.codes.0)
            } else {
                (&mut wrong.unknown, &mut wrong.codes.1)
            };
            slot.0.push(took);
            *slot.1 = code(&answer);
        }
    }
    // A successful login ends the run of failures, so that later phases log in as before.
    auth.login(login.clone())
        .await
        .context("Login after the enumeration probe")?;
    Ok(vec![reset, wrong])
}

/// The report's lines.
pub fn render(comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nenumeration (existing vs unknown user, alternated; median ms; 1.00 tells nothing)"
    );
    for comparison in comparisons {
        let _ = writeln!(
            out,
            "  {:<28} existing {:>7.3} ms ({})  unknown {:>7.3} ms ({})  ratio {:.2}",
            comparison.what,
            median(&comparison.existing),
            comparison.codes.0,
            median(&comparison.unknown),
            comparison.codes.1,
            comparison.ratio()
        );
    }
    out
}
