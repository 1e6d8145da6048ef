//! `fieldgate outbox stats | list [--dead] | retry-dead | purge`: a look into the outbox file of a
//! config's `gateway.data_dir`, with or without a running gateway.
//!
//! Owns the text these commands print. Must not start the bridge.
//! `purge` is meant for a stopped gateway: a running one keeps its own
//! depth counters until it restarts.

use std::fmt::Write as _;
use std::path::Path;

use sqlx::SqlitePool;

use super::config::Synchronous;
use super::outbox::{self, OutboxError, dead};
use crate::reading::now_ms;

/// The `fieldgate outbox` verbs.
#[derive(Debug, Clone, Copy)]
pub enum OutboxCommand {
    Stats,
    /// The first `n` messages.
    List(usize),
    /// The first `n` messages of the dead-letter table.
    ListDead(usize),
    /// Every dead-letter message back into the outbox.
    RetryDead,
    Purge,
}

fn age(ms: i64) -> String {
    let d = std::time::Duration::from_millis(ms.max(0) as u64 / 1000 * 1000);
    humantime::format_duration(d).to_string()
}

/// Runs one verb on the outbox in `data_dir` (opened with the uplink's
/// `synchronous` setting, when there is an uplink) and returns what to print.
pub async fn run_cli(
    data_dir: &Path,
    uplink: Option<&super::UplinkConfig>,
    cmd: OutboxCommand,
) -> Result<String, OutboxError> {
    let path = outbox::db_path(data_dir);
    if !path.is_file() {
        return Ok(format!(
            "no outbox at {} (nothing was ever buffered)\n",
            path.display()
        ));
    }
    let sync = uplink.map_or(Synchronous::Full, |u| u.buffer.synchronous);
    let (pool, conn) = outbox::open(data_dir, sync).await?;
    drop(conn);
    let out = match cmd {
        OutboxCommand::Stats => stats(&pool, &path).await,
        OutboxCommand::List(n) => list(&pool, n).await,
        OutboxCommand::ListDead(n) => list_dead(&pool, n).await,
        OutboxCommand::RetryDead => dead::retry(&pool).await.map(|n| {
            format!(
                "moved {n} dead-letter messages back into {} (a running gateway sends them after its next commit)\n",
                path.display()
            )
        }),
        OutboxCommand::Purge => outbox::purge(&pool)
            .await
            .map(|n| format!("purged {n} messages from {}\n", path.display())),
    }?;
    pool.close().await;
    Ok(out)
}

/// `stats`: the outbox's size, its dead letters and its oldest message.
async fn stats(pool: &SqlitePool, path: &Path) -> Result<String, OutboxError> {
    let s = outbox::stats(pool).await?;
    let mut out = String::new();
    let _ = writeln!(out, "outbox:   {}", path.display());
    let _ = writeln!(out, "messages: {}", s.messages);
    let _ = writeln!(
        out,
        "bytes:    {} ({})",
        s.bytes,
        bytesize::ByteSize(s.bytes).display().iec()
    );
    let _ = writeln!(out, "dead:     {}", dead::count(pool).await?);
    match s.oldest_ms {
        Some(ms) => {
            let _ = writeln!(out, "oldest:   {} ago", age(now_ms() - ms));
        }
        None => {
            let _ = writeln!(out, "oldest:   -");
        }
    }
    Ok(out)
}

/// `list`: the first `n` messages, their payloads cut at 60 characters.
async fn list(pool: &SqlitePool, n: usize) -> Result<String, OutboxError> {
    let rows = outbox::fetch(pool, 0, i64::MAX, n).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10}  {:>3}  {:>6}  {:>7}  {:<40}  payload",
        "id", "qos", "retain", "age", "topic"
    );
    for r in rows {
        let text = String::from_utf8_lossy(&r.payload);
        let mut shown: String = text.chars().take(60).collect();
        if text.chars().count() > 60 {
            shown.push('…');
        }
        let _ = writeln!(
            out,
            "{:>10}  {:>3}  {:>6}  {:>7}  {:<40}  {}",
            r.id,
            r.qos,
            r.retain,
            age(now_ms() - r.created_ms),
            r.topic,
            shown
        );
    }
    Ok(out)
}

/// `list --dead`: the first `n` dead letters and why they died.
async fn list_dead(pool: &SqlitePool, n: usize) -> Result<String, OutboxError> {
    let rows = dead::list(pool, n).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10}  {:>3}  {:>8}  {:>7}  {:<40}  reason",
        "id", "qos", "attempts", "dead", "topic"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>10}  {:>3}  {:>8}  {:>7}  {:<40}  {} ({} bytes)",
            r.msg.id,
            r.msg.qos,
            r.msg.attempts,
            age(now_ms() - r.dead_ms),
            r.msg.topic,
            r.reason,
            r.msg.payload.len()
        );
    }
    Ok(out)
}
