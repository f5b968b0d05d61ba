//! The managed PostgreSQL server, run the way CI and users run it: as root, from the
//! machine's own binaries, with real processes, a real restart and a real crash.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_store::managed_postgres::{
    ManagedPostgres, ManagedPostgresError, ManagedPostgresOptions,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

const PROCESS_EXIT_WAIT_MS: u64 = 10_000;

async fn connect(server: &ManagedPostgres) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&server.url("postgres"))
        .await
        .expect("connect to the managed server")
}

fn durable(data_dir: &Path) -> ManagedPostgresOptions {
    ManagedPostgresOptions {
        data_dir: data_dir.to_path_buf(),
        bin_dir: None,
        port: None,
        temporary: false,
    }
}

fn accepts_tcp(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Every live process of the cluster: the postmaster and its children work in it.
fn cluster_processes(cluster: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == cluster)
        })
        .collect()
}

/// Kills every process of the server at once, as a power cut would, and waits until they
/// are gone, leaving the pid file, the shared memory key and unreplayed WAL behind.
fn crash(cluster: &Path) {
    let pids = cluster_processes(cluster);
    assert!(
        !pids.is_empty(),
        "no server processes found for {}",
        cluster.display()
    );
    for pid in &pids {
        // SAFETY: kill has no memory preconditions; the pids are the server's processes.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_millis(PROCESS_EXIT_WAIT_MS);
    while !cluster_processes(cluster).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the killed server processes did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        cluster.join("postmaster.pid").exists(),
        "a crash leaves the pid file behind"
    );
}

#[tokio::test]
async fn a_temporary_server_answers_queries_and_leaves_nothing_behind() {
    let options = ManagedPostgresOptions::temporary();
    let data_dir = options.data_dir.clone();
    let clock = Instant::now();
    let server = ManagedPostgres::start(options).await.expect("start");
    eprintln!(
        "managed PostgreSQL: temporary first start (initdb --no-sync + start) {} ms",
        clock.elapsed().as_millis()
    );
    let port = server.port();
    assert_eq!(
        server.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );

    let pool = connect(&server).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    let (encoding, collate): (String, String) =
        sqlx::query_as("SELECT current_setting('server_encoding'), current_setting('lc_collate')")
            .fetch_one(&pool)
            .await
            .expect("settings");
    assert_eq!((encoding.as_str(), collate.as_str()), ("UTF8", "C"));
    sqlx::query("CREATE TABLE notes (body text NOT NULL)")
        .execute(&pool)
        .await
        .expect("create table");
    sqlx::query("INSERT INTO notes VALUES ('é')")
        .execute(&pool)
        .await
        .expect("insert");
    let upper: String = sqlx::query_scalar("SELECT upper(body) FROM notes")
        .fetch_one(&pool)
        .await
        .expect("select");
    assert_eq!(
        upper, "É",
        "C.UTF-8 character classes where the C library has them"
    );
    pool.close().await;

    server.stop().await.expect("stop");
    assert!(
        !data_dir.exists(),
        "a temporary data directory is removed on stop"
    );
    assert!(!accepts_tcp(port), "the server is down after stop");
}

#[tokio::test]
async fn dropping_a_temporary_server_stops_it_and_removes_its_directory() {
    let options = ManagedPostgresOptions::temporary();
    let data_dir = options.data_dir.clone();
    let server = ManagedPostgres::start(options).await.expect("start");
    let port = server.port();
    assert!(accepts_tcp(port));

    drop(server);

    assert!(!accepts_tcp(port), "the server is down after drop");
    assert!(!data_dir.exists(), "the data directory is removed on drop");
}

#[tokio::test]
async fn committed_rows_survive_a_restart_and_a_crash() {
    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().to_path_buf();
    let cluster = std::fs::canonicalize(&data_dir)
        .expect("canonical")
        .join("pgdata");

    // First start: initdb, then the server. Failures are asserted only once the server is
    // stopped, so that a failing test does not leave a durable server running.
    let clock = Instant::now();
    let server = ManagedPostgres::start(durable(&data_dir))
        .await
        .expect("first start");
    let first_start = clock.elapsed();
    let pool = connect(&server).await;
    let written = async {
        sqlx::query("CREATE TABLE payments (id text PRIMARY KEY, amount_minor bigint NOT NULL)")
            .execute(&pool)
            .await?;
        sqlx::query("INSERT INTO payments VALUES ('pi_1', 1250)")
            .execute(&pool)
            .await
    }
    .await;
    pool.close().await;
    server.stop().await.expect("stop after the first start");
    written.expect("write the first row");
    assert!(
        cluster.join("PG_VERSION").exists(),
        "a durable cluster stays"
    );

    // Restart after a clean stop: the row is there; write a second one and crash.
    let clock = Instant::now();
    let server = ManagedPostgres::start(durable(&data_dir))
        .await
        .expect("restart");
    let restart = clock.elapsed();
    let pool = connect(&server).await;
    let after_restart = async {
        let amount: i64 = sqlx::query_scalar("SELECT amount_minor FROM payments WHERE id = 'pi_1'")
            .fetch_one(&pool)
            .await?;
        sqlx::query("INSERT INTO payments VALUES ('pi_2', 990)")
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(amount)
    }
    .await;
    pool.close().await;
    if after_restart.is_err() {
        server.stop().await.expect("stop after a failed check");
    } else {
        crash(&cluster);
        drop(server); // durable: dropping it does nothing to the (dead) server
    }
    assert_eq!(after_restart.expect("read after the restart"), 1250);

    // Start after the crash: a stale pid file, WAL to replay. This time as a temporary
    // server, so that stop (or drop, on a failed assertion) removes the directory.
    let clock = Instant::now();
    let mut options = durable(&data_dir);
    options.temporary = true;
    let server = ManagedPostgres::start(options)
        .await
        .expect("start after a crash");
    let recovery = clock.elapsed();
    let pool = connect(&server).await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, amount_minor FROM payments ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("read after the crash");
    assert_eq!(
        rows,
        vec![("pi_1".to_string(), 1250), ("pi_2".to_string(), 990)],
        "every committed row survives"
    );
    pool.close().await;
    server.stop().await.expect("stop");
    assert!(!data_dir.exists());

    eprintln!(
        "managed PostgreSQL: first start (initdb + start) {} ms, restart {} ms, start after a \
         crash {} ms",
        first_start.as_millis(),
        restart.as_millis(),
        recovery.as_millis()
    );
}

#[tokio::test]
async fn a_stale_pid_file_naming_another_live_process_does_not_block_the_start() {
    // After a reboot or a container restart the pid in postmaster.pid may belong to some
    // other process; PostgreSQL alone would take it for a running server and refuse.
    let options = ManagedPostgresOptions::temporary();
    let data_dir = options.data_dir.clone();
    let pid_file = data_dir.join("pgdata/postmaster.pid");
    let mut durable_options = options.clone();
    durable_options.temporary = false;
    let server = ManagedPostgres::start(durable_options)
        .await
        .expect("start");
    let pid_file_contents = std::fs::read_to_string(&pid_file).expect("pid file");
    server.stop().await.expect("stop");
    // A process of the server's own account: PostgreSQL takes one of another account's
    // for none of its own, but cannot tell this one from a postmaster.
    let cluster = std::fs::metadata(data_dir.join("pgdata")).expect("cluster");
    let mut unrelated = std::process::Command::new("sleep")
        .arg("60")
        .uid(cluster.uid())
        .gid(cluster.gid())
        .spawn()
        .expect("spawn sleep");
    let stale: String = std::iter::once(unrelated.id().to_string())
        .chain(pid_file_contents.lines().skip(1).map(str::to_string))
        .map(|line| line + "\n")
        .collect();
    std::fs::write(&pid_file, stale).expect("write a stale pid file");

    let started = ManagedPostgres::start(options).await;

    unrelated.kill().expect("kill sleep");
    unrelated.wait().expect("reap sleep");
    let server = started.expect("start despite the stale pid file");
    let pool = connect(&server).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    pool.close().await;
    server.stop().await.expect("stop");
    assert!(!data_dir.exists());
}

#[tokio::test]
async fn starting_on_a_running_data_dir_adopts_the_server() {
    let options = ManagedPostgresOptions::temporary();
    let data_dir = options.data_dir.clone();
    let first = ManagedPostgres::start(options).await.expect("start");
    let postmaster_pid = std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid"))
        .expect("pid file")
        .lines()
        .next()
        .map(str::to_string);

    let second = ManagedPostgres::start(durable(&data_dir))
        .await
        .expect("start on a running data directory");

    assert_eq!(
        second.port(),
        first.port(),
        "the running server, on its own port"
    );
    let pool = connect(&second).await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    pool.close().await;
    let postmaster_pid_now = std::fs::read_to_string(data_dir.join("pgdata/postmaster.pid"))
        .expect("pid file")
        .lines()
        .next()
        .map(str::to_string);
    assert_eq!(
        postmaster_pid_now, postmaster_pid,
        "no second server was started"
    );

    drop(second); // durable: the server keeps running
    assert!(accepts_tcp(first.port()));
    first.stop().await.expect("stop");
    assert!(!data_dir.exists());
}

#[tokio::test]
async fn as_root_a_data_dir_the_postgres_account_cannot_enter_is_refused() {
    if !is_root() {
        eprintln!("skipped: only root runs the server as another account");
        return;
    }
    let private = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700");
    let data_dir = private.path().join("postgres");

    let error = match ManagedPostgres::start(durable(&data_dir)).await {
        Err(error) => error,
        Ok(server) => {
            server.stop().await.expect("stop");
            panic!("a data directory under a 0700 root directory was accepted");
        }
    };

    let private_dir: PathBuf = std::fs::canonicalize(private.path()).expect("canonical");
    match &error {
        ManagedPostgresError::DataDirUnreachable { directory, .. } => {
            assert_eq!(directory, &private_dir)
        }
        other => panic!("expected DataDirUnreachable, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("CALMONY_DATA_DIR"), "{message}");
    assert!(
        message.contains(&private_dir.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_bin_dir_without_postgres_says_what_to_install_and_where_it_looked() {
    let empty = tempfile::tempdir().expect("tempdir");
    let mut options = ManagedPostgresOptions::temporary();
    options.bin_dir = Some(empty.path().to_path_buf());
    let data_dir = options.data_dir.clone();

    let error = ManagedPostgres::start(options)
        .await
        .expect_err("no binaries");

    match &error {
        ManagedPostgresError::NoBinaries { searched } => {
            assert_eq!(searched, &vec![empty.path().to_path_buf()])
        }
        other => panic!("expected NoBinaries, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(
        message.contains(&empty.path().display().to_string()),
        "{message}"
    );
    assert!(
        !data_dir.exists(),
        "a failed temporary start leaves nothing behind"
    );
}

#[tokio::test]
async fn a_data_dir_with_spaces_and_commas_works() {
    // pg_ctl passes the paths through a shell, and PostgreSQL splits directory lists at commas.
    let mut options = ManagedPostgresOptions::temporary();
    let name = options
        .data_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    options.data_dir = options
        .data_dir
        .with_file_name(format!("{name} with spaces, commas"));
    let data_dir = options.data_dir.clone();

    let server = ManagedPostgres::start(options).await.expect("start");

    let socket_dir: String = {
        let pool = connect(&server).await;
        let setting = sqlx::query_scalar("SELECT current_setting('unix_socket_directories')")
            .fetch_one(&pool)
            .await
            .expect("setting");
        pool.close().await;
        setting
    };
    let expected_socket_dir = data_dir.join("socket");
    assert_eq!(socket_dir, format!("\"{}\"", expected_socket_dir.display()));
    assert!(expected_socket_dir
        .join(format!(".s.PGSQL.{}", server.port()))
        .exists());
    server.stop().await.expect("stop");
    assert!(!data_dir.exists());
}

#[tokio::test]
async fn a_data_dir_path_the_shell_would_interpret_is_refused() {
    let mut options = ManagedPostgresOptions::temporary();
    let name = options
        .data_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    options.data_dir = options.data_dir.with_file_name(format!("{name}$HOME"));
    let data_dir = options.data_dir.clone();

    let error = ManagedPostgres::start(options).await.expect_err("refused");

    assert!(
        matches!(error, ManagedPostgresError::UnsupportedPath { .. }),
        "{error:?}"
    );
    assert!(!data_dir.exists(), "refused before anything is created");
}
