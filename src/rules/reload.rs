//! Reloading rule scripts: SIGHUP recompiles every configured script file;
//! a file that no longer compiles keeps its old version running.
//!
//! Owns the reload policy and the SIGHUP listener. The list of scripts and
//! the rest of the config are read at start only: a reload re-reads the
//! script files, not `fieldgate.yaml`. Script state (`this`, deadband and
//! rate-limit memory) is kept across a reload, so a reload does not cause
//! a burst of publishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::engine::{RulesEngine, compile};
use crate::script::ScriptError;

/// What a reload did to one script.
#[derive(Debug)]
pub enum Reloaded {
    /// The new version runs from the next reading on.
    Replaced { script: Arc<str> },
    /// The file did not compile; the old version (if any) keeps running.
    Kept {
        script: Arc<str>,
        error: ScriptError,
    },
}

impl RulesEngine {
    /// Recompiles every script file. Never fails: see [`Reloaded`].
    pub fn reload(&mut self) -> Vec<Reloaded> {
        let engine = &self.engine;
        self.slots
            .iter_mut()
            .map(|slot| match compile(engine, &slot.path, &slot.name) {
                Ok(s) => {
                    slot.script = Some(s);
                    slot.counters.reloads.fetch_add(1, Ordering::Relaxed);
                    Reloaded::Replaced {
                        script: slot.name.clone(),
                    }
                }
                Err(error) => {
                    slot.counters
                        .reload_failures
                        .fetch_add(1, Ordering::Relaxed);
                    Reloaded::Kept {
                        script: slot.name.clone(),
                        error,
                    }
                }
            })
            .collect()
    }

    /// [`reload`](Self::reload), with one log line per script.
    pub fn reload_and_log(&mut self) {
        if !self.has_scripts() {
            info!("SIGHUP: no rule scripts configured, nothing to reload");
            return;
        }
        for r in self.reload() {
            match r {
                Reloaded::Replaced { script } => info!(script = %script, "rule script reloaded"),
                Reloaded::Kept { script, error } => warn!(
                    script = %script,
                    "rule script not reloaded, the previous version keeps running: {error}"
                ),
            }
        }
    }
}

/// Answers SIGHUP while no rules stage runs (`rules.payload: none`
/// without scripts: the Sparkplug node reads the sources itself), so that
/// a reload (`systemctl reload`) is logged instead of ending the gateway
/// as SIGHUP's default action would. Ends with `cancel`.
pub async fn answer_hangups_without_stage(cancel: CancellationToken) {
    let mut hup = hangups();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = next_hangup(&mut hup) => info!(
                "SIGHUP: no rule scripts configured (rules.payload: none, readings go to the Sparkplug node only), nothing to reload"
            ),
        }
    }
}

/// The SIGHUP stream, or `None` (logged) when it cannot be installed.
pub(super) fn hangups() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for SIGHUP, scripts will not reload: {e}");
            None
        }
    }
}

/// The next SIGHUP; never, without a listener.
pub(super) async fn next_hangup(hup: &mut Option<Signal>) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
