//! psql against Weir and against a real PostgreSQL, statement by statement, byte for byte.
//!
//! Every statement of `tests/differential/corpus.sql` runs through psql (aligned output, errors
//! as their SQLSTATE: `VERBOSITY=sqlstate`) against a `weir serve` and against a PostgreSQL
//! cluster this test makes with `initdb` and removes afterwards. The outputs must be equal,
//! except for the statements listed, each with its reason, in `tests/differential/accepted.txt`;
//! a listed statement whose outputs have become equal fails the test too, so the list stays true.
//!
//! PostgreSQL's server programs come from Debian's `postgresql` package (`.ci/run` installs it),
//! or from the directory in `WEIR_PG_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/server.rs"]
mod server;
use server::Server;

/// A PostgreSQL cluster of its own in a temporary directory, listening only on a Unix socket
/// there (so no port can clash); stopped and removed when dropped.
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Runs a server program as `postgres` where this test runs as root, which initdb refuses.
    as_user: Vec<String>,
}

impl Postgres {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let as_user: Vec<String> = if root {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
            assert!(
                chown.is_ok_and(|s| s.success()),
                "chown to postgres (Debian's postgresql package makes the user)"
            );
            ["runuser", "-u", "postgres", "--"].map(String::from).into()
        } else {
            Vec::new()
        };
        let pg = Self { bin, dir, as_user };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        let options = format!(
            "-c listen_addresses='' -k {} -c TimeZone=UTC -c fsync=off",
            path_str(pg.dir.path())
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
        );
        pg
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let (first, rest) = match self.as_user.split_first() {
            Some((first, rest)) => (first.as_str(), rest.to_vec()),
            None => (path_str(&program), Vec::new()),
        };
        let mut cmd = Command::new(first);
        cmd.args(rest);
        if !self.as_user.is_empty() {
            cmd.arg(&program);
        }
        let out = cmd.args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The directory of `initdb` and `pg_ctl`: `WEIR_PG_BIN`, or the newest Debian install.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL's server programs are required (apt-get install postgresql, or set \
         WEIR_PG_BIN); .ci/run installs them",
    )
}

/// psql's output (stdout and stderr) of one statement.
fn psql(connection: &[&str], statement: &str) -> String {
    let out = Command::new("psql")
        .arg("-X")
        .args(connection)
        .args(["-v", "VERBOSITY=sqlstate", "-c", statement])
        .env("LC_ALL", "C.UTF-8")
        .env("PGTZ", "UTC")
        .output()
        .expect("psql runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// The corpus: one statement per line; blank lines and `--` comments left out.
fn statements(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .collect()
}

/// The accepted differences: a statement on a line of its own, then its reason on indented
/// lines. Every statement must have a reason.
fn accepted(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') {
            let (_, why) = out.last_mut().expect("a reason follows its statement");
            why.push_str(line.trim());
            why.push(' ');
        } else {
            out.push((line.trim_end(), String::new()));
        }
    }
    for (statement, why) in &out {
        assert!(!why.is_empty(), "accepted.txt: no reason for {statement}");
    }
    out
}

#[test]
fn psql_prints_what_postgres_prints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/differential");
    let corpus = std::fs::read_to_string(dir.join("corpus.sql")).expect("corpus.sql");
    let accepted_text = std::fs::read_to_string(dir.join("accepted.txt")).expect("accepted.txt");
    let statements = statements(&corpus);
    let accepted = accepted(&accepted_text);
    assert!(
        statements.len() >= 200,
        "a corpus of at least 200 statements"
    );
    for (statement, _) in &accepted {
        assert!(
            statements.contains(statement),
            "accepted.txt lists a statement the corpus does not have: {statement}"
        );
    }

    let pg = Postgres::start();
    let weir_dir = tempfile::tempdir().expect("tempdir");
    let weir = Server::start(weir_dir.path());
    let weir_port = weir.port.to_string();
    let weir_conn = ["-h", "127.0.0.1", "-p", &weir_port, "-U", "weir", "weir"];
    let pg_conn = ["-h", path_str(pg.dir.path()), "-U", "postgres", "postgres"];

    let mut unexpected = Vec::new();
    let mut now_equal = Vec::new();
    for statement in &statements {
        let ours = psql(&weir_conn, statement);
        let theirs = psql(&pg_conn, statement);
        let listed = accepted.iter().any(|(s, _)| s == statement);
        match (ours == theirs, listed) {
            (false, false) => unexpected.push(format!(
                "=== {statement}\n--- PostgreSQL\n{theirs}--- Weir\n{ours}"
            )),
            (true, true) => now_equal.push(*statement),
            _ => {}
        }
    }
    assert!(
        unexpected.is_empty() && now_equal.is_empty(),
        "{} of {} statements print differently from PostgreSQL and are not in accepted.txt:\n{}\n\
         listed in accepted.txt but now equal (remove them): {now_equal:#?}",
        unexpected.len(),
        statements.len(),
        unexpected.join("\n")
    );
    eprintln!(
        "{} statements: {} print as PostgreSQL does, {} accepted differences",
        statements.len(),
        statements.len() - accepted.len(),
        accepted.len()
    );
}
