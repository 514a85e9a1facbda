//! Time for a node: its [`Clock`] (wall and monotonic readings from an
//! injectable [`TimeSource`]) and the hybrid logical clock (HLC) that
//! stamps every write with a [`Version`].
//!
//! An HLC value packs 48 bits of physical milliseconds and 16 bits of logical
//! counter into a `u64`, so versions compare as plain integers and a write
//! that causally follows another always gets a larger version, even when wall
//! clocks disagree (DESIGN §2). The clock never talks to the network; peers
//! feed it through [`Hlc::observe`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;
const PHYSICAL_MASK: u64 = (1 << 48) - 1;

/// A write's version: compared lexicographically, larger wins everywhere.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Version {
    pub hlc: u64,
    pub node_id: u64,
}

/// The smallest HLC reading of unix millisecond `ms`: larger than every
/// version stamped before it.
pub fn hlc_at_millis(ms: u64) -> u64 {
    (ms & PHYSICAL_MASK) << LOGICAL_BITS
}

impl Version {
    /// Physical milliseconds encoded in the HLC part.
    pub fn millis(&self) -> u64 {
        self.hlc >> LOGICAL_BITS
    }
}

/// Where a node's time comes from. Every reading of time in the node goes
/// through its [`Clock`], so tests choose the source instead of sleeping:
/// a skewed system clock runs nodes whose clocks disagree in one process,
/// a manual one stands still until the test advances it.
#[derive(Debug, Clone)]
pub enum TimeSource {
    /// The system's clocks, the wall clock shifted by `offset_ms` (0 but
    /// for fault tests of skew: `--clock-offset-ms`).
    System { offset_ms: i64 },
    /// Time that moves only by [`ManualTime::advance`].
    Manual(Arc<ManualTime>),
}

impl Default for TimeSource {
    fn default() -> Self {
        Self::System { offset_ms: 0 }
    }
}

impl TimeSource {
    /// A manual clock whose wall clock reads `wall_ms` (unix ms) now.
    pub fn manual(wall_ms: u64) -> (Self, Arc<ManualTime>) {
        let time = Arc::new(ManualTime {
            wall_ms: AtomicU64::new(wall_ms),
            elapsed_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            advanced: tokio::sync::Notify::new(),
        });
        (Self::Manual(time.clone()), time)
    }
}

/// A clock tests step: wall and monotonic time move together, and only
/// when [`ManualTime::advance`] says so. Tasks sleeping on it
/// ([`Clock::sleep_until`]) wake when it passes their deadline.
#[derive(Debug)]
pub struct ManualTime {
    wall_ms: AtomicU64,
    /// Monotonic time: nanoseconds after `epoch`.
    elapsed_ns: AtomicU64,
    epoch: Instant,
    advanced: tokio::sync::Notify,
}

impl ManualTime {
    /// Moves time forward by `by` and wakes whatever sleeps on it.
    pub fn advance(&self, by: Duration) {
        self.wall_ms
            .fetch_add(by.as_millis() as u64, Ordering::AcqRel);
        self.elapsed_ns
            .fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
        self.advanced.notify_waiters();
    }

    pub fn wall_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::Acquire)
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.elapsed_ns.load(Ordering::Acquire))
    }
}

/// A node's clock: its time source and its HLC. One per node, cloned into
/// the store, replication, membership and the client sessions (two
/// pointers: cloning is cheap).
#[derive(Debug, Clone)]
pub struct Clock {
    source: TimeSource,
    hlc: Arc<Hlc>,
}

impl Clock {
    pub fn new(source: TimeSource, node_id: u64) -> Self {
        Self {
            source,
            hlc: Arc::new(Hlc::new(node_id)),
        }
    }

    /// The system clock, unskewed (tests and benchmarks of one store).
    pub fn system(node_id: u64) -> Self {
        Self::new(TimeSource::default(), node_id)
    }

    pub fn source(&self) -> &TimeSource {
        &self.source
    }

    /// Milliseconds since the Unix epoch on this node's wall clock.
    pub fn wall_ms(&self) -> u64 {
        self.wall_micros() / 1000
    }

    /// Microseconds since the Unix epoch on this node's wall clock (TIME).
    pub fn wall_micros(&self) -> u64 {
        match &self.source {
            TimeSource::System { offset_ms } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0);
                now.saturating_add_signed(offset_ms.saturating_mul(1000))
            }
            TimeSource::Manual(time) => time.wall_ms().saturating_mul(1000),
        }
    }

    /// A monotonic reading, for durations (never the wall clock).
    pub fn now(&self) -> Instant {
        match &self.source {
            TimeSource::System { .. } => Instant::now(),
            TimeSource::Manual(time) => time.now(),
        }
    }

    /// Time since `earlier` (a reading of this clock), zero if it is later.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Resolves once this clock reads `at` or later: a timer for the
    /// system clock, the moment a test advances a manual one past it.
    pub async fn sleep_until(&self, at: Instant) {
        match &self.source {
            TimeSource::System { .. } => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            }
            TimeSource::Manual(time) => loop {
                // Registered before the check, so an advance in between
                // still wakes it.
                let advanced = time.advanced.notified();
                if time.now() >= at {
                    return;
                }
                advanced.await;
            },
        }
    }

    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now() + duration).await;
    }

    /// A periodic timer on this clock (see [`Ticker`]).
    pub fn ticker(&self, period: Duration) -> Ticker {
        Ticker {
            clock: self.clone(),
            period,
            next: self.now(),
        }
    }

    /// The node's hybrid logical clock.
    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    /// A fresh version, larger than every version this clock has issued
    /// or observed.
    pub fn tick(&self) -> Version {
        self.hlc.tick_at(self.wall_ms())
    }
}

/// A periodic timer: the first tick is at once, each later one a period
/// after the previous tick returned (tokio's `MissedTickBehavior::Delay`).
/// Cancel-safe: a tick dropped before it fires leaves the timer as it was.
#[derive(Debug)]
pub struct Ticker {
    clock: Clock,
    period: Duration,
    next: Instant,
}

impl Ticker {
    pub async fn tick(&mut self) {
        self.clock.sleep_until(self.next).await;
        self.next = self.clock.now() + self.period;
    }
}

/// The HLC of one node, inside its [`Clock`].
#[derive(Debug)]
pub struct Hlc {
    node_id: u64,
    last: AtomicU64,
}

impl Hlc {
    pub fn new(node_id: u64) -> Self {
        Self {
            node_id,
            last: AtomicU64::new(0),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// A fresh version at the wall-clock reading `now_ms` (unix ms), larger
    /// than every version this clock has issued or observed.
    pub fn tick_at(&self, now_ms: u64) -> Version {
        self.tick_n_at(now_ms, 1)
    }

    /// Reserves `n` (at least 1) consecutive versions at once and returns
    /// the first: one atomic update instead of `n` on a line every core
    /// writes (MSET of 10 keys: 10 → 1 compare-exchange).
    pub fn tick_n_at(&self, now_ms: u64, n: u64) -> Version {
        let physical = (now_ms & PHYSICAL_MASK) << LOGICAL_BITS;
        let mut current = self.last.load(Ordering::Relaxed);
        loop {
            // Saturating: a peer's version at u64::MAX (observed below)
            // must neither overflow nor wrap the clock back to wall time.
            let first = physical.max(current.saturating_add(1));
            match self.last.compare_exchange_weak(
                current,
                first.saturating_add(n.max(1) - 1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Version {
                        hlc: first,
                        node_id: self.node_id,
                    };
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// The HLC receive rule: after observing `remote`, every later tick is
    /// larger than it.
    pub fn observe(&self, remote: Version) {
        self.last.fetch_max(remote.hlc, Ordering::AcqRel);
    }

    /// The largest HLC value issued or observed so far.
    pub fn current(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_the_wall_clock_goes_back() {
        let clock = Hlc::new(7);
        let a = clock.tick_at(10_000);
        let b = clock.tick_at(9_000);
        let c = clock.tick_at(9_000);
        assert!(a < b && b < c);
        assert_eq!(b.millis(), 10_000);
    }

    #[test]
    fn observing_a_remote_version_orders_later_local_writes_after_it() {
        let clock = Hlc::new(1);
        let remote = Version {
            hlc: (50_000 << LOGICAL_BITS) + 3,
            node_id: 2,
        };
        clock.observe(remote);
        assert!(clock.tick_at(1_000) > remote);
    }

    #[test]
    fn a_reserved_range_is_above_everything_issued_and_below_the_next_tick() {
        let clock = Hlc::new(1);
        let a = clock.tick_at(10_000);
        let first = clock.tick_n_at(10_000, 10);
        assert_eq!(first.hlc, a.hlc + 1);
        assert_eq!(clock.tick_at(10_000).hlc, first.hlc + 10);
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let (time, manual) = TimeSource::manual(1_000_000);
        let clock = Clock::new(time, 3);
        let (wall, mono) = (clock.wall_ms(), clock.now());
        assert_eq!((wall, clock.now()), (1_000_000, mono));
        manual.advance(Duration::from_millis(1500));
        assert_eq!(clock.wall_ms(), 1_001_500);
        assert_eq!(clock.since(mono), Duration::from_millis(1500));
        assert_eq!(clock.tick().millis(), 1_001_500);
    }

    #[test]
    fn a_skewed_clock_reads_ahead_of_the_system_clock() {
        let plain = Clock::system(1);
        let ahead = Clock::new(TimeSource::System { offset_ms: 60_000 }, 1);
        let difference = ahead.wall_ms() - plain.wall_ms();
        assert!((59_000..=61_000).contains(&difference), "{difference}");
    }

    #[tokio::test]
    async fn sleepers_on_a_manual_clock_wake_when_it_passes_their_deadline() {
        let (time, manual) = TimeSource::manual(0);
        let clock = Clock::new(time, 1);
        let mut ticker = clock.ticker(Duration::from_secs(10));
        ticker.tick().await; // the first tick is at once
        let at = clock.now() + Duration::from_secs(5);
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        manual.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "woke before its deadline");
        manual.advance(Duration::from_secs(1));
        waiting.await.unwrap();
        let tick = ticker.tick();
        tokio::pin!(tick);
        assert!(futures_util::poll!(tick.as_mut()).is_pending(), "5 s of 10");
        manual.advance(Duration::from_secs(5));
        tick.await;
    }

    #[test]
    fn node_id_breaks_ties() {
        let a = Version { hlc: 5, node_id: 1 };
        let b = Version { hlc: 5, node_id: 2 };
        assert!(a < b);
    }
}
