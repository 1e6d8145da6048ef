//! Whether the wall clock can be trusted for readings' `ts`: a Raspberry
//! Pi has no real-time clock and runs on a wrong time (1970, or its last
//! shutdown) until NTP syncs. The kernel knows: every NTP client
//! (systemd-timesyncd, chrony, ntpd) clears its "unsynchronised" state
//! when it has set the clock, and `adjtimex(2)` reports it.
//!
//! Readings' default payload carries `"clock": "unsynced"` while the
//! kernel says the clock is not synchronised (the field is absent once it
//! is); `ts` itself is left as the clock gave it. `gateway.clock_check:
//! off` leaves the field out always (a board with a battery clock and no
//! NTP). The kernel is asked at most once a second.
//!
//! Owns the check only. Must not change the clock.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// `gateway.clock_check: off` (set once at start).
static OFF: AtomicBool = AtomicBool::new(false);
/// The last answer (`true`: synchronised) and when it was asked (ms).
static SYNCED: AtomicBool = AtomicBool::new(true);
static ASKED_MS: AtomicI64 = AtomicI64::new(i64::MIN);

/// Turns the check off (`gateway.clock_check: off`) or on.
pub fn set_check(on: bool) {
    OFF.store(!on, Relaxed);
}

/// `false` while the kernel says the wall clock is not synchronised.
pub fn synced(now_ms: i64) -> bool {
    if OFF.load(Relaxed) {
        return true;
    }
    let asked = ASKED_MS.load(Relaxed);
    if asked != i64::MIN && (now_ms - asked).abs() < 1000 {
        return SYNCED.load(Relaxed);
    }
    let s = kernel_synced();
    SYNCED.store(s, Relaxed);
    ASKED_MS.store(now_ms, Relaxed);
    s
}

/// `adjtimex(2)` with no change asked for: its return value is the clock
/// state, `TIME_ERROR` while unsynchronised. Any failure counts as
/// synchronised (no flag rather than a wrong one).
#[cfg(target_os = "linux")]
fn kernel_synced() -> bool {
    // SAFETY: `timex` is plain data, zeroed means `modes = 0` (read only);
    // adjtimex only writes into the struct we own for the call.
    let state = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        libc::adjtimex(&mut t)
    };
    state != libc::TIME_ERROR
}

#[cfg(not(target_os = "linux"))]
fn kernel_synced() -> bool {
    true
}
