//! `FG_BENCH_INTERLEAVED=N` of the Modbus benchmark: the plain loop and
//! each build of the gateway measured in turn, one running at a time, N
//! rounds (`interleaved`). Uses the parent's processes and counters.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Gw, POINTS, gateway, ns_between, readings, spawn_plain, thread_ns};

/// Sends `signal` (`-STOP`, `-CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// `FG_BENCH_INTERLEAVED=N`: the plain loop and each build of the gateway
/// (`FG_BENCH_BASE`'s and this one) are started once, and then measured
/// in turn, N rounds of one window each (the loop first, then the builds,
/// in the other order every second round): the one measured runs, the
/// others are stopped (SIGSTOP; SIGCONT and 2 s to settle before its
/// window). A gateway's ratio is taken against the loop's window of the
/// same round, seconds before, so that a drift of the shared machine's
/// load over the run moves both alike; the median of the rounds is the
/// figure. Prints each round's CPU per reading (scheduler ns) and ratios.
pub(super) fn interleaved(
    dir: &std::path::Path,
    bins: &[(&str, &std::path::Path)],
    devices: &str,
    (name, payload, extra): (&str, &str, &str),
    (addrs, counts): (&[SocketAddr], &[Arc<AtomicU64>]),
    (secs, rounds): (u64, usize),
) {
    let plain = spawn_plain(addrs);
    let gws: Vec<(&str, Gw)> = bins
        .iter()
        .map(|(label, bin)| (*label, gateway(dir, bin, devices, payload, extra)))
        .collect();
    let pids: Vec<u32> = std::iter::once(plain.0.id())
        .chain(gws.iter().map(|(_, g)| g.proc.0.id()))
        .collect();
    // one window of process `k` (0: the loop) alone: CPU µs per value
    let window = |k: usize| {
        for (j, pid) in pids.iter().enumerate() {
            if j != k {
                signal(*pid, "-STOP");
            }
        }
        signal(pids[k], "-CONT");
        std::thread::sleep(Duration::from_secs(2));
        // the loop's values: the servers' requests (it runs alone) × 100
        let count = || match k {
            0 => {
                counts
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum::<u64>()
                    * u64::from(POINTS)
            }
            _ => readings(gws[k - 1].1.metrics),
        };
        let (ns0, n0) = (thread_ns(pids[k]), count());
        std::thread::sleep(Duration::from_secs(secs));
        let ns = ns_between(&ns0, &thread_ns(pids[k])).0;
        ns as f64 / count().saturating_sub(n0).max(1) as f64 / 1e3
    };
    println!(
        "interleaved, {name}: {rounds} rounds of {secs} s windows, one process running at a time; CPU per reading (scheduler ns) and ratio to the plain loop's window of the same round"
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); gws.len()];
    for round in 0..rounds {
        let plain_per = window(0);
        // the builds in turn, first to last in even rounds and last to
        // first in odd ones: a build measured second in a round read
        // higher than the same binary measured first (an A/A run: median
        // 1.58 against 1.50, higher in 6 of 8 rounds)
        let mut order: Vec<usize> = (0..gws.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut per = vec![0.0; gws.len()];
        for &i in &order {
            per[i] = window(i + 1);
        }
        let mut line = format!("  round {}: plain loop {plain_per:.3} µs", round + 1);
        for (i, (label, _)) in gws.iter().enumerate() {
            let ratio = per[i] / plain_per.max(f64::MIN_POSITIVE);
            ratios[i].push(ratio);
            let g_per = per[i];
            line += &format!("; gateway{label} {g_per:.3} µs, ratio {ratio:.2}");
        }
        let first = if order[0] == 0 {
            ""
        } else {
            " (this build first)"
        };
        println!("{line}{first}");
    }
    for pid in &pids {
        signal(*pid, "-CONT");
    }
    for ((label, _), mut r) in gws.iter().zip(ratios) {
        r.sort_by(f64::total_cmp);
        let median = r.get(r.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "  {name}{label}: median ratio {median:.2} (min {:.2}, max {:.2}) [{}] (target ≤ 1.5)",
            r.first().copied().unwrap_or(f64::NAN),
            r.last().copied().unwrap_or(f64::NAN),
            if median <= 1.5 { "PASS" } else { "MISS" }
        );
    }
}
