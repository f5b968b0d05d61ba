//! A fresh, migrated database for each test, on a real PostgreSQL server.
//!
//! The server is `DATABASE_URL`'s when set; otherwise the machine's server on
//! 127.0.0.1:5432 when it answers; otherwise a throwaway server started from the local
//! PostgreSQL binaries in the system temp dir (kept running between test runs so that it
//! starts once). On that server one template database is migrated per set of migrations,
//! and each test gets `CREATE DATABASE … TEMPLATE` of it, dropped again when the test ends.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::database::{connect_options, quote_identifier, MIGRATOR};
use crate::managed_postgres::{ManagedPostgres, ManagedPostgresOptions};

/// Serialises template creation and database copies across test processes.
const HARNESS_LOCK_KEY: i64 = 0x6361_6c6d_7465_7374; // "calmtest"

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();

/// The URL of a maintenance database on the test server, starting a server if needed.
pub async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url;
            }
            let local = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
            if can_connect(&local).await {
                return local;
            }
            let data_dir = std::env::temp_dir().join("calmony-test-postgres");
            match ManagedPostgres::start(ManagedPostgresOptions {
                data_dir,
                bin_dir: None,
                port: None,
                temporary: false,
            })
            .await
            {
                Ok(server) => {
                    let url = server.url("postgres");
                    // The server outlives this process on purpose: the next test binary reuses it.
                    std::mem::forget(server);
                    url
                }
                Err(error) => panic!(
                    "no PostgreSQL for the tests: DATABASE_URL is unset, nothing answers on \
                     127.0.0.1:5432, and starting one failed: {error}"
                ),
            }
        })
        .await
        .clone()
}

async fn can_connect(url: &str) -> bool {
    let Ok(options) = connect_options(url) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&options)).await,
        Ok(Ok(_))
    )
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{database}"));
            parsed.to_string()
        }
        Err(error) => panic!("DATABASE_URL is not a URL: {error}"),
    }
}

fn template_name() -> String {
    let mut hasher = Sha256::new();
    for migration in MIGRATOR.iter() {
        hasher.update(migration.version.to_be_bytes());
        hasher.update(&migration.checksum);
    }
    format!("calmony_template_{}", &hex::encode(hasher.finalize())[..16])
}

pub struct TestDatabase {
    pub pool: PgPool,
    /// Connects to this test's database (hand it to a server process under test).
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// A fresh database with every migration applied.
    pub async fn new() -> Self {
        Self::create(true).await
    }

    /// A fresh, empty database (no migrations), for testing migrations themselves.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let admin_url = admin_url().await;
        let mut admin = connect(&admin_url).await;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(HARNESS_LOCK_KEY)
            .execute(&mut admin)
            .await
            .expect("lock the test harness");
        let template = template_name();
        if migrated {
            ensure_template(&mut admin, &admin_url, &template).await;
        }
        let name = format!(
            "calmony_test_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..16)
                .unwrap_or("x")
        );
        let create = if migrated {
            format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_identifier(&name),
                quote_identifier(&template)
            )
        } else {
            format!("CREATE DATABASE {}", quote_identifier(&name))
        };
        sqlx::query(&create)
            .execute(&mut admin)
            .await
            .expect("create the test database");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(HARNESS_LOCK_KEY)
            .execute(&mut admin)
            .await
            .expect("unlock the test harness");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(40)
            .connect_with(connect_options(&url).expect("test database URL"))
            .await
            .expect("connect to the test database");
        Self {
            pool,
            url,
            name,
            admin_url,
        }
    }
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect_with(&connect_options(url).expect("database URL"))
        .await
        .unwrap_or_else(|error| panic!("connect to the test server: {error}"))
}

async fn ensure_template(admin: &mut PgConnection, admin_url: &str, template: &str) {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(template)
            .fetch_one(&mut *admin)
            .await
            .expect("look for the template database");
    if exists {
        return;
    }
    let building = format!("{template}_building");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(&building)
    ))
    .execute(&mut *admin)
    .await
    .expect("drop a half-built template");
    sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&building)))
        .execute(&mut *admin)
        .await
        .expect("create the template database");
    {
        let mut connection = connect(&with_database(admin_url, &building)).await;
        MIGRATOR
            .run(&mut connection)
            .await
            .expect("migrate the template database");
        let _ = connection.close().await;
    }
    sqlx::query(&format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_identifier(&building),
        quote_identifier(template)
    ))
    .execute(&mut *admin)
    .await
    .expect("name the template database");
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        // The pool is not closed from there (its sockets belong to the test's runtime);
        // FORCE ends its server sessions instead.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut admin = connect(&admin_url).await;
                let _ = sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_identifier(&name)
                ))
                .execute(&mut admin)
                .await;
            });
        });
        let _ = cleanup.join();
    }
}
