//! The one typed configuration, read once at start-up from flags and environment.

use std::path::PathBuf;

use clap::Args;
use event_store::database::{DatabaseLocation, DatabaseSettings};

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// An external PostgreSQL database. Without it, a managed PostgreSQL is started from the
    /// machine's binaries with its data in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the managed PostgreSQL keeps its data [default: .calmony/data, or
    /// /var/lib/calmony/data when PostgreSQL's account cannot reach that].
    #[arg(long, env = "CALMONY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL's bin directory (initdb, pg_ctl); found automatically when unset.
    #[arg(long, env = "CALMONY_PG_BIN_DIR", global = true)]
    pub pg_bin_dir: Option<PathBuf>,

    /// Upper bound on pooled database connections.
    #[arg(
        long,
        env = "CALMONY_DB_MAX_CONNECTIONS",
        global = true,
        default_value_t = 32
    )]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn settings(&self) -> DatabaseSettings {
        let location = match &self.database_url {
            Some(url) => DatabaseLocation::External { url: url.clone() },
            None => match &self.data_dir {
                Some(data_dir) => DatabaseLocation::Managed {
                    data_dir: absolute(data_dir),
                    fallback_data_dir: None,
                    bin_dir: self.pg_bin_dir.clone(),
                },
                None => DatabaseLocation::Managed {
                    data_dir: absolute(std::path::Path::new(".calmony/data")),
                    fallback_data_dir: Some(PathBuf::from("/var/lib/calmony/data")),
                    bin_dir: self.pg_bin_dir.clone(),
                },
            },
        };
        DatabaseSettings {
            location,
            max_connections: self.db_max_connections.clamp(2, 500),
            acquire_timeout_ms: 10_000,
        }
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|directory| directory.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
