//! Test helpers (feature `testing`): a fresh PostgreSQL database per test.
//!
//! [`postgres`] reads `DANMAKU_TEST_POSTGRES`, a URL of a server the tests may create databases
//! on (for example `postgres://postgres@127.0.0.1:5432/postgres`), creates a database of its own
//! and hands its URL back in a [`TestDatabase`], which drops the database when dropped (best
//! effort). Without the variable the caller is told to skip, and says so on the terminal; under
//! `CI=true` a missing variable, like an unreachable server, fails the test instead, so that a
//! CI run cannot pass without having tested PostgreSQL.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// The variable naming the test server.
pub const POSTGRES_VAR: &str = "DANMAKU_TEST_POSTGRES";

/// How long creating or dropping a test database may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A database created for one test; dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The server's URL as given in [`POSTGRES_VAR`].
    admin: String,
    /// The database's name.
    name: String,
    /// The URL of the database.
    url: String,
}

impl TestDatabase {
    /// The URL of the fresh database, for [`crate::PgStore::connect`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`danmaku_test_...`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own (this may run inside an async test, where no
    /// runtime may block), ending its sessions first; a failure is only reported.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = admin_client(&admin).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "it panicked".to_string()) {
            say(&format!("could not drop test database {}: {e}", self.name));
        }
    }
}

/// A fresh database on the server named by [`POSTGRES_VAR`], or `None` when the variable is not
/// set (the test should return, it was told why on stderr). Panics, failing the test, when the
/// variable is set and the server cannot be reached or refuses, and when it is not set under
/// `CI=true`. The skip notice names the test (the harness names each test's thread after it).
pub async fn postgres() -> Option<TestDatabase> {
    let admin = match std::env::var(POSTGRES_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!(
                    "{POSTGRES_VAR} is not set and CI=true: CI must run the PostgreSQL tests \
                     (set it to a server's URL, e.g. postgres://postgres@127.0.0.1:5432/postgres)"
                );
            }
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            say(&format!(
                "{test}: skipped on PostgreSQL: {POSTGRES_VAR} is not set \
                 (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            ));
            return None;
        }
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "danmaku_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let client = admin_client(&admin).await.unwrap_or_else(|e| {
        panic!(
            "{POSTGRES_VAR}={} cannot be reached: {e}",
            crate::redact_url(&admin)
        )
    });
    tokio::time::timeout(
        ADMIN_TIMEOUT,
        client.batch_execute(&format!("CREATE DATABASE {name}")),
    )
    .await
    .unwrap_or_else(|_| panic!("creating database {name} took over {ADMIN_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("creating database {name}: {e:?}"));
    let url = with_database(&admin, &name);
    Some(TestDatabase { admin, name, url })
}

/// A connection to the server's maintenance database, its connection task spawned.
async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) =
        tokio::time::timeout(ADMIN_TIMEOUT, tokio_postgres::connect(admin, NoTls))
            .await
            .map_err(|_| format!("no answer within {ADMIN_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` (a `postgres://` URL) with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base.find("://").map_or(0, |at| at + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    format!("{}/{name}{query}", &base[..path])
}

/// Writes `text` to the real stderr, past the test harness's capture, so a skip is seen.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        for (url, fresh) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/t",
            ),
            ("postgres://u:p@h", "postgres://u:p@h/t"),
            (
                "postgres://h/db?sslmode=disable",
                "postgres://h/t?sslmode=disable",
            ),
        ] {
            assert_eq!(with_database(url, "t"), fresh);
        }
    }
}
