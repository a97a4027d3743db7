//! The hub's defences against being knocked over by the clients it has not yet authenticated,
//! shared by the device listener and HTTP:
//!
//! - **Connections per address** are capped ([`Guard::connection`]); the slot is given back
//!   when the returned [`Slot`] drops.
//! - **Failed logins back off per address**: after `failures_before_backoff` failures in a row
//!   an address must wait (`backoff_initial_ms`, doubling per further failure up to
//!   `backoff_max_secs`) before it may try again; meanwhile its logins are refused without
//!   hashing anything. A success clears the count; an address quiet for `backoff_max_secs`
//!   starts afresh.
//! - **Argon2 behind a semaphore** ([`Guard::hash`]): at most `max_concurrent_hashes` password
//!   hashes run at once (each takes 19 MiB and a core for tens of milliseconds), the rest wait.
//! - **Unknown users cost a hash too** ([`Guard::dummy_hash`]): verifying against a fixed
//!   dummy hash makes "no such user" take as long as "wrong password".
//!
//! The per-address table is bounded: beyond [`MAX_TRACKED`] addresses, idle entries are
//! dropped first; if every entry is busy, new addresses are still served (and counted) but
//! the oldest idle failure record is the one forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Semaphore;

/// Most addresses the guard remembers.
pub const MAX_TRACKED: usize = 100_000;

/// `[guard]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Password hashes (argon2) running at once, for devices and people together.
    pub max_concurrent_hashes: usize,
    /// Open connections one client address may hold, device listener and HTTP together.
    pub max_connections_per_address: usize,
    /// Failed logins in a row before an address must wait.
    pub failures_before_backoff: u32,
    /// First wait after that.
    pub backoff_initial_ms: u64,
    /// Longest wait; also how long an address is remembered after its last failure.
    pub backoff_max_secs: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_concurrent_hashes: 1,
            max_connections_per_address: 256,
            failures_before_backoff: 5,
            backoff_initial_ms: 1000,
            backoff_max_secs: 60,
        }
    }
}

#[derive(Debug, Default)]
struct Address {
    connections: usize,
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Address {
    fn idle(&self, now: Instant, forget: Duration) -> bool {
        self.connections == 0
            && self
                .last_failure
                .is_none_or(|t| now.saturating_duration_since(t) >= forget)
    }
}

/// Shared state of the defences. Cheap to clone behind an `Arc`.
pub struct Guard {
    config: GuardConfig,
    hashes: Semaphore,
    addresses: Mutex<HashMap<IpAddr, Address>>,
    dummy: OnceLock<String>,
    hashed: AtomicU64,
}

/// One connection's place in its address's quota; given back on drop.
pub struct Slot {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.guard.lock();
        if let Some(a) = map.get_mut(&self.ip) {
            a.connections = a.connections.saturating_sub(1);
        }
    }
}

impl Guard {
    /// A guard with these limits.
    pub fn new(config: GuardConfig) -> Arc<Self> {
        Arc::new(Self {
            hashes: Semaphore::new(config.max_concurrent_hashes.max(1)),
            config,
            addresses: Mutex::new(HashMap::new()),
            dummy: OnceLock::new(),
            hashed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Address>> {
        self.addresses.lock().expect("guard lock poisoned")
    }

    fn forget_after(&self) -> Duration {
        Duration::from_secs(self.config.backoff_max_secs.max(1))
    }

    fn entry<'m>(
        &self,
        map: &'m mut HashMap<IpAddr, Address>,
        ip: IpAddr,
        now: Instant,
    ) -> &'m mut Address {
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let forget = self.forget_after();
            map.retain(|_, a| !a.idle(now, forget));
            if map.len() >= MAX_TRACKED {
                // Every entry is busy or recent: forget the one with the oldest failure.
                let oldest = map
                    .iter()
                    .filter(|(_, a)| a.connections == 0)
                    .min_by_key(|(_, a)| a.last_failure)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.entry(ip).or_default()
    }

    /// Takes a connection slot for `ip`; `None` when the address is at its cap.
    pub fn connection(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.lock();
        let a = self.entry(&mut map, ip, Instant::now());
        if a.connections >= self.config.max_connections_per_address {
            return None;
        }
        a.connections += 1;
        Some(Slot {
            guard: self.clone(),
            ip,
        })
    }

    /// Whether `ip` may try a login now; `Err` is how long it must still wait.
    pub fn may_try(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.lock();
        match map.get(&ip).and_then(|a| a.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let forget = self.forget_after();
        let mut map = self.lock();
        let a = self.entry(&mut map, ip, now);
        if a.last_failure
            .is_some_and(|t| now.saturating_duration_since(t) >= forget)
        {
            a.failures = 0;
        }
        a.failures = a.failures.saturating_add(1);
        a.last_failure = Some(now);
        let over = a
            .failures
            .checked_sub(self.config.failures_before_backoff)
            .filter(|_| a.failures >= self.config.failures_before_backoff);
        if let Some(n) = over {
            let wait = Duration::from_millis(self.config.backoff_initial_ms)
                .saturating_mul(1u32 << n.min(20))
                .min(forget);
            a.blocked_until = Some(now + wait);
        }
    }

    /// Clears `ip`'s failures after a good login.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.lock();
        if let Some(a) = map.get_mut(&ip) {
            a.failures = 0;
            a.blocked_until = None;
            a.last_failure = None;
        }
    }

    /// Runs a password hash (or verification) `f` on the blocking pool, at most
    /// `max_concurrent_hashes` at once.
    pub async fn hash<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let _permit = self.hashes.acquire().await.expect("semaphore never closed");
        metrics::counter!(crate::telemetry::PASSWORD_HASHES).increment(1);
        self.hashed.fetch_add(1, Ordering::Relaxed);
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// A valid argon2 hash of a random password no one knows, for verifying unknown users
    /// (made on first use, with the same parameters as real hashes).
    pub fn dummy_hash(&self) -> &str {
        self.dummy.get_or_init(|| {
            crate::auth::new_password()
                .map(|(_, hash)| hash)
                .unwrap_or_default()
        })
    }

    /// Password hashes run through this guard so far.
    pub fn hashes_run(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_address: usize) -> Arc<Guard> {
        Guard::new(GuardConfig {
            max_concurrent_hashes: 1,
            max_connections_per_address: per_address,
            failures_before_backoff: 3,
            backoff_initial_ms: 1000,
            backoff_max_secs: 10,
        })
    }

    #[test]
    fn connections_are_capped_per_address_and_given_back() {
        let g = guard(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = g.connection(a).unwrap();
        let _s2 = g.connection(a).unwrap();
        assert!(g.connection(a).is_none(), "third from the same address");
        assert!(g.connection(b).is_some(), "another address is not affected");
        drop(s1);
        assert!(
            g.connection(a).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_success_clears() {
        let g = guard(10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            g.failed(ip, t0);
            assert!(g.may_try(ip, t0).is_ok());
        }
        g.failed(ip, t0);
        assert_eq!(g.may_try(ip, t0), Err(Duration::from_secs(1)));
        assert!(g.may_try(ip, t0 + Duration::from_secs(1)).is_ok());
        g.failed(ip, t0);
        assert_eq!(g.may_try(ip, t0), Err(Duration::from_secs(2)));
        for _ in 0..20 {
            g.failed(ip, t0);
        }
        assert_eq!(g.may_try(ip, t0), Err(Duration::from_secs(10)), "capped");
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        assert!(g.may_try(other, t0).is_ok());
        g.succeeded(ip);
        assert!(g.may_try(ip, t0).is_ok());
        // Quiet for the forget window: counting starts again.
        for _ in 0..2 {
            g.failed(ip, t0);
        }
        g.failed(ip, t0 + Duration::from_secs(11));
        assert!(g.may_try(ip, t0 + Duration::from_secs(11)).is_ok());
    }

    #[tokio::test]
    async fn hashes_run_one_at_a_time_with_one_permit() {
        let g = guard(1);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (g, running, most) = (g.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                g.hash(move || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let n = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(n, SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, SeqCst);
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn the_table_stays_bounded() {
        let g = guard(10);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            g.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(g.tracked() <= MAX_TRACKED);
    }
}
