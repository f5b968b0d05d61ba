//! Where the database is and how to open it: an external server named by a URL, or the
//! managed server this process starts itself; then the schema migrations.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::managed_postgres::{ManagedPostgres, ManagedPostgresError, ManagedPostgresOptions};

/// Every migration in `migrations/`, embedded at compile time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The database every managed server holds our data in.
pub const MANAGED_DATABASE: &str = "calmony";

#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    /// `DATABASE_URL`: an existing server and database.
    External { url: String },
    /// No URL: a PostgreSQL server we run from the machine's binaries, data kept in `data_dir`.
    Managed {
        data_dir: PathBuf,
        /// Used instead when PostgreSQL's account cannot reach `data_dir` (a clone under a
        /// private home directory, when we run as root).
        fallback_data_dir: Option<PathBuf>,
        bin_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub location: DatabaseLocation,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to the database at {url_redacted}: {source}")]
    Connect {
        url_redacted: String,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Managed(#[from] ManagedPostgresError),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// An open database: the pool, and the managed server behind it when we started one (stop
/// it on shutdown with [`Database::close`]).
pub struct Database {
    pub pool: PgPool,
    pub url: String,
    pub managed: Option<ManagedPostgres>,
}

impl Database {
    /// Opens (starting the managed server if needed) and migrates.
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        let (url, managed) = match &settings.location {
            DatabaseLocation::External { url } => (url.clone(), None),
            DatabaseLocation::Managed {
                data_dir,
                fallback_data_dir,
                bin_dir,
            } => {
                let options = |data_dir: &PathBuf| ManagedPostgresOptions {
                    data_dir: data_dir.clone(),
                    bin_dir: bin_dir.clone(),
                    port: None,
                    temporary: false,
                };
                let server = match (
                    ManagedPostgres::start(options(data_dir)).await,
                    fallback_data_dir,
                ) {
                    (Err(ManagedPostgresError::DataDirUnreachable { .. }), Some(fallback)) => {
                        tracing::warn!(
                            wanted = %data_dir.display(),
                            using = %fallback.display(),
                            "PostgreSQL's account cannot reach the data directory; using the fallback"
                        );
                        ManagedPostgres::start(options(fallback)).await?
                    }
                    (started, _) => started?,
                };
                create_database_if_missing(&server.url("postgres"), MANAGED_DATABASE).await?;
                (server.url(MANAGED_DATABASE), Some(server))
            }
        };
        let pool = connect(&url, settings.max_connections, settings.acquire_timeout_ms).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, url, managed })
    }

    /// Closes the pool and stops the managed server if this process started it. One it
    /// found already running (a `calmony serve` beside this CLI command) is left alone.
    pub async fn close(self) -> Result<(), DatabaseError> {
        self.pool.close().await;
        if let Some(server) = self.managed {
            if !server.adopted() {
                server.stop().await?;
            }
        }
        Ok(())
    }
}

pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout_ms: u64,
) -> Result<PgPool, DatabaseError> {
    let options = connect_options(url)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_millis(acquire_timeout_ms))
        .connect_with(options)
        .await
        .map_err(|source| DatabaseError::Connect {
            url_redacted: redact(url),
            source,
        })
}

pub fn connect_options(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    let options: PgConnectOptions = url.parse().map_err(|source| DatabaseError::Connect {
        url_redacted: redact(url),
        source,
    })?;
    // Statement logging at info would put every query of the hot path in the log.
    let options = options.log_statements(tracing::log::LevelFilter::Trace);
    // TLS on loopback protects nothing and costs a handshake per connection and encryption
    // of every message (the pool, each listener): off unless the URL asks for a mode.
    if is_loopback(options.get_host()) && !names_ssl_mode(url) {
        return Ok(options.ssl_mode(PgSslMode::Disable));
    }
    Ok(options)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Whether the URL (or libpq's `PGSSLMODE`, which sqlx also reads) chooses an SSL mode.
fn names_ssl_mode(url: &str) -> bool {
    let in_url = url::Url::parse(url).is_ok_and(|parsed| {
        parsed
            .query_pairs()
            .any(|(name, _)| name == "sslmode" || name == "ssl-mode")
    });
    in_url || std::env::var_os("PGSSLMODE").is_some()
}

/// Creates `database` on the server of `admin_url` unless it exists already.
pub async fn create_database_if_missing(
    admin_url: &str,
    database: &str,
) -> Result<(), DatabaseError> {
    let mut connection = sqlx::PgConnection::connect_with(&connect_options(admin_url)?)
        .await
        .map_err(|source| DatabaseError::Connect {
            url_redacted: redact(admin_url),
            source,
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(database)))
            .execute(&mut connection)
            .await?;
    }
    connection.close().await?;
    Ok(())
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connections_skip_tls_unless_the_url_asks() {
        let mode = |url: &str| connect_options(url).unwrap().get_ssl_mode();
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1:5432/x"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://postgres@localhost/x"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://postgres@[::1]:5432/x"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1/x?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(!matches!(
            mode("postgres://postgres@db.example.com/x"),
            PgSslMode::Disable
        ));
    }
}
