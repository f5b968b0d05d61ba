//! Shared helpers for the end-to-end tests: the real `calmony` binary as a child process.

pub mod api;
pub mod browser;
pub mod griffin;
pub mod hosted_checkout;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Variables cargo sets for a test or bench it runs, besides `CARGO_PKG_*` and
/// `CARGO_MANIFEST_*`.
const CARGO_RUN_VARIABLES: [&str; 6] = [
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Whether a variable was set by cargo for this test or bench process, as opposed to by the
/// shell it was started from.
fn set_by_cargo_for_this_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_BIN_EXE_")
        || CARGO_RUN_VARIABLES.contains(&name)
}

/// The `calmony` binary of this build, built on first use.
///
/// The nested `cargo build` runs with the environment a shell has, not the one cargo gave
/// this process (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, `OUT_DIR`, …): ring's build script
/// tracks some of those (`rerun-if-env-changed`), so passing them on would make the nested
/// build and the next `cargo test`/`cargo bench` each find ring, and everything above it,
/// stale and rebuild it, minutes every run.
pub fn calmony_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // Test executables live in <target>/<profile>/deps; the binary one level up.
        let executable = std::env::current_exe().expect("test executable path");
        let profile_dir = executable
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "calmony", "--bin", "calmony"]);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if set_by_cargo_for_this_run(&name) {
                build.env_remove(name.as_ref());
            }
        }
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building calmony failed");
        profile_dir.join("calmony")
    })
}

/// A `calmony` command against the database at `database_url`.
pub fn calmony(database_url: &str) -> Command {
    let mut command = Command::new(calmony_binary());
    command
        .env("DATABASE_URL", database_url)
        .env("CALMONY_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Runs a CLI command to completion.
pub fn run(database_url: &str, args: &[&str]) -> Output {
    calmony(database_url)
        .args(args)
        .output()
        .expect("run calmony")
}

/// `calmony operators create`, the password on standard input as a script would pipe it;
/// the operator's id. Checks that the password is never echoed.
pub fn create_operator(database_url: &str, email: &str, name: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = calmony(database_url)
        .args(["operators", "create", "--email", email, "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run calmony operators create");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write the password");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{}", stderr_of(&output));
    let printed = format!("{}{}", stdout_of(&output), stderr_of(&output));
    assert!(!printed.contains(password), "the password was echoed");
    stdout_of(&output).trim().to_string()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The journal's balance (debit − credit, minor units) of `account` for `project` in test
/// mode, in GBP.
pub async fn journal_balance(pool: &sqlx::PgPool, project: &str, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(debit_minor - credit_minor), 0)::bigint FROM journal.balances \
         WHERE project = $1 AND NOT livemode AND currency = 'gbp' AND account = $2",
    )
    .bind(project)
    .bind(account)
    .fetch_one(pool)
    .await
    .expect("a journal balance")
}

/// `calmony serve` on a free port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base_url: String,
}

impl Server {
    pub fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        Self::spawn(database_url, &["serve", "--addr", "127.0.0.1:0"], extra_env)
    }

    /// `calmony serve` charging a Cardstream simulator that runs as its own process, as the
    /// real gateway would; both are killed when dropped (keep the pair alive).
    pub fn start_with_gateway(database_url: &str, extra_env: &[(&str, &str)]) -> (Server, Server) {
        let gateway = Server::cardstream_simulator();
        let direct_url = format!("{}/direct/", gateway.base_url);
        let mut env: Vec<(&str, &str)> = vec![("CALMONY_CARDSTREAM_TEST_URL", &direct_url)];
        env.extend_from_slice(extra_env);
        (Server::start(database_url, &env), gateway)
    }

    /// `calmony cardstream-sim` on a free port: the gateway as a process of its own, whose
    /// state outlives a crashed server.
    pub fn cardstream_simulator() -> Server {
        Self::spawn(
            "postgres://unused",
            &["cardstream-sim", "--addr", "127.0.0.1:0"],
            &[],
        )
    }

    /// Any long-running `calmony` command that prints `listening on <url>` when ready.
    pub fn spawn(database_url: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        Self::spawn_with_log(database_url, args, extra_env, None)
    }

    /// As [`Server::spawn`], with the process's log (stderr) written to `log_file`.
    pub fn spawn_with_log(
        database_url: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
        log_file: Option<&Path>,
    ) -> Server {
        Self::spawn_until(database_url, args, extra_env, log_file, "listening on ")
    }

    /// `calmony webhooks run`: a webhook relay without the HTTP server, killed when dropped
    /// (its `base_url` is empty).
    pub fn webhook_relay(database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        Self::spawn_until(
            database_url,
            &["webhooks", "run"],
            extra_env,
            None,
            "webhook relay running",
        )
    }

    /// Spawns a long-running command and waits for the stdout line starting with `ready`;
    /// what follows it on that line is the `base_url`.
    fn spawn_until(
        database_url: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
        log_file: Option<&Path>,
        ready: &str,
    ) -> Server {
        let mut command = calmony(database_url);
        let stderr = match log_file {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::inherit(),
        };
        command.args(args).stdout(Stdio::piped()).stderr(stderr);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn calmony serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let base_url = loop {
            assert!(Instant::now() < deadline, "calmony serve did not start");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix(ready) {
                        break url.trim().to_string();
                    }
                }
                _ => panic!("calmony serve exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base_url }
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to a child.
pub fn kill_hard(child: &mut Child) {
    // SAFETY: kill(2) on a pid we own; it cannot affect memory safety.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}
