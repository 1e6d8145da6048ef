//! The `fieldgate` command line: parses arguments, sets up logging, loads the
//! config, calls into the library and maps errors to exit codes
//! (0 success, 78 configuration error, 1 any other failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fieldgate::config::{self, ConfigError};
use fieldgate::settings;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_CONFIG: the configuration is wrong.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "fieldgate",
    version,
    about = "IoT gateway: field devices to MQTT, with an embedded broker"
)]
struct Cli {
    /// Config file.
    #[arg(short = 'c', long = "config", global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format: text (colours only on a terminal) or json.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run,
    /// Validate the config and print the plan.
    Check,
    /// Rule scripts (see `rules test --help`).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Look into the uplink's outbox (the store-and-forward buffer).
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Feed readings through the configured rules and show what would be
    /// published, without starting anything. Exits 1 if a script failed.
    Test {
        /// A reading: device/point=value, e.g. boiler/temperature=21.5,
        /// "boiler/temperature=21.5 °C", line1/mode=auto. Repeat for several.
        #[arg(short = 'r', long = "reading", required = true)]
        readings: Vec<String>,
        /// Reading time between successive readings (for rate_limit and
        /// deadband max_age), e.g. 1s.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Depth, bytes and the age of the oldest message.
    Stats,
    /// The first messages, oldest first.
    List {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// The dead-letter table instead: messages the uplink gave up on.
        #[arg(long)]
        dead: bool,
    },
    /// Put every dead-letter message back at the end of the outbox.
    RetryDead,
    /// Delete every buffered message (stop the gateway first).
    Purge,
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            fmt.with_ansi(std::io::stderr().is_terminal()).boxed()
        }
    };
    // the status page's recent warnings (WARN and above, a bounded ring)
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            fieldgate::ops::logring::layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .init();
    // panics go to the log with their place (a broker connection task's
    // panic closes that connection only; tokio catches it)
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(%at, %thread, panic = %info, "a task panicked");
    }));
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ConfigError::Read { .. } | ConfigError::Invalid { .. } => ExitCode::from(EXIT_CONFIG),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Check => match settings::load(&cli.config) {
            Ok(cfg) => {
                print!("{}", fieldgate::plan::render(&cfg));
                println!("config OK: {}", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Rules(RulesCommand::Test { readings, every }) => {
            let cfg = match settings::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            match fieldgate::rules::cli::test(
                &cfg.gateway.id,
                &cfg.rules,
                &cfg.source,
                &readings,
                every,
            ) {
                Ok(report) => {
                    print!("{}", report.text);
                    if report.failures == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Outbox { action } => {
            let cfg = match settings::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            let cmd = match action {
                OutboxAction::Stats => fieldgate::bridge::OutboxCommand::Stats,
                OutboxAction::List { limit, dead: false } => {
                    fieldgate::bridge::OutboxCommand::List(limit)
                }
                OutboxAction::List { limit, dead: true } => {
                    fieldgate::bridge::OutboxCommand::ListDead(limit)
                }
                OutboxAction::RetryDead => fieldgate::bridge::OutboxCommand::RetryDead,
                OutboxAction::Purge => fieldgate::bridge::OutboxCommand::Purge,
            };
            match outbox(&cfg, cmd) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run => {
            let cfg = match settings::load(&cli.config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // the message already carries its causes: print it once
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn outbox(cfg: &settings::Config, cmd: fieldgate::bridge::OutboxCommand) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(fieldgate::bridge::run_cli(
        &cfg.gateway.data_dir,
        cfg.uplink.as_ref(),
        cmd,
    ))?)
}

/// glibc gives each thread that allocates its own malloc arena, and every
/// arena keeps the pages it touched: with the runtime's workers and the
/// SQLite and blocking threads that is about 1 MiB more resident memory for
/// no gain on two cores (benches/modbus.rs: +3.0 MiB while polling 10
/// devices with the default, +1.9 MiB with one arena). Each thread's
/// tcache still serves small allocations without the arena lock. musl (the
/// ARM builds) has one heap anyway. `MALLOC_ARENA_MAX` in the environment
/// still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before any other thread exists; mallopt only sets
        // a tunable of the allocator
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

fn run(cfg: settings::Config) -> anyhow::Result<()> {
    one_malloc_arena();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.gateway.workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(wait_for_signals(shutdown.clone()));
        let result = fieldgate::run(cfg, shutdown).await;
        signals.abort();
        result.map_err(anyhow::Error::from)
    })
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at once.
async fn wait_for_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    warn!("second signal: exiting now");
    std::process::exit(1);
}
