//! [`StoreLocation`]: where a node's store lives, as an operator writes it (`--store`): a
//! directory for the embedded store, a `postgres://USER@HOST:PORT/DATABASE` URL, or
//! `fdb:PATH-TO-CLUSTER-FILE`; and [`StoreLocation::open`], which opens any of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{Store, StoreError};

/// Where a store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded store in this directory (the default, `./data`).
    Embedded(PathBuf),
    /// A PostgreSQL database (a URL without a password).
    Postgres(String),
    /// A FoundationDB cluster, by its cluster file.
    FoundationDb(PathBuf),
}

impl Default for StoreLocation {
    fn default() -> Self {
        StoreLocation::Embedded(PathBuf::from("./data"))
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    /// `postgres://` or `postgresql://` URLs, `fdb:` cluster files, anything else a directory.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty: give a directory, a postgres:// URL or fdb:CLUSTER-FILE".into());
        }
        if let Some(rest) = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if let Some((user_info, _)) = authority.rsplit_once('@')
                && user_info.contains(':')
            {
                return Err(
                    "the URL carries a password, which would show in the process list \
                     and in logs; remove it and give it in PGPASSWORD or a password file"
                        .into(),
                );
            }
            #[cfg(feature = "postgres")]
            crate::postgres::PostgresOptions::from_url(text, crate::postgres::Password::None)
                .map_err(|e| e.to_string())?;
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        if let Some(path) = text.strip_prefix("fdb:") {
            if path.is_empty() {
                return Err(
                    "fdb: names no cluster file (fdb:/etc/foundationdb/fdb.cluster)".into(),
                );
            }
            return Ok(StoreLocation::FoundationDb(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unknown store scheme {scheme:?}: give a directory, a postgres:// URL or fdb:CLUSTER-FILE"
            ));
        }
        Ok(StoreLocation::Embedded(PathBuf::from(text)))
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Embedded(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(url),
            StoreLocation::FoundationDb(path) => write!(f, "fdb:{}", path.display()),
        }
    }
}

/// How to open a store, whatever its kind (each backend reads its own part).
#[derive(Clone, Debug, Default)]
pub struct OpenSettings {
    /// The embedded store's options.
    #[cfg(feature = "embedded")]
    pub embedded: crate::EmbeddedOptions,
    /// A file holding the database password (it wins over `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// The longest a call to a shared store waits before answering UNAVAILABLE (the
    /// backend's default when `None`).
    pub operation_timeout: Option<Duration>,
}

impl StoreLocation {
    /// Whether this is a directory of the embedded store.
    pub fn is_embedded(&self) -> bool {
        matches!(self, StoreLocation::Embedded(_))
    }

    /// Whether a store already exists there: a data directory for the embedded store; a
    /// shared store is taken to exist (opening it creates its tables).
    pub fn holds_a_store(&self) -> bool {
        match self {
            #[cfg(feature = "embedded")]
            StoreLocation::Embedded(path) => crate::EmbeddedStore::exists_at(path),
            _ => true,
        }
    }

    /// Opens the store (blocking: call it off an async runtime's workers).
    pub fn open(&self, settings: &OpenSettings) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            #[cfg(feature = "embedded")]
            StoreLocation::Embedded(path) => Ok(Arc::new(crate::EmbeddedStore::open_with(
                path,
                settings.embedded,
            )?)),
            #[cfg(not(feature = "embedded"))]
            StoreLocation::Embedded(_) => Err(unsupported("embedded")),
            #[cfg(feature = "postgres")]
            StoreLocation::Postgres(url) => {
                let password = crate::postgres::Password::from_environment_or_file(
                    settings.password_file.as_deref(),
                )?;
                let mut options = crate::postgres::PostgresOptions::from_url(url, password)?;
                if let Some(timeout) = settings.operation_timeout {
                    options.operation_timeout = timeout;
                    options.lock_timeout = options.lock_timeout.min(timeout / 2);
                }
                Ok(Arc::new(crate::PostgresStore::open(options)?))
            }
            #[cfg(not(feature = "postgres"))]
            StoreLocation::Postgres(_) => Err(unsupported("PostgreSQL")),
            #[cfg(feature = "fdb")]
            StoreLocation::FoundationDb(cluster_file) => {
                Ok(Arc::new(crate::fdb::binding::open(cluster_file)?))
            }
            #[cfg(not(feature = "fdb"))]
            StoreLocation::FoundationDb(_) => Err(unsupported(
                "FoundationDB (build with `--features fdb` where the FoundationDB client is installed)",
            )),
        }
    }
}

/// The error of a backend this build was made without.
#[cfg_attr(
    all(feature = "embedded", feature = "postgres", feature = "fdb"),
    allow(dead_code)
)]
fn unsupported(what: &str) -> StoreError {
    StoreError::Backend {
        context: "open store",
        message: format!("this build has no {what} backend"),
    }
}

#[cfg(test)]
mod tests {
    use super::StoreLocation;
    use std::path::PathBuf;

    #[test]
    fn locations_parse_by_their_form() {
        assert_eq!(
            "./data".parse::<StoreLocation>(),
            Ok(StoreLocation::Embedded(PathBuf::from("./data")))
        );
        assert_eq!(
            "postgres://node@db:5432/grid".parse::<StoreLocation>(),
            Ok(StoreLocation::Postgres(
                "postgres://node@db:5432/grid".into()
            ))
        );
        assert_eq!(
            "fdb:/etc/foundationdb/fdb.cluster".parse::<StoreLocation>(),
            Ok(StoreLocation::FoundationDb(PathBuf::from(
                "/etc/foundationdb/fdb.cluster"
            )))
        );
        let with_password = "postgres://node:hunter2@db/grid"
            .parse::<StoreLocation>()
            .expect_err("a password in the URL");
        assert!(!with_password.contains("hunter2"), "{with_password}");
        assert!(
            "redis://x"
                .parse::<StoreLocation>()
                .expect_err("unknown")
                .contains("redis")
        );
        assert!("fdb:".parse::<StoreLocation>().is_err());
        assert!("".parse::<StoreLocation>().is_err());
    }
}
