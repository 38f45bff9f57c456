//! Throttling of failed client authentication (token buckets of failures). It guards only the
//! slow path: a secret this replica has already verified is served from the credential cache
//! before throttling is consulted, and a flood of guesses costs a map lookup, not an argon2 run.
//!
//! Attempts are budgeted by what they prove. One naming a real secret id of the client (the
//! 64 random bits before the '.', which an outsider does not have) is budgeted per (client,
//! secret id) only; anything else (unknown client, unknown or malformed secret id) is budgeted
//! per client id and per source address. So a flood of guesses against a partner's client id,
//! even from the partner's own address, cannot lock out the partner's real secret, including
//! on a replica that has not cached it yet.
use std::net::IpAddr;

use dashmap::DashMap;

/// Failures a key may have in a burst, and how fast that allowance comes back.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub burst: f64,
    pub per_sec: f64,
}

pub const PER_CLIENT: Limits = Limits { burst: 10.0, per_sec: 1.0 };
pub const PER_ADDRESS: Limits = Limits { burst: 50.0, per_sec: 5.0 };
/// Bound on tracked keys (random client ids or addresses cannot grow memory without limit).
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn refilled(self, limits: Limits, now_ms: i64) -> Bucket {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        Bucket { tokens: (self.tokens + elapsed * limits.per_sec).min(limits.burst), at_ms: now_ms }
    }
}

#[derive(Debug, Default)]
pub struct Throttle {
    clients: DashMap<String, Bucket>,
    addresses: DashMap<IpAddr, Bucket>,
    /// (client id, secret id) of attempts naming a real secret.
    secrets: DashMap<(String, String), Bucket>,
}

/// Who an attempt is charged to.
#[derive(Clone, Copy, Debug)]
pub enum Attempt<'a> {
    /// It names a real secret id of this client.
    KnownSecret { client_id: &'a str, secret_id: &'a str },
    /// Unknown client, or unknown or malformed secret id.
    Guess { client_id: &'a str, source: Option<IpAddr> },
}

fn retry_after(b: Bucket, limits: Limits) -> u64 {
    (((1.0 - b.tokens) / limits.per_sec).ceil().max(1.0)) as u64
}

impl Throttle {
    /// Seconds to wait if this attempt's budget is used up, else None.
    pub fn check(&self, attempt: Attempt<'_>, now_ms: i64) -> Option<u64> {
        let wait = |b: Option<Bucket>, limits: Limits| {
            b.map(|b| b.refilled(limits, now_ms)).filter(|b| b.tokens < 1.0).map(|b| retry_after(b, limits))
        };
        match attempt {
            Attempt::KnownSecret { client_id, secret_id } => {
                let key = (client_id.to_owned(), secret_id.to_owned());
                wait(self.secrets.get(&key).map(|b| *b), PER_CLIENT)
            }
            Attempt::Guess { client_id, source } => {
                let c = wait(self.clients.get(client_id).map(|b| *b), PER_CLIENT);
                let a = source.and_then(|ip| wait(self.addresses.get(&ip).map(|b| *b), PER_ADDRESS));
                c.max(a)
            }
        }
    }

    /// Records a failed authentication.
    pub fn failed(&self, attempt: Attempt<'_>, now_ms: i64) {
        if self.len() > MAX_KEYS {
            self.purge(now_ms);
        }
        let take = |b: Option<Bucket>, limits: Limits| {
            let b = b.unwrap_or(Bucket { tokens: limits.burst, at_ms: now_ms }).refilled(limits, now_ms);
            Bucket { tokens: (b.tokens - 1.0).max(0.0), at_ms: now_ms }
        };
        match attempt {
            Attempt::KnownSecret { client_id, secret_id } => {
                let key = (client_id.to_owned(), secret_id.to_owned());
                let b = take(self.secrets.get(&key).map(|b| *b), PER_CLIENT);
                self.secrets.insert(key, b);
            }
            Attempt::Guess { client_id, source } => {
                let c = take(self.clients.get(client_id).map(|b| *b), PER_CLIENT);
                self.clients.insert(client_id.to_owned(), c);
                if let Some(ip) = source {
                    let a = take(self.addresses.get(&ip).map(|b| *b), PER_ADDRESS);
                    self.addresses.insert(ip, a);
                }
            }
        }
    }

    /// Forgets keys whose allowance is back to full (they behave like never seen).
    pub fn purge(&self, now_ms: i64) {
        self.clients.retain(|_, b| b.refilled(PER_CLIENT, now_ms).tokens < PER_CLIENT.burst);
        self.addresses.retain(|_, b| b.refilled(PER_ADDRESS, now_ms).tokens < PER_ADDRESS.burst);
        self.secrets.retain(|_, b| b.refilled(PER_CLIENT, now_ms).tokens < PER_CLIENT.burst);
    }

    pub fn len(&self) -> usize {
        self.clients.len() + self.addresses.len() + self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(client_id: &str, ip: IpAddr) -> Attempt<'_> {
        Attempt::Guess { client_id, source: Some(ip) }
    }

    #[test]
    fn buckets_empty_and_refill() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(t.check(guess("c", ip), 0), None);
            t.failed(guess("c", ip), 0);
        }
        assert_eq!(t.check(guess("c", ip), 0), Some(1), "client allowance used up");
        assert_eq!(t.check(guess("other", ip), 0), None, "the address still has allowance");
        assert_eq!(t.check(guess("c", ip), 1000), None, "one failure comes back per second");
        for i in 0..50 {
            t.failed(guess(&format!("k{i}"), ip), 2000);
        }
        assert!(t.check(guess("fresh", ip), 2000).is_some(), "address allowance used up");
        let real = Attempt::KnownSecret { client_id: "c", secret_id: "00aa" };
        assert_eq!(t.check(real, 2000), None, "guesses never use up a real secret's budget");
        for _ in 0..10 {
            t.failed(real, 2000);
        }
        assert!(t.check(real, 2000).is_some());
        t.purge(1_000_000);
        assert!(t.is_empty());
    }
}
