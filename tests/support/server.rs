//! The real `weir` binary on a free port, for tests that drive it as users do: started,
//! connected to with tokio-postgres, stopped cleanly or with SIGKILL.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A running `weir serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// The Postgres port.
    pub port: u16,
    /// The Kafka listener's port, unless it is off.
    pub kafka_port: Option<u16>,
    /// The HTTP listener's port, unless it is off.
    pub http_port: Option<u16>,
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &["--listen", "127.0.0.1:0"], &[])
    }

    /// `weir serve` with extra arguments and environment variables.
    pub fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        // Tests run in parallel: each server's Kafka listener gets a port of its own.
        let kafka: &[&str] = if args.contains(&"--kafka-listen") {
            &[]
        } else {
            &["--kafka-listen", "127.0.0.1:0"]
        };
        let http: &[&str] = if args.contains(&"--http") {
            &[]
        } else {
            &["--http", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .args(args)
            .args(kafka)
            .args(http)
            .arg("--data-dir")
            .arg(dir)
            .envs(env.iter().copied())
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("weir starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("weir prints its address");
        let port = line
            .split_whitespace()
            .nth(3)
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let port_of = |what: &str| {
            line.split(", ")
                .find(|part| part.ends_with(what))
                .and_then(|part| part.split_whitespace().next())
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        };
        Self {
            child,
            port,
            kafka_port: port_of("(kafka)"),
            http_port: port_of("(http)"),
        }
    }

    pub async fn client(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=weir dbname=weir", self.port),
            NoTls,
        )
        .await
        .expect("connects");
        tokio::spawn(conn);
        client
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let code = self.child.wait().expect("exits");
        assert!(code.success(), "clean shutdown, got {code}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rows of a simple query as text, NULL as "NULL".
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}: {:?}", e.as_db_error()))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// `weir gen KIND --events N` against `server`.
pub fn generate(server: &Server, kind: &str, events: u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["gen", kind, "--events", &events.to_string(), "--seed", "7"])
        .args([
            "--connect",
            &format!("postgres://weir@127.0.0.1:{}/weir", server.port),
        ])
        .output()
        .expect("weir gen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{events} events in")),
        "a progress line"
    );
}
