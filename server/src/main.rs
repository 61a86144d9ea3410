//! The `weir` binary: `weir serve` runs the Postgres wire server, `weir shell` the REPL,
//! `weir gen` and `weir bench` the generators and benchmarks of [`tools`].

mod tools;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a continuous SQL engine over a durable partitioned log"
)]
struct Cli {
    /// How logs are written to stderr: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: Postgres wire protocol on --listen, data in --data-dir.
    Serve {
        /// Address to listen on. Without --users or --password only loopback is allowed.
        #[arg(long, default_value = "127.0.0.1:5433")]
        listen: SocketAddr,
        /// Data directory (created if missing).
        #[arg(long, default_value = "./weir-data")]
        data_dir: PathBuf,
        /// Users who may connect, one `name:password` per line; they log in with SCRAM-SHA-256.
        #[arg(long)]
        users: Option<PathBuf>,
        /// A password for user `weir` (better: the WEIR_PASSWORD environment variable, which
        /// other processes cannot see); requires SCRAM-SHA-256 logins.
        #[arg(long)]
        password: Option<String>,
        /// TLS certificate chain (PEM); with --tls-key, clients can connect with sslmode=require.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// How often (milliseconds) each materialized view checkpoints its state, so that a
        /// restart resumes from there instead of replaying its sources from the start.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        checkpoint_interval_ms: u64,
        /// The most memory (MiB) one materialized view's state may hold unless it sets
        /// `WITH (memory_limit = ...)`; past it the view stops with SQLSTATE 53200, and the
        /// server and other views go on.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
        view_memory_limit_mb: u64,
        /// Address for the Kafka protocol (every stream is a topic), or `off`. Loopback only:
        /// it has no authentication yet.
        #[arg(long, default_value = "127.0.0.1:9092", value_parser = parse_kafka_listen)]
        kafka_listen: KafkaListen,
        /// Address for HTTP: the console on /, Prometheus metrics on /metrics, /healthz,
        /// /readyz, /api/...; or `off`. Off loopback it needs --users (or --password) and
        /// --tls-cert/--tls-key, and serves HTTPS with those users' passwords (HTTP Basic).
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_kafka_listen)]
        http: KafkaListen,
        /// Create a topic (a raw stream of one partition) when a Kafka client asks for or
        /// produces to one that does not exist.
        #[arg(long)]
        kafka_auto_create: bool,
    },
    /// Generate events into a running server's streams (created if missing).
    Gen {
        /// What to generate.
        #[arg(value_enum)]
        kind: tools::generate::Kind,
        /// The stream (tweets, sensors, transactions; Nexmark writes person, auction and bid).
        #[arg(long)]
        stream: Option<String>,
        /// Events per second (event time follows the clock); without it, as fast as possible.
        #[arg(long)]
        rate: Option<u64>,
        /// Stop after this many events; without it, run until stopped.
        #[arg(long)]
        events: Option<u64>,
        /// The random seed: the same seed makes the same events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The server.
        #[arg(long, default_value = "postgres://weir@127.0.0.1:5433/weir")]
        connect: String,
    },
    /// Benchmarks: `weir bench nexmark` loads Nexmark events and times each query's catch-up;
    /// `weir bench recovery` times checkpoints and restarts; `weir bench kafka` times produce
    /// and fetch through the Kafka listener with librdkafka.
    Bench {
        /// The benchmark (nexmark, recovery or kafka).
        #[arg(value_parser = ["nexmark", "recovery", "kafka"])]
        suite: String,
        /// Events to load (persons, auctions and bids together; for `kafka`, records).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Queries to run, comma-separated (q0,q1,q2,q3,q4,q5,q7,q8,q9,q10,q11,q13,q15,...,q22,over,hashtags);
        /// all by default.
        #[arg(long, value_delimiter = ',')]
        query: Vec<String>,
        /// Where to write the table as CSV.
        #[arg(long, default_value = "bench-nexmark.csv")]
        csv: PathBuf,
        /// Events per second for the end-to-end latency run.
        #[arg(long, default_value_t = 100_000)]
        latency_rate: u64,
        /// Seconds of the latency run (0 skips it).
        #[arg(long, default_value_t = 10)]
        latency_seconds: u64,
        /// Runs without the operators' counters (weir_operators, EXPLAIN ANALYZE), to measure
        /// what they cost.
        #[arg(long)]
        no_operator_stats: bool,
        /// For `recovery`: distinct keys of window state.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// For `recovery`: the checkpoint interval (milliseconds) of the run with checkpoints.
        #[arg(long, default_value_t = 1000)]
        checkpoint_interval_ms: u64,
    },
    /// Run the interactive shell on an embedded engine.
    Shell {
        /// Data directory of the embedded engine (created if missing).
        #[arg(long, default_value = "./weir-data")]
        data_dir: PathBuf,
        /// Talk to a running server instead: postgres://user@host:port/weir
        #[arg(long)]
        connect: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            users,
            password,
            tls_cert,
            tls_key,
            checkpoint_interval_ms,
            view_memory_limit_mb,
            kafka_listen,
            kafka_auto_create,
            http,
        } => {
            let password = password.or_else(|| std::env::var("WEIR_PASSWORD").ok());
            let tls = tls_cert.zip(tls_key);
            match load_users(users, password) {
                Ok(users) => runtime.block_on(serve(weir_server::ServeConfig {
                    listen,
                    data_dir,
                    users,
                    tls,
                    checkpoint_interval: std::time::Duration::from_millis(checkpoint_interval_ms),
                    view_memory_limit: view_memory_limit_mb << 20,
                    kafka_listen: kafka_listen.0,
                    kafka_auto_create,
                    http_listen: http.0,
                })),
                Err(e) => Err(e),
            }
        }
        Command::Gen {
            kind,
            stream,
            rate,
            events,
            seed,
            connect,
        } => runtime.block_on(tools::generate::run(tools::generate::GenOptions {
            kind,
            stream,
            rate,
            events,
            seed,
            connect,
        })),
        Command::Bench {
            suite,
            events,
            keys,
            checkpoint_interval_ms,
            ..
        } if suite == "recovery" => {
            runtime.block_on(tools::bench::recovery(tools::bench::RecoveryOptions {
                events,
                keys,
                checkpoint_interval: std::time::Duration::from_millis(checkpoint_interval_ms),
            }))
        }
        Command::Bench { suite, events, .. } if suite == "kafka" => runtime.block_on(
            tools::bench_kafka::kafka(tools::bench_kafka::KafkaBenchOptions {
                records: events,
                csv: "bench-kafka.csv".into(),
            }),
        ),
        Command::Bench {
            suite: _,
            events,
            query,
            csv,
            latency_rate,
            latency_seconds,
            no_operator_stats,
            ..
        } => {
            weir_engine::stats::set_enabled(!no_operator_stats);
            runtime.block_on(tools::bench::nexmark(tools::bench::BenchOptions {
                events,
                queries: query,
                csv,
                latency_rate,
                latency_seconds,
            }))
        }
        Command::Shell { data_dir, connect } => runtime
            .block_on(weir_shell::run(&weir_shell::Options {
                data_dir,
                connect,
                database: weir_sql::Options {
                    connectors: Some(weir_server::kafka::connectors::KafkaConnectors::shared()),
                    ..weir_sql::Options::default()
                },
            }))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--kafka-listen` and `--http`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct KafkaListen(Option<SocketAddr>);

fn parse_kafka_listen(s: &str) -> Result<KafkaListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(KafkaListen(None));
    }
    s.parse()
        .map(|a| KafkaListen(Some(a)))
        .map_err(|e| format!("{e}: give HOST:PORT or off"))
}

/// The users from --users and --password (user `weir`), if any.
fn load_users(
    file: Option<PathBuf>,
    password: Option<String>,
) -> Result<Option<std::sync::Arc<weir_server::auth::Users>>, String> {
    let mut users = match &file {
        Some(path) => weir_server::auth::Users::load(path).map_err(|e| e.to_string())?,
        None => weir_server::auth::Users::default(),
    };
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        users.add("weir", &p).map_err(|e| e.to_string())?;
    }
    Ok((!users.is_empty()).then(|| std::sync::Arc::new(users)))
}

async fn serve(config: weir_server::ServeConfig) -> Result<(), String> {
    let server = weir_server::Server::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let db = server.database().clone();
    let kafka = server
        .kafka_addr()
        .map_or_else(String::new, |k| format!(", {k} (kafka)"));
    let http = server
        .http_addr()
        .map_or_else(String::new, |h| format!(", {h} (http)"));
    // Tests and scripts wait for this line.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "weir listening on {addr} (postgres wire){kafka}{http}, data in {}",
        config.data_dir.display()
    );
    let _ = out.flush();
    tokio::select! {
        r = server.run() => r.map_err(|e| e.to_string()),
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            db.shutdown();
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
