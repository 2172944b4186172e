//! The `sse-sidecar` binary: parse the command line, read the environment overrides once
//! (`config::overrides`), set up logging (colour only on a terminal; panics logged through
//! it), load the config, start the optional span export (`telemetry`), run. `schema` prints the config's JSON Schema; `check` is `check`; `learn` is
//! `learn_cmd`.

use clap::{Parser, Subcommand, ValueEnum};
use sse_sidecar::config::{self, model::LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

mod check;
mod learn_cmd;

#[derive(Parser)]
#[command(
    name = "sse-sidecar",
    version,
    about = "Real-time Server-Sent Events in front of an unchanged legacy web app"
)]
struct Cli {
    /// The YAML config file.
    #[arg(
        long,
        short,
        global = true,
        env = "SSE_SIDECAR_CONFIG",
        default_value = "conf/sidecar.yaml"
    )]
    config: PathBuf,
    /// Take the listening sockets over from a running sidecar (send it SIGQUIT): a
    /// zero-downtime deploy. See docs/operations.md.
    #[arg(long, global = true)]
    upgrade: bool,
    /// Log format (overrides logging.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config file: print every problem with its YAML path; exit 1 if any.
    /// Shows the keys environment overrides set; see docs/configuration.md.
    Check(CheckArgs),
    /// Print the JSON Schema of the config file (docs/config.schema.json).
    Schema,
    /// Print TypeScript declarations of every event type (from `event_types.<name>.schema`):
    /// one declaration per type's data, a union `SseEvent` on `type` and `SseEventMap`.
    Types,
    /// Print learn mode's suggested rules from a running sidecar (a config fragment with
    /// its evidence as comments; families in shadow); see docs/learn.md.
    Learn(LearnArgs),
    /// Run the sidecar (the default).
    Run,
}

#[derive(clap::Args)]
struct LearnArgs {
    /// The running sidecar's admin URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The variable holding the admin bearer token (as admin.token_env).
    #[arg(long)]
    token_env: Option<String>,
    /// Write the suggested families live instead of shadow.
    #[arg(long)]
    live: bool,
    /// Print this config file with the suggestions merged in (a whole file to check).
    #[arg(long)]
    into: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The file to check (default: --config).
    file: Option<PathBuf>,
    /// List every leaf key with its value and where it came from (file, env, default).
    #[arg(long)]
    sources: bool,
    /// Show what a reload of the file would change on the running sidecar at --admin.
    #[arg(long, requires = "admin")]
    diff: bool,
    /// The running sidecar's admin URL, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    admin: Option<String>,
    /// The variable holding the admin bearer token (as admin.token_env).
    #[arg(long)]
    token_env: Option<String>,
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Escape codes only for a person at a terminal, never in a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// Panics go to the log like every other error (with the thread and the place), so a
/// panicking task is never silent; what happens next is the supervisor's call (`app`).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            "panicked: {what}"
        );
    }));
}

/// Reads the environment overrides once (every load applies them); a wrong one stops
/// the command with exit 2.
fn install_overrides() -> Result<(), ExitCode> {
    match config::overrides::from_env() {
        Ok(o) => {
            config::overrides::install(o);
            Ok(())
        }
        Err(errors) => {
            for e in errors {
                eprintln!("sse-sidecar: bad environment override: {e}");
            }
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Schema) = cli.command {
        // A closed pipe (`schema | head`) is not an error of ours.
        let text = config::schema::schema_text();
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        return ExitCode::SUCCESS;
    }
    if let Err(code) = install_overrides() {
        return code;
    }
    if let Some(Command::Learn(a)) = &cli.command {
        return learn_cmd::run(&a.admin, a.token_env.as_deref(), a.live, a.into.as_deref());
    }
    if let Some(Command::Check(args)) = &cli.command {
        let path = args.file.clone().unwrap_or_else(|| cli.config.clone());
        return match (&args.admin, args.diff) {
            (Some(admin), true) => check::diff(&path, admin, args.token_env.as_deref()),
            _ => check::run(&path, args.sources),
        };
    }
    let loaded = config::load_file(&cli.config);
    if let Some(Command::Types) = cli.command {
        return print_types(&cli.config, loaded);
    }
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sse-sidecar: cannot start: {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    let format = match cli.log_format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Human) => LogFormat::Human,
        None => cfg.logging.format,
    };
    init_logging(format, &cfg.logging.level);
    log_panics();
    match sse_sidecar::telemetry::init(cfg.telemetry.otlp_endpoint.as_deref()) {
        Ok(true) => tracing::info!("exporting spans over OTLP/HTTP"),
        Ok(false) => {}
        Err(e) => {
            eprintln!("sse-sidecar: cannot start: {e}");
            return ExitCode::from(2);
        }
    }
    match sse_sidecar::app::run(cli.config.clone(), cfg, cli.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-sidecar: cannot start: {e}");
            ExitCode::from(2)
        }
    }
}

/// `types`: the declarations on stdout, or the config's problems on stderr and exit 1.
fn print_types(
    path: &std::path::Path,
    loaded: Result<config::Config, config::ConfigError>,
) -> ExitCode {
    match loaded {
        Ok(cfg) => {
            let source = path.display().to_string();
            print!(
                "{}",
                config::typescript::declarations(&cfg.event_types, &source)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

/// mimalloc instead of the system allocator: measured faster on the pass-through path
/// (glibc malloc/free was ~10% of the CPU there) with the same memory per stream (README,
/// Performance). The `system-alloc` feature keeps the system allocator, for heap profilers
/// that hook malloc (massif, heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
