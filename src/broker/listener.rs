//! rumqttd's listener (plain MQTT) on its own thread on its own thread
//! and runtime, supervised by the gateway; and the process panic hook that
//! logs panics through tracing.
//!
//! Why a supervisor: rumqttd 0.20's `Server` keeps a mutex-protected map of
//! pending wills. A connection whose link fails after CONNECT (for example
//! a client that resets right after sending CONNECT, or one refused because
//! the broker is full) leaves a stale entry; the next connection with the
//! same client id panics on it *while holding the lock*, which poisons the
//! mutex, and from then on every new connection on that listener panics:
//! the listener is dead. The panic hook notices a panic in that code
//! (rumqttd's `server/broker.rs`) on a listener thread and asks the
//! supervisor to replace the listener with a fresh `Server`: connections of
//! that listener drop and reconnect, sessions and retained messages (kept by
//! the router) survive.
//!
//! Must not touch the router or links: it only runs `Server`s.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttd::protocol::v4::V4;
use rumqttd::{LinkType, Server, ServerSettings};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::BrokerError;

/// Panics seen since start (broker connection tasks and anything else).
pub static PANICS: AtomicU64 = AtomicU64::new(0);
/// Listener replacements after a poisoning panic (see the module doc).
pub static LISTENER_RESTARTS: AtomicU64 = AtomicU64::new(0);

/// rumqttd's router thread (`router-{id}`, id 0).
const ROUTER_THREAD: &str = "router-0";
/// Prefix of the listener threads this module names.
const LISTENER_PREFIX: &str = "broker-";
/// The rumqttd source file whose panics poison the listener's will map.
const POISONING_FILE: &str = "server/broker.rs";

thread_local! {
    /// Set on a listener thread: how the panic hook asks for a restart.
    static RESTART: RefCell<Option<Arc<Notify>>> = const { RefCell::new(None) };
}

/// Builds a fresh `Server` for a listener (it captures rumqttd's router handle).
pub type ServerFactory = Arc<dyn Fn(ServerSettings) -> Server<V4> + Send + Sync>;

/// Installs, once, a panic hook that logs panics through tracing with the
/// thread and location and counts them in [`PANICS`]. A panic on a listener
/// thread is a panic of one connection task: tokio drops that connection;
/// if it happened in rumqttd's will bookkeeping the listener is replaced
/// (module doc). A panic of the router thread leaves a broker that routes
/// nothing: the process exits with status 1 for the service manager.
pub fn log_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_string());
            if name.starts_with(LISTENER_PREFIX) {
                let poisoning = info
                    .location()
                    .is_some_and(|l| l.file().ends_with(POISONING_FILE));
                error!(
                    thread = name,
                    %location,
                    panic = %payload,
                    "broker connection task panicked (rumqttd); that client is disconnected"
                );
                if poisoning {
                    RESTART.with(|r| {
                        if let Some(n) = r.borrow().as_ref() {
                            n.notify_one();
                        }
                    });
                }
            } else if name == ROUTER_THREAD {
                error!(
                    thread = name,
                    %location,
                    panic = %payload,
                    "broker router panicked (rumqttd); exiting so that the service manager restarts the gateway"
                );
                std::process::exit(1);
            } else {
                error!(thread = name, %location, panic = %payload, "panic");
            }
        }));
    });
}

/// How long a listener waits before binding again after a failed bind.
const REBIND_WAIT: Duration = Duration::from_millis(100);

/// Starts a supervised listener thread named `broker-{settings.name}`.
pub fn spawn(
    settings: ServerSettings,
    kind: LinkType,
    factory: ServerFactory,
) -> Result<(), BrokerError> {
    let thread = format!("{LISTENER_PREFIX}{}", settings.name);
    std::thread::Builder::new()
        .name(thread)
        .spawn(move || supervise(settings, kind, factory))
        .map(drop)
        .map_err(BrokerError::Thread)
}

fn supervise(settings: ServerSettings, kind: LinkType, factory: ServerFactory) {
    let restart = Arc::new(Notify::new());
    RESTART.with(|r| *r.borrow_mut() = Some(restart.clone()));
    let listen = settings.listen;
    loop {
        let name = settings.name.clone();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                error!(listener = %name, error = %e, "cannot build the listener runtime; listener stopped");
                return;
            }
        };
        let mut server = factory(settings.clone());
        let restart = restart.clone();
        let replaced = runtime.block_on(async move {
            tokio::select! {
                r = server.start(kind) => {
                    if let Err(e) = r {
                        warn!(listener = %name, %listen, error = %e, "broker listener failed; starting it again");
                    }
                    false
                }
                _ = restart.notified() => true,
            }
        });
        // Dropping the runtime drops the listening socket and every
        // connection task of this listener (with the poisoned will map).
        drop(runtime);
        if replaced {
            LISTENER_RESTARTS.fetch_add(1, Ordering::Relaxed);
            warn!(
                listener = %settings.name,
                %listen,
                "rumqttd's will map is poisoned after a connection-task panic: restarting the listener; its clients reconnect"
            );
        } else {
            std::thread::sleep(REBIND_WAIT);
        }
        info!(listener = %settings.name, %listen, "broker listener starting again");
    }
}
