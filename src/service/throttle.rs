//! Throttling of failed client authentication, per client id and per source address (token
//! buckets of failures). It guards only the slow path: a client whose secret this replica has
//! already verified is served from the credential cache before throttling is consulted, so a
//! wrong-secret flood against a partner's client id cannot lock the partner out, and a flood of
//! guesses costs a map lookup instead of an argon2 run.
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
}

fn retry_after(b: Bucket, limits: Limits) -> u64 {
    (((1.0 - b.tokens) / limits.per_sec).ceil().max(1.0)) as u64
}

impl Throttle {
    /// Seconds to wait if this client id or address has used up its failures, else None.
    pub fn check(&self, client_id: &str, source: Option<IpAddr>, now_ms: i64) -> Option<u64> {
        let c = self.clients.get(client_id).map(|b| b.refilled(PER_CLIENT, now_ms));
        let a = source.and_then(|ip| self.addresses.get(&ip).map(|b| b.refilled(PER_ADDRESS, now_ms)));
        let wait_c = c.filter(|b| b.tokens < 1.0).map(|b| retry_after(b, PER_CLIENT));
        let wait_a = a.filter(|b| b.tokens < 1.0).map(|b| retry_after(b, PER_ADDRESS));
        wait_c.max(wait_a)
    }

    /// Records a failed authentication.
    pub fn failed(&self, client_id: &str, source: Option<IpAddr>, now_ms: i64) {
        if self.clients.len() + self.addresses.len() > MAX_KEYS {
            self.purge(now_ms);
        }
        let take = |b: Option<Bucket>, limits: Limits| {
            let b = b.unwrap_or(Bucket { tokens: limits.burst, at_ms: now_ms }).refilled(limits, now_ms);
            Bucket { tokens: (b.tokens - 1.0).max(0.0), at_ms: now_ms }
        };
        let c = take(self.clients.get(client_id).map(|b| *b), PER_CLIENT);
        self.clients.insert(client_id.to_owned(), c);
        if let Some(ip) = source {
            let a = take(self.addresses.get(&ip).map(|b| *b), PER_ADDRESS);
            self.addresses.insert(ip, a);
        }
    }

    /// Forgets keys whose allowance is back to full (they behave like never seen).
    pub fn purge(&self, now_ms: i64) {
        self.clients.retain(|_, b| b.refilled(PER_CLIENT, now_ms).tokens < PER_CLIENT.burst);
        self.addresses.retain(|_, b| b.refilled(PER_ADDRESS, now_ms).tokens < PER_ADDRESS.burst);
    }

    pub fn len(&self) -> usize {
        self.clients.len() + self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_empty_and_refill() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(t.check("c", Some(ip), 0), None);
            t.failed("c", Some(ip), 0);
        }
        assert_eq!(t.check("c", Some(ip), 0), Some(1), "client allowance used up");
        assert_eq!(t.check("other", Some(ip), 0), None, "the address still has allowance");
        assert_eq!(t.check("c", Some(ip), 1000), None, "one failure comes back per second");
        for i in 0..50 {
            t.failed(&format!("k{i}"), Some(ip), 2000);
        }
        assert!(t.check("fresh", Some(ip), 2000).is_some(), "address allowance used up");
        t.purge(1_000_000);
        assert!(t.is_empty());
    }
}
