/// The engine allocates small strings per event; mimalloc is far faster than glibc's
/// allocator for that pattern (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use wabill::billing::statement::render;
use wabill::billing::{MarketMap, RateCard, VolumeTiers};
use wabill::config::Config;
use wabill::ops::{init_logging, LogFormat};
use wabill::pipeline::engine::Setup;
use wabill::runtime::kafka::StageKind;
use wabill::runtime::replay::{self, ReplayOptions};
use wabill::sim::{self, SimConfig};

#[derive(Parser)]
#[command(
    name = "wabill",
    version,
    about = "Meters WhatsApp Business conversations from Meta webhooks"
)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bill webhook files offline (no broker): JSON lines in, one record per conversation out.
    Replay {
        /// Webhook payloads, one JSON document per line; `-` reads stdin. Repeatable.
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// Where to write the records (JSON lines); `-` for stdout.
        #[arg(long)]
        output: String,
        /// Where to write dead letters (JSON lines). Default: stderr.
        #[arg(long)]
        dead_letter: Option<String>,
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rate card (CSV). Default: the bundled SAMPLE card.
        #[arg(long)]
        rates: Option<PathBuf>,
        /// Country → market mapping (CSV). Default: the bundled mapping.
        #[arg(long)]
        markets: Option<PathBuf>,
        /// Volume tiers (CSV: effective_from,market,currency,category,from,to,rate);
        /// overrides the config's `tiers`. Default: the bundled SAMPLE bands with the
        /// bundled card, none with a card of your own.
        #[arg(long)]
        tiers: Option<PathBuf>,
        /// RocksDB state directory. Default: a temporary directory removed at exit.
        /// Reusing a directory continues from its state.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print the month statement on stdout.
        #[arg(long)]
        summary: bool,
        /// No progress line or run report on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the Kafka stream processor (ingest → windows → ledger) until SIGTERM/SIGINT.
    Run {
        /// Configuration file (TOML); `WABILL_...` environment variables override it, and
        /// flags override both.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bootstrap servers (overrides `[kafka] brokers`).
        #[arg(long)]
        brokers: Option<String>,
        /// RocksDB state directory (overrides `[state] dir`).
        #[arg(long)]
        state_dir: Option<String>,
        /// Stages to run in this process (default: all three).
        #[arg(long, value_enum, value_delimiter = ',')]
        stages: Vec<wabill::runtime::kafka::StageKind>,
        /// Rate card (CSV). Default: the bundled SAMPLE card.
        #[arg(long)]
        rates: Option<PathBuf>,
        /// Country → market mapping (CSV). Default: the bundled mapping.
        #[arg(long)]
        markets: Option<PathBuf>,
        /// Volume tiers (CSV: effective_from,market,currency,category,from,to,rate);
        /// overrides the config's `tiers`. Default: the bundled SAMPLE bands with the
        /// bundled card, none with a card of your own.
        #[arg(long)]
        tiers: Option<PathBuf>,
        /// Address of /metrics, /healthz and /readyz (overrides `[http] addr`); empty
        /// turns the endpoint off.
        #[arg(long)]
        http_addr: Option<String>,
    },
    /// Produce webhook files (JSON lines, as `replay` reads them) to the webhooks topic.
    Produce {
        /// Webhook payloads, one JSON document per line; `-` reads stdin. Repeatable.
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// Configuration file (TOML): `[kafka]` brokers, prefix, topics, properties.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bootstrap servers (overrides `[kafka] brokers`).
        #[arg(long)]
        brokers: Option<String>,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Read the billing topic (deduplicated) and print the month statements once the
    /// stream has drained.
    Statements {
        /// Configuration file (TOML): `[kafka]`, and `[[waba]]` for free-tier limits.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bootstrap servers (overrides `[kafka] brokers`).
        #[arg(long)]
        brokers: Option<String>,
        /// The stream counts as drained after this many seconds at the end of the billing
        /// topic with no new record (more than `[kafka] idle_flush_ms`).
        #[arg(long, default_value_t = 20)]
        drained_after_secs: u64,
        /// Give up waiting (statements are then partial, with a warning).
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// Also write the records (JSON lines, as `replay --output`) here.
        #[arg(long)]
        output: Option<String>,
    },
    /// Generate simulated webhook traffic (deterministic for a seed).
    Gen {
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        users: u64,
        #[arg(long, default_value_t = 4)]
        wabas: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// First day, YYYY-MM-DD (UTC).
        #[arg(long, default_value = "2022-03-01")]
        start: String,
        #[arg(long, default_value_t = 31)]
        days: i64,
        /// Share of users that belong to the first WABA.
        #[arg(long, default_value_t = 0.4)]
        first_waba_share: f64,
        /// Send-log records and Meta's pricing objects with a category (needed from
        /// 2023-06-01; from 2025-07-01 Meta's per-message `PMP` objects): `auto` turns them
        /// on when the period reaches 2023-06-01.
        #[arg(long, value_enum, default_value = "auto")]
        send_log: SendLogMode,
        /// Output file; `-` for stdout.
        #[arg(long, default_value = "-")]
        output: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SendLogMode {
    Auto,
    On,
    Off,
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        eprintln!("wabill: error: {e:#}");
        std::process::exit(1);
    }
}

fn load_setup(
    cfg: &Config,
    rates: Option<&std::path::Path>,
    markets: Option<&std::path::Path>,
    tiers: Option<&std::path::Path>,
) -> Result<Setup> {
    let card = match rates {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            RateCard::parse(&text).with_context(|| format!("{}", p.display()))?
        }
        None => RateCard::bundled_sample()?,
    };
    let market_map = match markets {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            MarketMap::parse(&text).with_context(|| format!("{}", p.display()))?
        }
        None => MarketMap::bundled(),
    };
    let volume_tiers = match tiers.or(cfg.tiers.as_deref()) {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            VolumeTiers::parse(&text).with_context(|| format!("{}", p.display()))?
        }
        // The sample bands go with the sample card only: a BSP's own card with the sample
        // bands would misprice.
        None if rates.is_none() => VolumeTiers::bundled_sample()?,
        None => {
            tracing::warn!("no volume tiers given (--tiers or `tiers`): every message is priced at the card's rate");
            VolumeTiers::none()
        }
    };
    Ok(Setup::new(cfg, card, market_map)?.with_tiers(volume_tiers))
}

/// SIGTERM/SIGINT set the shutdown flag: stages finish and persist their batch, then
/// leave their consumer groups.
fn spawn_signal_watcher(flag: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("wabill-signals".into())
        .spawn(move || {
            rt.block_on(async {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch SIGTERM");
                        return;
                    }
                };
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: finishing the current batch"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the current batch"),
                }
                flag.store(true, Ordering::SeqCst);
            });
        })?;
    Ok(())
}

/// Config for the Kafka commands: file, then `WABILL_...` environment, then `--brokers`.
fn kafka_config(path: Option<&std::path::Path>, brokers: Option<String>) -> Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(b) = brokers {
        cfg.kafka.brokers = b;
    }
    Ok(cfg)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            brokers,
            state_dir,
            stages,
            rates,
            markets,
            tiers,
            http_addr,
        } => {
            let mut cfg = kafka_config(config.as_deref(), brokers)?;
            if let Some(d) = state_dir {
                cfg.state.dir = d;
            }
            if let Some(a) = http_addr {
                cfg.http.addr = a;
            }
            // First, so /healthz answers (and /readyz says why not ready) during start-up.
            let http = if cfg.http.addr.is_empty() {
                None
            } else {
                Some(wabill::ops::http::start(
                    &cfg.http.addr,
                    wabill::ops::http::HttpOptions::default(),
                )?)
            };
            let setup = load_setup(&cfg, rates.as_deref(), markets.as_deref(), tiers.as_deref())?;
            if rates.is_none() {
                tracing::warn!("no --rates given: pricing with the bundled SAMPLE rate card (not Meta's prices)");
            }
            let stages = if stages.is_empty() {
                vec![StageKind::Ingest, StageKind::Windows, StageKind::Ledger]
            } else {
                stages
            };
            let shutdown = Arc::new(AtomicBool::new(false));
            spawn_signal_watcher(shutdown.clone())?;
            tracing::info!(brokers = %cfg.kafka.brokers, prefix = %cfg.kafka.prefix, state_dir = %cfg.state.dir, "wabill run starting");
            let result = wabill::runtime::kafka::run(&cfg, &setup, &stages, shutdown);
            // Stages are done (or failed): finish in-flight scrapes, then stop serving.
            if let Some(http) = http {
                http.shutdown();
            }
            result?;
            tracing::info!("wabill run stopped cleanly");
            Ok(())
        }
        Command::Produce {
            inputs,
            config,
            brokers,
            quiet,
        } => {
            let cfg = kafka_config(config.as_deref(), brokers)?;
            let n = wabill::runtime::kafka::tools::produce_webhooks(&cfg, &inputs, !quiet)?;
            if !quiet {
                eprintln!(
                    "wabill produce: {n} payloads acknowledged on {}",
                    cfg.kafka.webhooks_topic()
                );
            }
            Ok(())
        }
        Command::Statements {
            config,
            brokers,
            drained_after_secs,
            timeout_secs,
            output,
        } => {
            let mut cfg = kafka_config(config.as_deref(), brokers)?;
            // Reads records the ledger already wrote (hashed or not): bills nothing, so it
            // needs no user hash key even with the run's configuration file.
            cfg.privacy.hash_users = false;
            let setup = load_setup(&cfg, None, None, None)?;
            let records = wabill::runtime::kafka::tools::read_billing(
                &cfg,
                std::time::Duration::from_secs(drained_after_secs),
                std::time::Duration::from_secs(timeout_secs),
                true,
            )?;
            if let Some(path) = &output {
                replay::write_records(path, &records)?;
            }
            // The counters live in the ledger's state, not on the topic: "used" is what the
            // records show.
            let st = wabill::billing::statement::statements(
                &records,
                |waba, _month| (0, u64::from(setup.profiles.get(waba).free_tier)),
                |waba, _number, _month| (0, u64::from(setup.profiles.get(waba).service_free_tier)),
            );
            let mut out = std::io::stdout().lock();
            out.write_all(render(&st).as_bytes())?;
            out.flush()?;
            Ok(())
        }
        Command::Replay {
            inputs,
            output,
            dead_letter,
            config,
            rates,
            markets,
            tiers,
            state_dir,
            summary,
            quiet,
        } => {
            let cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config::default(),
            };
            let setup = load_setup(&cfg, rates.as_deref(), markets.as_deref(), tiers.as_deref())?;
            if rates.is_none() && !quiet {
                eprintln!("wabill: no --rates given: pricing with the bundled SAMPLE rate card (not Meta's prices)");
            }
            let to_stdout = output == "-";
            let opts = ReplayOptions {
                inputs,
                output: Some(output),
                dead_letter,
                state_dir,
                progress: !quiet,
            };
            let report = replay::run(&cfg, &setup, &opts)?;
            let text = render(&report.statements);
            if summary {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
            } else if !to_stdout && !quiet {
                eprint!("{text}");
            }
            Ok(())
        }
        Command::Gen {
            events,
            users,
            wabas,
            seed,
            start,
            days,
            first_waba_share,
            send_log,
            output,
        } => {
            let start_date = chrono::NaiveDate::parse_from_str(&start, "%Y-%m-%d")
                .with_context(|| format!("--start {start:?} is not YYYY-MM-DD"))?;
            let start_ts = start_date
                .and_hms_opt(0, 0, 0)
                .context("midnight")?
                .and_utc()
                .timestamp();
            let cfg = SimConfig {
                seed,
                events,
                users,
                wabas,
                start: start_ts,
                days,
                first_waba_share,
                send_log: match send_log {
                    SendLogMode::On => true,
                    SendLogMode::Off => false,
                    SendLogMode::Auto => start_ts + days * 86_400 > sim::CATEGORY_ERAS_FROM,
                },
                ..SimConfig::default()
            };
            let out: Box<dyn Write> = if output == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(&output).with_context(|| format!("cannot create {output}"))?)
            };
            let mut w = std::io::BufWriter::new(out);
            let mut err = None;
            sim::generate(&cfg, |line| {
                if err.is_none() {
                    if let Err(e) = w.write_all(line.as_bytes()).and_then(|_| w.write_all(b"\n")) {
                        err = Some(e);
                    }
                }
            });
            if let Some(e) = err {
                return Err(e).context(format!("cannot write {output}"));
            }
            w.flush()?;
            Ok(())
        }
    }
}
