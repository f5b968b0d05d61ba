//! A PostgreSQL server that this process runs itself from the machine's own binaries, so
//! that `cargo run` with no configuration gets a durable database, and tests get a
//! throwaway one when no server is reachable.
//!
//! It owns one directory, `data_dir`:
//!
//! ```text
//! data_dir/          mode 0700, owned by the account that runs PostgreSQL
//!   pgdata/          the cluster (initdb -D)
//!   postgres.log     the server's log (pg_ctl -l), rotated at start once it is large
//!   socket/          the server's unix socket; we ourselves connect over TCP on 127.0.0.1
//!   start.lock       held while a process starts or adopts the server
//! ```
//!
//! PostgreSQL refuses to run as root, and every machine here runs as root, so when the
//! effective uid is 0 its programs run as the `postgres` account (Debian's package creates
//! it): `data_dir` is handed to that account, and every directory above it must let that
//! account pass.
//!
//! A server already running on `data_dir` (one a previous run did not stop) is adopted, not
//! started twice. A durable server outlives a dropped [`ManagedPostgres`] so that the next
//! start adopts it; [`ManagedPostgres::stop`] stops it. A temporary server is stopped and its
//! directory removed when it is dropped.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The account that runs PostgreSQL's programs when we are root.
const SERVER_ACCOUNT: &str = "postgres";
/// The superuser initdb creates; the URLs name it.
const SUPERUSER: &str = "postgres";
/// Where Debian and Ubuntu install each major version's programs: `<root>/<major>/bin`.
const DEBIAN_INSTALL_ROOT: &str = "/usr/lib/postgresql";

const START_TIMEOUT_S: u32 = 30;
const STOP_TIMEOUT_S: u32 = 30;
const CONNECT_WAIT_MS: u64 = 30_000;
const CONNECT_ATTEMPT_TIMEOUT_MS: u64 = 1_000;
const CONNECT_RETRY_MS: u64 = 100;
const START_LOCK_WAIT_MS: u64 = 60_000;
const START_LOCK_RETRY_MS: u64 = 100;
/// Attempts at a free port, since another process may take the one we picked first.
const PORT_ATTEMPTS: u32 = 3;
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;
/// How much of a failed command's output and of the server log an error carries.
const EXCERPT_BYTES: usize = 4096;
/// `sun_path` holds 108 bytes including the terminating NUL.
const UNIX_SOCKET_PATH_MAX_BYTES: usize = 107;
const PASSWD_BUFFER_MAX_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManagedPostgresError {
    #[error(
        "no PostgreSQL server programs (initdb, pg_ctl, postgres) found; install them \
         (Debian/Ubuntu: `apt-get install postgresql`) or configure their directory; looked \
         in: {}",
        list_paths(.searched)
    )]
    NoBinaries { searched: Vec<PathBuf> },

    #[error(
        "PostgreSQL refuses to run as root and there is no `{account}` account to run it as; \
         create one (`apt-get install postgresql` does, or `useradd --system --user-group \
         {account}`)"
    )]
    NoServerAccount { account: &'static str },

    #[error(
        "the `{account}` account that runs PostgreSQL cannot enter {directory}, above the \
         data directory {data_dir}; choose a data directory it can reach (for example \
         CALMONY_DATA_DIR=/var/lib/calmony/postgres) or let it through (`chmod o+x \
         {directory}`)"
    )]
    DataDirUnreachable {
        account: &'static str,
        directory: PathBuf,
        data_dir: PathBuf,
    },

    #[error("cannot use {path} as the data directory: it {reason}; choose another path")]
    UnsupportedPath { path: PathBuf, reason: String },

    #[error(
        "{path} exists but is not a PostgreSQL cluster (it has no PG_VERSION); move it away \
         or choose another data directory"
    )]
    NotACluster { path: PathBuf },

    #[error(
        "the cluster {path} belongs to uid {owner_uid} but PostgreSQL would run as uid \
         {server_uid}; give it to that account (`chown -R {server_uid} {path}`) or choose \
         another data directory"
    )]
    ClusterOwner {
        path: PathBuf,
        owner_uid: u32,
        server_uid: u32,
    },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("cannot look up the `{account}` account: {source}")]
    AccountLookup {
        account: &'static str,
        source: io::Error,
    },

    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },

    #[error(
        "gave up after {waited_ms} ms waiting for {path}: another process is starting or \
         adopting this server"
    )]
    StartLockTimeout { path: PathBuf, waited_ms: u64 },

    #[error("cannot read the port of the running server from {path}")]
    PidFile { path: PathBuf },

    #[error(
        "PostgreSQL on 127.0.0.1:{port} did not accept connections within {waited_ms} ms; \
         see {log_file}"
    )]
    NotAcceptingConnections {
        port: u16,
        waited_ms: u64,
        log_file: PathBuf,
    },

    #[error("starting or stopping PostgreSQL was cancelled: {0}")]
    Cancelled(String),
}

type Result<T, E = ManagedPostgresError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct ManagedPostgresOptions {
    /// The directory the managed server owns (see the module docs); created if missing.
    /// When we are root it is handed to the `postgres` account.
    pub data_dir: PathBuf,
    /// Where initdb, pg_ctl and postgres are. `None`: `pg_config --bindir`, else the highest
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// `None`: a free port, picked at each start.
    pub port: Option<u16>,
    /// For tests: no fsync, and `data_dir` is removed when the server stops or is dropped.
    pub temporary: bool,
}

impl ManagedPostgresOptions {
    /// A throwaway server for a test: a new directory under the system's temporary
    /// directory, a free port, the machine's binaries.
    pub fn temporary() -> Self {
        let name = format!("calmony-postgres-{}", uuid::Uuid::new_v4().simple());
        Self {
            data_dir: std::env::temp_dir().join(name),
            bin_dir: None,
            port: None,
            temporary: true,
        }
    }
}

/// A running server: started by [`ManagedPostgres::start`], or adopted by it when one was
/// already running on the data directory.
#[derive(Debug)]
pub struct ManagedPostgres {
    layout: Layout,
    bin_dir: PathBuf,
    account: Option<Account>,
    port: u16,
    temporary: bool,
    stopped: bool,
    /// Found running rather than started by us: another process (a `calmony serve`, say)
    /// may be using it, so its owner, not we, should stop it.
    adopted: bool,
}

impl ManagedPostgres {
    /// Whether this server was already running when [`ManagedPostgres::start`] was called.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Initializes the cluster on first use, then starts the server, or adopts the one
    /// already running on it; returns once it accepts connections.
    pub async fn start(options: ManagedPostgresOptions) -> Result<Self> {
        run_blocking(move || start_blocking(options)).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (also one this instance adopted) after its sessions end
    /// (`pg_ctl stop -m fast`); removes the data directory when temporary.
    pub async fn stop(self) -> Result<()> {
        run_blocking(move || {
            let mut server = self;
            server.stop_blocking(StopMode::Fast)
        })
        .await
    }

    fn stop_blocking(&mut self, mode: StopMode) -> Result<()> {
        let mut command = server_command(self.bin_dir.join("pg_ctl"), self.account);
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.layout.cluster)
            .args(["-m", mode.as_arg(), "-w", "-t", &STOP_TIMEOUT_S.to_string()]);
        match run(&mut command) {
            Ok(_) => {}
            // Stopped by someone else already: what we wanted.
            Err(_) if !self.layout.pid_file().exists() => {}
            Err(error) => return Err(error),
        }
        self.stopped = true;
        if self.temporary {
            fs::remove_dir_all(&self.layout.root).map_err(io_error("remove", &self.layout.root))?;
        }
        info!(
            port = self.port,
            data_dir = %self.layout.root.display(),
            removed = self.temporary,
            "managed PostgreSQL stopped"
        );
        Ok(())
    }
}

impl Drop for ManagedPostgres {
    /// A temporary server must not outlive the test that dropped it; a durable one stays up
    /// for the next start to adopt.
    fn drop(&mut self) {
        if self.temporary && !self.stopped {
            if let Err(error) = self.stop_blocking(StopMode::Immediate) {
                warn!(%error, data_dir = %self.layout.root.display(), "cannot stop the temporary PostgreSQL");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum StopMode {
    Fast,
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    cluster: PathBuf,
    log_file: PathBuf,
    socket_dir: PathBuf,
    lock_file: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Self {
        Self {
            cluster: root.join("pgdata"),
            log_file: root.join("postgres.log"),
            socket_dir: root.join("socket"),
            lock_file: root.join("start.lock"),
            root,
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.cluster.join("postmaster.pid")
    }

    /// initdb writes here first, so that `pgdata` only ever holds a complete cluster.
    fn staging_cluster(&self) -> PathBuf {
        self.root.join("pgdata.initdb")
    }
}

#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(ManagedPostgresError::Cancelled(error.to_string())),
    }
}

fn start_blocking(options: ManagedPostgresOptions) -> Result<ManagedPostgres> {
    let started = Instant::now();
    let account = server_account()?;
    let layout = prepare_directory(&options.data_dir, account)?;
    let _start_lock = lock_start(&layout.lock_file)?;
    let outcome = start_locked(&layout, account, &options, started);
    if outcome.is_err() && options.temporary && !layout.pid_file().exists() {
        // Nothing runs on it, so a failed throwaway start leaves nothing behind.
        match fs::remove_dir_all(&layout.root) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                warn!(%error, data_dir = %layout.root.display(), "cannot remove the temporary data directory")
            }
        }
    }
    outcome
}

fn start_locked(
    layout: &Layout,
    account: Option<Account>,
    options: &ManagedPostgresOptions,
    started: Instant,
) -> Result<ManagedPostgres> {
    let cluster_version = read_cluster_version(layout)?;
    let bin_dir = find_bin_dir(options.bin_dir.as_deref(), cluster_version.as_deref())?;
    let initialized = match cluster_version {
        None => {
            initialize_cluster(layout, account, &bin_dir, options.temporary)?;
            true
        }
        Some(_) => {
            check_cluster_owner(&layout.cluster, account)?;
            false
        }
    };
    let mut server = ManagedPostgres {
        layout: layout.clone(),
        bin_dir,
        account,
        port: 0,
        temporary: options.temporary,
        stopped: false,
        adopted: false,
    };

    if let Some(port) = running_server_port(layout, account, &server.bin_dir)? {
        if options.port.is_some_and(|wanted| wanted != port) {
            warn!(
                port,
                wanted = options.port,
                "adopting the server already running on the data directory, on its own port"
            );
        }
        wait_for_connections(port, &layout.log_file)?;
        server.port = port;
        server.adopted = true;
        info!(
            port,
            data_dir = %layout.root.display(),
            elapsed_ms = elapsed_ms(started),
            "adopted the managed PostgreSQL already running"
        );
        return Ok(server);
    }

    server.port = start_server(layout, account, &server.bin_dir, options)?;
    if let Err(error) = wait_for_connections(server.port, &layout.log_file) {
        if let Err(stop_error) = server.stop_blocking(StopMode::Immediate) {
            warn!(error = %stop_error, "cannot stop the server that does not accept connections");
        }
        return Err(error);
    }
    info!(
        port = server.port,
        data_dir = %layout.root.display(),
        initialized,
        elapsed_ms = elapsed_ms(started),
        "managed PostgreSQL started"
    );
    Ok(server)
}

/// `None` when we run PostgreSQL's programs as ourselves.
fn server_account() -> Result<Option<Account>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    match lookup_account(SERVER_ACCOUNT)? {
        Some(account) => Ok(Some(account)),
        None => Err(ManagedPostgresError::NoServerAccount {
            account: SERVER_ACCOUNT,
        }),
    }
}

fn lookup_account(name: &'static str) -> Result<Option<Account>> {
    let lookup_error = |source| ManagedPostgresError::AccountLookup {
        account: name,
        source,
    };
    let c_name = std::ffi::CString::new(name)
        .map_err(|error| lookup_error(io::Error::new(io::ErrorKind::InvalidInput, error)))?;
    let mut buffer_bytes = 16 * 1024;
    loop {
        let mut buffer: Vec<libc::c_char> = vec![0; buffer_bytes];
        // SAFETY: passwd is plain data; getpwnam_r fills it in.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buffer` is as long as we say; the
        // reentrant variant shares no state with other threads.
        let status = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if status == libc::ERANGE && buffer_bytes < PASSWD_BUFFER_MAX_BYTES {
            buffer_bytes *= 2;
            continue;
        }
        if status != 0 {
            return Err(lookup_error(io::Error::from_raw_os_error(status)));
        }
        if found.is_null() {
            return Ok(None);
        }
        return Ok(Some(Account {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        }));
    }
}

/// Creates `data_dir` and its socket directory, hands them to the server's account, and
/// returns its layout under the canonical path.
fn prepare_directory(data_dir: &Path, account: Option<Account>) -> Result<Layout> {
    let absolute = std::path::absolute(data_dir).map_err(io_error("resolve", data_dir))?;
    check_path_characters(&absolute)?;
    let created = !absolute.exists();
    fs::create_dir_all(&absolute).map_err(io_error("create", &absolute))?;
    let root = fs::canonicalize(&absolute).map_err(io_error("resolve", &absolute))?;
    // A symbolic link on the way may have brought such characters back.
    check_path_characters(&root)?;
    let layout = Layout::new(root);
    if let Some(account) = account {
        check_reachable(&layout.root, account)?;
    }
    if account.is_some() || created {
        hand_over(&layout.root, account)?;
    }
    if !layout.socket_dir.exists() {
        fs::create_dir(&layout.socket_dir).map_err(io_error("create", &layout.socket_dir))?;
    }
    hand_over(&layout.socket_dir, account)?;
    Ok(layout)
}

/// pg_ctl runs the server through `/bin/sh -c` with the paths inside double quotes, so a
/// path with characters that the shell still interprets there would break or inject.
fn check_path_characters(path: &Path) -> Result<()> {
    let unsupported = |reason: String| ManagedPostgresError::UnsupportedPath {
        path: path.to_path_buf(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| unsupported("is not valid UTF-8".to_string()))?;
    match text
        .chars()
        .find(|c| matches!(c, '"' | '\'' | '$' | '`' | '\\') || c.is_control())
    {
        Some(character) => Err(unsupported(format!(
            "contains {character:?}, which pg_ctl's shell command line cannot carry"
        ))),
        None => Ok(()),
    }
}

/// Every directory above `root` must let the account through, or PostgreSQL cannot open its
/// own files. The spawned programs keep only the account's primary group (std drops the
/// supplementary groups when root switches uid), so that is the group that counts.
fn check_reachable(root: &Path, account: Account) -> Result<()> {
    for directory in root.ancestors().skip(1) {
        let metadata = fs::metadata(directory).map_err(io_error("inspect", directory))?;
        let search_bit = if metadata.uid() == account.uid {
            0o100
        } else if metadata.gid() == account.gid {
            0o010
        } else {
            0o001
        };
        if metadata.mode() & search_bit == 0 {
            return Err(ManagedPostgresError::DataDirUnreachable {
                account: SERVER_ACCOUNT,
                directory: directory.to_path_buf(),
                data_dir: root.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Mode 0700, owned by the account when there is one.
fn hand_over(directory: &Path, account: Option<Account>) -> Result<()> {
    if let Some(account) = account {
        std::os::unix::fs::chown(directory, Some(account.uid), Some(account.gid))
            .map_err(io_error("change the owner of", directory))?;
    }
    fs::set_permissions(directory, fs::Permissions::from_mode(0o700))
        .map_err(io_error("set the permissions of", directory))
}

/// Serializes starts on one data directory across threads and processes; released when
/// the returned file is dropped. Our files are opened close-on-exec, so the server never
/// inherits the lock.
fn lock_start(path: &Path) -> Result<File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("open", path))?;
    let deadline = Instant::now() + Duration::from_millis(START_LOCK_WAIT_MS);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(START_LOCK_RETRY_MS));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ManagedPostgresError::StartLockTimeout {
                    path: path.to_path_buf(),
                    waited_ms: START_LOCK_WAIT_MS,
                })
            }
            Err(fs::TryLockError::Error(source)) => return Err(io_error("lock", path)(source)),
        }
    }
}

/// The major version that created the cluster, or `None` when there is no cluster yet.
fn read_cluster_version(layout: &Layout) -> Result<Option<String>> {
    if !layout.cluster.exists() {
        return Ok(None);
    }
    let version_file = layout.cluster.join("PG_VERSION");
    match fs::read_to_string(&version_file) {
        Ok(version) => Ok(Some(version.trim().to_string())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            Err(ManagedPostgresError::NotACluster {
                path: layout.cluster.clone(),
            })
        }
        Err(error) => Err(io_error("read", &version_file)(error)),
    }
}

fn find_bin_dir(configured: Option<&Path>, cluster_version: Option<&str>) -> Result<PathBuf> {
    let candidates = match configured {
        // Configured explicitly: no quiet fallback to some other installation.
        Some(directory) => vec![directory.to_path_buf()],
        None => discovered_bin_dirs(cluster_version),
    };
    match candidates
        .iter()
        .find(|directory| has_server_programs(directory))
    {
        Some(directory) => Ok(directory.clone()),
        None => Err(ManagedPostgresError::NoBinaries {
            searched: candidates,
        }),
    }
}

fn discovered_bin_dirs(cluster_version: Option<&str>) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    // A cluster only starts under the major version that created it, which after an
    // upgrade is no longer the newest one installed.
    if let Some(version) = cluster_version {
        candidates.push(Path::new(DEBIAN_INSTALL_ROOT).join(version).join("bin"));
    }
    if let Some(directory) = pg_config_bin_dir() {
        candidates.push(directory);
    }
    candidates.extend(debian_bin_dirs_newest_first());
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    let mut unique = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if !unique.contains(&candidate) {
            unique.push(candidate);
        }
    }
    unique
}

fn pg_config_bin_dir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let directory = text.trim();
    (output.status.success() && !directory.is_empty()).then(|| PathBuf::from(directory))
}

fn debian_bin_dirs_newest_first() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(DEBIAN_INSTALL_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|left, right| right.0.cmp(&left.0));
    versions
        .into_iter()
        .map(|(_, directory)| directory)
        .collect()
}

fn has_server_programs(directory: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| directory.join(program).is_file())
}

/// Runs initdb into a staging directory and renames it into place, so that an interrupted
/// initdb never leaves a half-made cluster where the next start would take it for a real one.
fn initialize_cluster(
    layout: &Layout,
    account: Option<Account>,
    bin_dir: &Path,
    temporary: bool,
) -> Result<()> {
    let staging = layout.staging_cluster();
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error("remove", &staging))?;
    }
    let mut command = server_command(bin_dir.join("initdb"), account);
    command
        .arg("-D")
        .arg(&staging)
        .args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
        // Byte-order collation: fast, and stable across C library upgrades (no index
        // rebuilds); Unicode-aware upper() and lower() where the C library offers C.UTF-8.
        .arg(format!("--locale={}", ctype_locale()))
        .arg("--lc-collate=C")
        .arg("--no-instructions");
    if temporary {
        command.arg("--no-sync");
    }
    run(&mut command)?;
    fs::rename(&staging, &layout.cluster).map_err(io_error("rename into place", &staging))?;
    // Make the rename itself durable before the server writes anything into the cluster.
    File::open(&layout.root)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("sync", &layout.root))?;
    info!(data_dir = %layout.root.display(), "initialized a new PostgreSQL cluster");
    Ok(())
}

fn ctype_locale() -> &'static str {
    // SAFETY: the name is a NUL-terminated literal, a null base asks for a new locale
    // object, and the object is freed at once; no state is shared.
    let handle =
        unsafe { libc::newlocale(libc::LC_ALL_MASK, c"C.UTF-8".as_ptr(), std::ptr::null_mut()) };
    if handle.is_null() {
        return "C";
    }
    // SAFETY: `handle` came from newlocale and is freed exactly once.
    unsafe { libc::freelocale(handle) };
    "C.UTF-8"
}

fn check_cluster_owner(cluster: &Path, account: Option<Account>) -> Result<()> {
    let server_uid = match account {
        Some(account) => account.uid,
        // SAFETY: geteuid has no preconditions and cannot fail.
        None => unsafe { libc::geteuid() },
    };
    let owner_uid = fs::metadata(cluster)
        .map_err(io_error("inspect", cluster))?
        .uid();
    if owner_uid == server_uid {
        Ok(())
    } else {
        Err(ManagedPostgresError::ClusterOwner {
            path: cluster.to_path_buf(),
            owner_uid,
            server_uid,
        })
    }
}

/// The port of a server already running on the cluster, or `None` when none runs (after
/// clearing a pid file that no process stands behind).
fn running_server_port(
    layout: &Layout,
    account: Option<Account>,
    bin_dir: &Path,
) -> Result<Option<u16>> {
    let pid_file = layout.pid_file();
    let contents = match fs::read_to_string(&pid_file) {
        Ok(contents) => contents,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", &pid_file)(error)),
    };
    // Line 1 is the postmaster's pid, line 4 its port.
    let mut lines = contents.lines();
    let pid = lines
        .next()
        .and_then(|line| line.trim().parse::<u32>().ok());
    let port = lines
        .nth(2)
        .and_then(|line| line.trim().parse::<u16>().ok());
    let (Some(pid), Some(port)) = (pid, port) else {
        return Err(ManagedPostgresError::PidFile { path: pid_file });
    };

    let running = match cluster_processes(&layout.cluster) {
        Some(pids) if pids.contains(&pid) => true,
        Some(pids) if pids.is_empty() => {
            // No process of this cluster is alive (a crash, a reboot, a restarted container),
            // but the pid may now be another process's, or an unreaped zombie's, which
            // PostgreSQL would take for a running server and refuse to start.
            fs::remove_file(&pid_file).map_err(io_error("remove the stale", &pid_file))?;
            info!(pid, pid_file = %pid_file.display(), "removed a stale pid file");
            false
        }
        // Processes of a crashed server remain: PostgreSQL itself refuses to start while they
        // hold its shared memory, and says so in the log.
        Some(_) => false,
        None => pg_ctl_reports_running(layout, account, bin_dir)?,
    };
    Ok(running.then_some(port))
}

/// Live processes whose working directory is the cluster: the postmaster changes into it
/// and its children inherit that. `None` where /proc cannot tell.
fn cluster_processes(cluster: &Path) -> Option<Vec<u32>> {
    fs::read_link("/proc/self/cwd").ok()?;
    let entries = fs::read_dir("/proc").ok()?;
    let pids = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        // A zombie has no working directory, so it does not count as alive.
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == cluster))
        .collect();
    Some(pids)
}

fn pg_ctl_reports_running(
    layout: &Layout,
    account: Option<Account>,
    bin_dir: &Path,
) -> Result<bool> {
    let mut command = server_command(bin_dir.join("pg_ctl"), account);
    command.arg("status").arg("-D").arg(&layout.cluster);
    let description = describe(&command);
    let output = command
        .output()
        .map_err(io_error("run", &bin_dir.join("pg_ctl")))?;
    // pg_ctl status: 0 running, 3 not running.
    match output.status.code() {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        _ => Err(command_failed(description, &output, None)),
    }
}

/// Starts the server and returns its port, trying another free port when the one we picked
/// was taken in the meantime.
fn start_server(
    layout: &Layout,
    account: Option<Account>,
    bin_dir: &Path,
    options: &ManagedPostgresOptions,
) -> Result<u16> {
    rotate_log(&layout.log_file)?;
    let mut attempt = 1;
    loop {
        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log_offset = fs::metadata(&layout.log_file).map_or(0, |metadata| metadata.len());
        let mut command = server_command(bin_dir.join("pg_ctl"), account);
        command
            .arg("start")
            .arg("-D")
            .arg(&layout.cluster)
            .args(["-w", "-t", &START_TIMEOUT_S.to_string()])
            .arg("-l")
            .arg(&layout.log_file)
            .arg("-o")
            .arg(server_options(port, &layout.socket_dir, !options.temporary));
        let description = describe(&command);
        let output = command
            .output()
            .map_err(io_error("run", &bin_dir.join("pg_ctl")))?;
        if output.status.success() {
            return Ok(port);
        }
        let log = log_excerpt(&layout.log_file, log_offset);
        if options.port.is_none() && attempt < PORT_ATTEMPTS && log.contains("already in use") {
            debug!(
                port,
                attempt, "the free port was taken before the server bound it"
            );
            attempt += 1;
            continue;
        }
        return Err(command_failed(description, &output, Some(&log)));
    }
}

/// The server's command line options; pg_ctl hands them to `/bin/sh -c`, hence the quoting
/// (the path has no single quote: see `check_path_characters`), and the double quotes keep
/// a comma in the path from splitting the directory list.
fn server_options(port: u16, socket_dir: &Path, fsync: bool) -> String {
    let socket_file_bytes =
        socket_dir.as_os_str().len() + "/.s.PGSQL.".len() + port.to_string().len();
    let socket_dirs = if socket_file_bytes <= UNIX_SOCKET_PATH_MAX_BYTES {
        format!("'\"{}\"'", socket_dir.display())
    } else {
        warn!(socket_dir = %socket_dir.display(), "path too long for a unix socket; TCP only");
        "''".to_string()
    };
    let fsync = if fsync { "on" } else { "off" };
    format!("-p {port} -c listen_addresses=127.0.0.1 -k {socket_dirs} -c fsync={fsync}")
}

fn free_port() -> Result<u16> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    TcpListener::bind(address)
        .and_then(|listener| listener.local_addr())
        .map(|bound| bound.port())
        .map_err(|source| ManagedPostgresError::Io {
            action: "find a free port on",
            path: PathBuf::from("127.0.0.1"),
            source,
        })
}

fn rotate_log(log_file: &Path) -> Result<()> {
    match fs::metadata(log_file) {
        Ok(metadata) if metadata.len() > LOG_ROTATE_BYTES => {
            let previous = log_file.with_extension("log.1");
            fs::rename(log_file, &previous).map_err(io_error("rotate", log_file))
        }
        _ => Ok(()),
    }
}

/// pg_ctl -w has waited for the server to report itself ready; this checks what our
/// clients need, a TCP connection, and waits for an adopted server that is still starting.
fn wait_for_connections(port: u16, log_file: &Path) -> Result<()> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_millis(CONNECT_WAIT_MS);
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(CONNECT_ATTEMPT_TIMEOUT_MS))
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ManagedPostgresError::NotAcceptingConnections {
                port,
                waited_ms: CONNECT_WAIT_MS,
                log_file: log_file.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(CONNECT_RETRY_MS));
    }
}

fn server_command(program: PathBuf, account: Option<Account>) -> Command {
    let mut command = Command::new(program);
    command
        // The server's account may not be able to enter our working directory.
        .current_dir("/")
        .stdin(Stdio::null())
        // English messages, which the port retry reads.
        .env("LC_ALL", "C");
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
    }
    command
}

fn run(command: &mut Command) -> Result<Output> {
    let description = describe(command);
    let output = command
        .output()
        .map_err(io_error("run", Path::new(command.get_program())))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(command_failed(description, &output, None))
    }
}

fn command_failed(description: String, output: &Output, log: Option<&str>) -> ManagedPostgresError {
    let mut text = String::new();
    for stream in [&output.stdout, &output.stderr] {
        let stream = String::from_utf8_lossy(stream);
        let excerpt = tail(&stream, EXCERPT_BYTES);
        if !excerpt.trim().is_empty() {
            text.push_str(excerpt.trim_end());
            text.push('\n');
        }
    }
    if let Some(log) = log.filter(|log| !log.trim().is_empty()) {
        text.push_str("server log:\n");
        text.push_str(log.trim_end());
    }
    ManagedPostgresError::CommandFailed {
        command: description,
        status: output.status.to_string(),
        output: text,
    }
}

/// What the server logged from `offset` on, at most the last `EXCERPT_BYTES`.
fn log_excerpt(log_file: &Path, offset: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(log_file)?;
        let length = file.metadata()?.len();
        let start = offset.max(length.saturating_sub(EXCERPT_BYTES as u64));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(EXCERPT_BYTES as u64).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ManagedPostgresError + 'a {
    move |source| ManagedPostgresError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere (no pg_config, no /usr/lib/postgresql, no PATH)".to_string();
    }
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
