//! The clock seam: every timestamp that lands on disk is read through the [`Clock`] trait.
//!
//! Time is passed in rather than read from globals, so tests can stand the clock still, step it
//! back, or make it negative. [`SystemClock`] is the production clock; [`FnClock`] and
//! [`ManualClock`] are for tests and embedders. [`NonDecreasing`] turns a clock that may step
//! back (NTP, a VM resume) into one that never does, logging the regression instead of failing.
//! [`Hlc`] is a hybrid logical clock that hands out strictly increasing [`Timestamp`]s even when
//! the wall clock stands still or steps back.
//!
//! Invariants:
//! - Wall readings are never negative: a negative reading is a [`ClockError`], never a panic.
//! - Monotonic readings (`now_mono_ns`) never go backwards and are never stored; they only
//!   measure local waits.
//! - A [`Timestamp`]'s ordering equals the ordering of its packed `u64` form.
//! - [`Hlc::now`] is strictly greater than every timestamp the clock returned or observed.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An error reading a clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The clock returned a reading before the Unix epoch; nothing before 1970 can be stored.
    #[error("clock reading for {what} is negative: {value}")]
    Negative {
        /// Which reading was negative, such as `wall microseconds`.
        what: &'static str,
        /// The negative reading, in the unit named by `what`.
        value: i128,
    },
    /// The system clock is set before 1970-01-01.
    #[error("system clock is before the unix epoch")]
    BeforeEpoch,
    /// The hybrid logical clock reached [`Timestamp::MAX`] and has no greater value to give.
    /// Only a corrupt or hostile timestamp passed to [`Hlc::observe`] can cause this.
    #[error("hybrid logical clock is exhausted at {last}")]
    Exhausted {
        /// The last timestamp handed out or observed.
        last: Timestamp,
    },
}

/// The result of reading a clock.
pub type ClockResult<T> = std::result::Result<T, ClockError>;

/// A source of time. Everything in Causeway that needs the time takes a `Clock`.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Returns wall-clock microseconds since the Unix epoch.
    fn now_us(&self) -> ClockResult<u64>;
    /// Returns wall-clock nanoseconds since the Unix epoch.
    fn now_wall_ns(&self) -> ClockResult<u64>;
    /// Returns nanoseconds since an arbitrary process-local origin. The value never goes
    /// backwards; it is for local wait deadlines only and must never be stored.
    fn now_mono_ns(&self) -> u64;
    /// Returns the wall nanoseconds at which this clock was created, which tells one run of the
    /// process from the next.
    fn process_boot_ns(&self) -> u64;
}

/// Converts a signed reading to `u64`, or reports it as negative.
fn non_negative(what: &'static str, value: i64) -> ClockResult<u64> {
    u64::try_from(value).map_err(|_| ClockError::Negative {
        what,
        value: value.into(),
    })
}

/// Converts signed wall nanoseconds to microseconds, flooring so that any negative reading
/// stays negative and is reported.
fn ns_to_us(ns: i64) -> ClockResult<u64> {
    non_negative("wall microseconds", ns.div_euclid(1_000))
}

/// Nanoseconds elapsed since `origin`, saturating after about 584 years.
fn elapsed_ns(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The operating system's clock: wall time from [`SystemTime`], monotonic time from [`Instant`].
#[derive(Debug, Clone)]
pub struct SystemClock {
    /// The origin of `now_mono_ns`, captured at construction.
    origin: Instant,
    /// Wall nanoseconds at construction, or 0 if the system clock was before the epoch.
    boot_ns: u64,
}

impl SystemClock {
    /// Creates a system clock, capturing the monotonic origin and the process-epoch marker now.
    pub fn new() -> Self {
        let origin = Instant::now();
        let mut clock = SystemClock { origin, boot_ns: 0 };
        clock.boot_ns = clock.now_wall_ns().unwrap_or(0);
        clock
    }

    fn since_epoch() -> ClockResult<Duration> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| ClockError::BeforeEpoch)
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_us(&self) -> ClockResult<u64> {
        // u64 microseconds last until the year 586524; saturate rather than wrap.
        Ok(u64::try_from(Self::since_epoch()?.as_micros()).unwrap_or(u64::MAX))
    }
    fn now_wall_ns(&self) -> ClockResult<u64> {
        // u64 nanoseconds last until the year 2554; saturate rather than wrap.
        Ok(u64::try_from(Self::since_epoch()?.as_nanos()).unwrap_or(u64::MAX))
    }
    fn now_mono_ns(&self) -> u64 {
        elapsed_ns(self.origin)
    }
    fn process_boot_ns(&self) -> u64 {
        self.boot_ns
    }
}

/// A clock whose wall time comes from a closure returning nanoseconds since the epoch as `i64`.
///
/// Monotonic time is still real (from an [`Instant`]), so waits keep working whatever the
/// closure returns. A negative reading is reported as [`ClockError::Negative`].
pub struct FnClock {
    wall_ns: Box<dyn Fn() -> i64 + Send + Sync>,
    origin: Instant,
    boot_ns: u64,
}

impl FnClock {
    /// Creates a clock from `f`, which returns wall nanoseconds since the epoch. The process-epoch
    /// marker is `f`'s reading now, clamped at 0.
    pub fn new(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        let boot_ns = u64::try_from(f()).unwrap_or(0);
        FnClock {
            wall_ns: Box::new(f),
            origin: Instant::now(),
            boot_ns,
        }
    }
}

impl fmt::Debug for FnClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnClock")
            .field("origin", &self.origin)
            .field("boot_ns", &self.boot_ns)
            .finish_non_exhaustive()
    }
}

impl Clock for FnClock {
    fn now_us(&self) -> ClockResult<u64> {
        ns_to_us((self.wall_ns)())
    }
    fn now_wall_ns(&self) -> ClockResult<u64> {
        non_negative("wall nanoseconds", (self.wall_ns)())
    }
    fn now_mono_ns(&self) -> u64 {
        elapsed_ns(self.origin)
    }
    fn process_boot_ns(&self) -> u64 {
        self.boot_ns
    }
}

/// A settable clock for tests.
///
/// Wall time is whatever was last set or advanced to and may be negative (then readings fail).
/// Monotonic time starts at 0 and moves only with [`ManualClock::advance`]: setting the wall
/// time, forwards or back, is a clock step, not elapsed time.
#[derive(Debug)]
pub struct ManualClock {
    wall_ns: AtomicI64,
    mono_ns: AtomicU64,
    boot_ns: u64,
}

impl ManualClock {
    /// Creates a clock reading `start_ns` wall nanoseconds since the epoch.
    pub fn new(start_ns: i64) -> Self {
        ManualClock {
            wall_ns: AtomicI64::new(start_ns),
            mono_ns: AtomicU64::new(0),
            boot_ns: u64::try_from(start_ns).unwrap_or(0),
        }
    }

    /// Sets the wall time to `ns` nanoseconds since the epoch; monotonic time does not move.
    pub fn set_ns(&self, ns: i64) {
        self.wall_ns.store(ns, Ordering::SeqCst);
    }

    /// Moves both wall and monotonic time forward by `d`, saturating at their maxima.
    pub fn advance(&self, d: Duration) {
        let d_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let d_ns_signed = i64::try_from(d_ns).unwrap_or(i64::MAX);
        // Neither closure returns None, so fetch_update cannot fail.
        let _ = self
            .wall_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ns| {
                Some(ns.saturating_add(d_ns_signed))
            });
        let _ = self
            .mono_ns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ns| {
                Some(ns.saturating_add(d_ns))
            });
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> ClockResult<u64> {
        ns_to_us(self.wall_ns.load(Ordering::SeqCst))
    }
    fn now_wall_ns(&self) -> ClockResult<u64> {
        non_negative("wall nanoseconds", self.wall_ns.load(Ordering::SeqCst))
    }
    fn now_mono_ns(&self) -> u64 {
        self.mono_ns.load(Ordering::SeqCst)
    }
    fn process_boot_ns(&self) -> u64 {
        self.boot_ns
    }
}

/// A clock whose wall readings never go backwards.
///
/// - Microsecond and nanosecond readings are two independent sequences, each kept at its high
///   mark: a clamp on one does not affect the other.
/// - When the inner clock steps back, the last reading is returned again (time stands still
///   until the inner clock catches up) and the regression is logged at error level. This trades
///   accuracy for order: readings taken during the regression all carry the same value.
/// - Errors from the inner clock (a negative reading) are passed through unchanged.
#[derive(Debug)]
pub struct NonDecreasing<C: Clock> {
    inner: C,
    // Each high mark is read, compared and raised under its lock together with the inner
    // reading, so a thread that read the clock earlier can never see a later thread's mark and
    // mistake the interleaving for a regression.
    high_us: Mutex<u64>,
    high_ns: Mutex<u64>,
}

impl<C: Clock> NonDecreasing<C> {
    /// Wraps `inner`; the first readings are whatever `inner` says.
    pub fn new(inner: C) -> Self {
        NonDecreasing {
            inner,
            high_us: Mutex::new(0),
            high_ns: Mutex::new(0),
        }
    }

    /// Returns the wrapped clock.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Unwraps the clock, discarding the high marks.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

/// Takes a reading under `high`'s lock, raises the mark to it and returns the new mark, logging
/// if the reading was lower.
fn clamp(
    high: &Mutex<u64>,
    read: impl FnOnce() -> ClockResult<u64>,
    unit: &'static str,
) -> ClockResult<u64> {
    let mut high = high.lock().expect("clock high-mark lock poisoned");
    let reading = read()?;
    if reading < *high {
        tracing::error!(
            unit,
            regression = *high - reading,
            "wall clock went backwards; holding at the last reading"
        );
        return Ok(*high);
    }
    *high = reading;
    Ok(reading)
}

impl<C: Clock> Clock for NonDecreasing<C> {
    fn now_us(&self) -> ClockResult<u64> {
        clamp(&self.high_us, || self.inner.now_us(), "us")
    }
    fn now_wall_ns(&self) -> ClockResult<u64> {
        clamp(&self.high_ns, || self.inner.now_wall_ns(), "ns")
    }
    fn now_mono_ns(&self) -> u64 {
        self.inner.now_mono_ns()
    }
    fn process_boot_ns(&self) -> u64 {
        self.inner.process_boot_ns()
    }
}

macro_rules! forward_clock {
    ($($ptr:ident),*) => {$(
        impl<C: Clock + ?Sized> Clock for $ptr<C> {
            fn now_us(&self) -> ClockResult<u64> {
                (**self).now_us()
            }
            fn now_wall_ns(&self) -> ClockResult<u64> {
                (**self).now_wall_ns()
            }
            fn now_mono_ns(&self) -> u64 {
                (**self).now_mono_ns()
            }
            fn process_boot_ns(&self) -> u64 {
                (**self).process_boot_ns()
            }
        }
    )*};
}
forward_clock!(Arc, Box);

/// A hybrid logical clock value: wall milliseconds since the epoch plus a logical counter that
/// orders events within one millisecond.
///
/// - `wall_ms` is below 2^48 (until the year 10889), so the value packs into a `u64` as
///   `wall_ms << 16 | logical`.
/// - Ordering is by `wall_ms`, then `logical`, which equals the ordering of [`Timestamp::to_u64`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    wall_ms: u64,
    logical: u16,
}

impl Timestamp {
    /// The largest representable wall time in milliseconds, 2^48 - 1.
    pub const WALL_MS_MAX: u64 = (1 << 48) - 1;
    /// The smallest timestamp.
    pub const ZERO: Timestamp = Timestamp {
        wall_ms: 0,
        logical: 0,
    };
    /// The largest timestamp; it has no successor.
    pub const MAX: Timestamp = Timestamp {
        wall_ms: Self::WALL_MS_MAX,
        logical: u16::MAX,
    };

    /// Creates a timestamp. A `wall_ms` at or above 2^48 saturates to [`Self::WALL_MS_MAX`].
    pub const fn new(wall_ms: u64, logical: u16) -> Self {
        let wall_ms = if wall_ms > Self::WALL_MS_MAX {
            Self::WALL_MS_MAX
        } else {
            wall_ms
        };
        Timestamp { wall_ms, logical }
    }

    /// Returns the wall milliseconds since the epoch.
    pub const fn wall_ms(self) -> u64 {
        self.wall_ms
    }

    /// Returns the logical counter within `wall_ms`.
    pub const fn logical(self) -> u16 {
        self.logical
    }

    /// Packs the timestamp as `wall_ms << 16 | logical`.
    pub const fn to_u64(self) -> u64 {
        self.wall_ms << 16 | self.logical as u64
    }

    /// Unpacks a value made by [`Timestamp::to_u64`]; every `u64` is a valid timestamp.
    pub const fn from_u64(packed: u64) -> Self {
        Timestamp {
            wall_ms: packed >> 16,
            logical: (packed & 0xFFFF) as u16,
        }
    }

    /// Returns the smallest timestamp strictly greater than `self`, or `None` at [`Self::MAX`].
    /// When the logical counter overflows, `wall_ms` moves forward by one with logical 0.
    pub const fn checked_next(self) -> Option<Self> {
        match self.to_u64().checked_add(1) {
            Some(packed) => Some(Self::from_u64(packed)),
            None => None,
        }
    }

    /// Returns the smallest timestamp strictly greater than `self`; saturates at [`Self::MAX`],
    /// which is the one input where the result is not greater. See [`Self::checked_next`].
    pub const fn next(self) -> Self {
        Self::from_u64(self.to_u64().saturating_add(1))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.wall_ms, self.logical)
    }
}

/// A hybrid logical clock: hands out [`Timestamp`]s that follow the wall clock in milliseconds
/// but are strictly increasing even when the wall clock stands still or steps back.
///
/// When the wall clock is behind the last timestamp, the old `wall_ms` is kept and the logical
/// counter grows; so a long backward step makes timestamps run ahead of the wall clock until it
/// catches up. The last value is held in an `AtomicU64` in packed form, so `now` is lock-free.
#[derive(Debug)]
pub struct Hlc {
    clock: Arc<dyn Clock>,
    last: AtomicU64,
}

impl Hlc {
    /// Creates a hybrid logical clock over `clock`, starting from [`Timestamp::ZERO`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Hlc {
            clock,
            last: AtomicU64::new(Timestamp::ZERO.to_u64()),
        }
    }

    /// Returns a timestamp strictly greater than every timestamp returned or observed before.
    ///
    /// Fails if the wall clock fails, or with [`ClockError::Exhausted`] at [`Timestamp::MAX`].
    pub fn now(&self) -> ClockResult<Timestamp> {
        let wall = Timestamp::new(self.clock.now_us()? / 1_000, 0);
        let mut last_packed = self.last.load(Ordering::Acquire);
        loop {
            let last = Timestamp::from_u64(last_packed);
            let next = if wall.wall_ms > last.wall_ms {
                wall
            } else {
                last.checked_next().ok_or(ClockError::Exhausted { last })?
            };
            match self.last.compare_exchange_weak(
                last_packed,
                next.to_u64(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(next),
                Err(current) => last_packed = current,
            }
        }
    }

    /// Raises the floor so that every later [`Hlc::now`] is greater than `ts`. Used when a store
    /// reopens or a leader changes; observing an older timestamp does nothing.
    pub fn observe(&self, ts: Timestamp) {
        self.last.fetch_max(ts.to_u64(), Ordering::AcqRel);
    }

    /// Returns the last timestamp returned or observed.
    pub fn last(&self) -> Timestamp {
        Timestamp::from_u64(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC_NS: i64 = 1_000_000_000;

    #[test]
    fn system_clock_is_after_2020_and_units_agree() {
        let clock = SystemClock::new();
        let us = clock.now_us().unwrap();
        let ns = clock.now_wall_ns().unwrap();
        assert!(us > 1_577_836_800_000_000, "now_us {us} is before 2020");
        assert!((ns / 1_000).abs_diff(us) < 1_000_000, "ns {ns} vs us {us}");
        assert!(clock.process_boot_ns() > 0 && clock.process_boot_ns() <= ns);
        let mut prev = clock.now_mono_ns();
        for _ in 0..1_000 {
            let mono = clock.now_mono_ns();
            assert!(mono >= prev, "mono went back from {prev} to {mono}");
            prev = mono;
        }
    }

    #[test]
    fn fn_clock_negative_reading_is_an_error() {
        let clock = FnClock::new(|| -5_000);
        let message = "clock reading for wall microseconds is negative: -5";
        assert_eq!(clock.now_us().unwrap_err().to_string(), message);
        assert!(matches!(
            clock.now_wall_ns(),
            Err(ClockError::Negative { value: -5_000, .. })
        ));
        // Below one microsecond still counts as negative rather than rounding to zero.
        assert!(FnClock::new(|| -1).now_us().is_err());
        assert_eq!(clock.process_boot_ns(), 0);
        assert_eq!(FnClock::new(|| 7_000).now_us().unwrap(), 7);
    }

    #[test]
    fn non_decreasing_holds_through_a_step_back() {
        let clock = NonDecreasing::new(ManualClock::new(100 * SEC_NS));
        assert_eq!(clock.now_us().unwrap(), 100_000_000);
        assert_eq!(clock.now_wall_ns().unwrap(), 100 * SEC_NS as u64);
        clock.inner().set_ns(95 * SEC_NS);
        assert_eq!(clock.now_us().unwrap(), 100_000_000);
        assert_eq!(clock.now_wall_ns().unwrap(), 100 * SEC_NS as u64);
        clock.inner().advance(Duration::from_secs(6));
        assert_eq!(clock.now_us().unwrap(), 101_000_000);
        assert_eq!(clock.now_wall_ns().unwrap(), 101 * SEC_NS as u64);
        clock.inner().set_ns(-1);
        assert!(clock.now_us().is_err(), "inner errors must propagate");
    }

    #[test]
    fn non_decreasing_sequences_are_independent() {
        let clock = NonDecreasing::new(ManualClock::new(100 * SEC_NS));
        assert_eq!(clock.now_us().unwrap(), 100_000_000);
        clock.inner().set_ns(95 * SEC_NS);
        // The nanosecond sequence never saw 100 s, so it follows; the micro one clamps.
        assert_eq!(clock.now_wall_ns().unwrap(), 95 * SEC_NS as u64);
        assert_eq!(clock.now_us().unwrap(), 100_000_000);
        clock.inner().set_ns(200 * SEC_NS);
        assert_eq!(clock.now_wall_ns().unwrap(), 200 * SEC_NS as u64);
        clock.inner().set_ns(150 * SEC_NS);
        assert_eq!(clock.now_us().unwrap(), 150_000_000);
        assert_eq!(clock.now_wall_ns().unwrap(), 200 * SEC_NS as u64);
        assert_eq!(clock.into_inner().now_us().unwrap(), 150_000_000);
    }

    #[test]
    fn manual_clock_mono_only_advances() {
        let clock = ManualClock::new(10 * SEC_NS);
        clock.advance(Duration::from_millis(3));
        clock.set_ns(SEC_NS);
        assert_eq!(clock.now_mono_ns(), 3_000_000);
        assert_eq!(clock.now_wall_ns().unwrap(), SEC_NS as u64);
        assert_eq!(clock.process_boot_ns(), 10 * SEC_NS as u64);
    }

    #[test]
    fn timestamp_next_is_strictly_greater_across_logical_overflow() {
        let ts = Timestamp::new(7, u16::MAX);
        assert_eq!(ts.next(), Timestamp::new(8, 0));
        assert!(ts.next() > ts);
        assert_eq!(Timestamp::new(7, 3).next(), Timestamp::new(7, 4));
        assert_eq!(Timestamp::MAX.checked_next(), None);
        assert_eq!(
            Timestamp::new(u64::MAX, 1).wall_ms(),
            Timestamp::WALL_MS_MAX
        );
        assert_eq!(
            Timestamp::new(1_732_550_000_000, 3).to_string(),
            "1732550000000+3"
        );
    }

    proptest! {
        #[test]
        fn timestamp_packing_round_trips_and_orders(
            a in any::<u64>(),
            b in any::<u64>(),
            wall_ms in 0..=Timestamp::WALL_MS_MAX,
            logical in any::<u16>(),
        ) {
            let (ta, tb) = (Timestamp::from_u64(a), Timestamp::from_u64(b));
            prop_assert_eq!(ta.to_u64(), a);
            prop_assert_eq!(ta.cmp(&tb), a.cmp(&b));
            let ts = Timestamp::new(wall_ms, logical);
            prop_assert_eq!(Timestamp::from_u64(ts.to_u64()), ts);
            if ts != Timestamp::MAX {
                prop_assert!(ts.next() > ts);
                prop_assert_eq!(ts.next().to_u64(), ts.to_u64() + 1);
            }
        }
    }

    fn assert_strictly_increasing(hlc: &Hlc, n_calls: usize) -> Timestamp {
        let mut prev = hlc.last();
        for _ in 0..n_calls {
            let ts = hlc.now().unwrap();
            assert!(ts > prev, "{ts} is not after {prev}");
            prev = ts;
        }
        prev
    }

    #[test]
    fn hlc_increases_while_the_clock_stands_still() {
        let hlc = Hlc::new(Arc::new(ManualClock::new(100 * SEC_NS)));
        let last = assert_strictly_increasing(&hlc, 10_000);
        assert_eq!(last, Timestamp::new(100_000, 9_999));
        assert_eq!(hlc.last(), last);
    }

    #[test]
    fn hlc_increases_across_a_step_back() {
        let clock = Arc::new(ManualClock::new(100 * SEC_NS));
        let hlc = Hlc::new(clock.clone());
        let before = assert_strictly_increasing(&hlc, 10);
        clock.set_ns(90 * SEC_NS);
        let after = assert_strictly_increasing(&hlc, 10_000);
        assert_eq!(
            after.wall_ms(),
            before.wall_ms(),
            "wall_ms must not step back"
        );
        clock.set_ns(101 * SEC_NS);
        assert_eq!(hlc.now().unwrap(), Timestamp::new(101_000, 0));
    }

    #[test]
    fn hlc_observe_raises_the_floor() {
        let hlc = Hlc::new(Arc::new(ManualClock::new(100 * SEC_NS)));
        let ahead = Timestamp::new(5_000_000, u16::MAX);
        hlc.observe(ahead);
        hlc.observe(Timestamp::new(1, 0));
        assert_eq!(hlc.now().unwrap(), Timestamp::new(5_000_001, 0));
        hlc.observe(Timestamp::MAX);
        assert!(matches!(hlc.now(), Err(ClockError::Exhausted { .. })));
    }

    #[test]
    fn hlc_is_unique_across_threads() {
        // Also exercises the Arc and Box forwarding impls.
        let boxed: Box<dyn Clock> = Box::new(SystemClock::new());
        let hlc = Arc::new(Hlc::new(Arc::new(NonDecreasing::new(boxed))));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let hlc = hlc.clone();
                std::thread::spawn(move || {
                    (0..1_000).map(|_| hlc.now().unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Timestamp> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n_calls = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n_calls, "duplicate timestamps across threads");
    }
}
