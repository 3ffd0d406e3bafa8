//! The migrations of a release and the plan they make against a database.
//!
//! A release's migrations are read at run time from `MIGRATIONS_DIR` so an
//! operator can ship the release's own folder next to the binary; the
//! `migrations/` folder of this source tree is also compiled in, and used
//! when no directory is given or it does not exist.
//!
//! [`plan`] is the decision, a pure function of the rows of
//! `_sqlx_migrations` and the files: what is applied, what is pending, what
//! drifted. Everything that touches the database lives in `migrator.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::error::DbError;

/// The migrations compiled into the binary.
static EMBEDDED: Migrator = sqlx::migrate!("./migrations");

/// How much of `MIGRATIONS_DIR` is read.
#[derive(Clone, Copy)]
struct Bounds {
    /// Entries of the folder (sqlx lists them all).
    entries: usize,
    /// Bytes of one migration file.
    file: u64,
    /// Bytes of all migration files together (sqlx holds them all).
    total: u64,
}

/// Years of migrations are a few hundred files of kilobytes each; a file
/// past 16 MiB is a dump or a log put there by mistake.
const BOUNDS: Bounds = Bounds {
    entries: 10_000,
    file: 16 << 20,
    total: 256 << 20,
};

/// Refuses a migrations folder sqlx would read without bound: sqlx's
/// `Migrator::new` reads every `<version>_<name>.sql` regular file of it
/// whole, however many and however large. The files it would read are
/// found as it finds them (a regular file, through symbolic links, named
/// `<something>_<something>.sql`); other entries count only towards
/// `max_entries`, since it lists them all.
fn check_bounds(dir: &Path, bounds: &Bounds) -> Result<()> {
    let Bounds {
        entries: max_entries,
        file: max_file,
        total: max_total,
    } = *bounds;
    let bad = |reason: String| DbError::BadMigrations {
        dir: dir.display().to_string(),
        reason,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| bad(format!("the folder cannot be listed ({e})")))?;
    let mut total = 0u64;
    for (i, entry) in entries.enumerate() {
        if i >= max_entries {
            return Err(bad(format!(
                "it holds more than {max_entries} entries, more than any release's migrations; point MIGRATIONS_DIR at the release's migrations/ folder"
            ))
            .into());
        }
        let entry = entry.map_err(|e| bad(format!("the folder cannot be listed ({e})")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let read_by_sqlx = name
            .split_once('_')
            .is_some_and(|(_, rest)| rest.ends_with(".sql"));
        if !read_by_sqlx {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            // sqlx says why it cannot read it.
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let shown = crate::error::clipped(&name);
        if meta.len() > max_file {
            return Err(bad(format!(
                "{shown} is {} bytes, over the {max_file} a migration may be; move data loads out of the migrations (or split the file)",
                meta.len()
            ))
            .into());
        }
        total = total.saturating_add(meta.len());
        if total > max_total {
            return Err(bad(format!(
                "its migrations hold more than {max_total} bytes together (passed at {shown}); move data loads out of the migrations"
            ))
            .into());
        }
    }
    Ok(())
}

/// Where a release's migrations came from, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum MigrationSource {
    Directory(String),
    Embedded,
}

/// The migrations of one release, up and down, in version order.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub source: MigrationSource,
    migrations: Vec<Migration>,
}

impl MigrationSet {
    /// Reads `dir` when it is given and exists, else the embedded folder.
    pub async fn load(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(dir) if dir.is_dir() => {
                check_bounds(dir, &BOUNDS)?;
                let migrator = Migrator::new(dir.to_path_buf()).await.with_context(|| {
                    format!("could not read the migrations in {}", dir.display())
                })?;
                Ok(Self {
                    source: MigrationSource::Directory(dir.display().to_string()),
                    migrations: migrator.iter().cloned().collect(),
                })
            }
            _ => Ok(Self::embedded()),
        }
    }

    /// The migrations compiled into this binary.
    pub fn embedded() -> Self {
        Self {
            source: MigrationSource::Embedded,
            migrations: EMBEDDED.iter().cloned().collect(),
        }
    }

    /// The forward migrations (`.up.sql` or plain `.sql`), in version order.
    pub fn ups(&self) -> impl Iterator<Item = &Migration> {
        self.migrations
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
    }

    /// The down migration of `version`, if the release has one.
    pub fn down(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .iter()
            .find(|m| m.version == version && m.migration_type == MigrationType::ReversibleDown)
    }

    /// The up migration of `version`.
    pub fn up(&self, version: i64) -> Option<&Migration> {
        self.ups().find(|m| m.version == version)
    }

    /// The highest version this release knows.
    pub fn latest_version(&self) -> Option<i64> {
        self.ups().map(|m| m.version).max()
    }
}

/// One row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRow {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// A migration as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub version: i64,
    pub name: String,
    /// Runs outside a transaction (`-- no-transaction` on its first line):
    /// a failure can leave part of it committed.
    pub no_transaction: bool,
}

impl MigrationInfo {
    pub fn of(m: &Migration) -> Self {
        Self {
            version: m.version,
            name: m.description.to_string(),
            no_transaction: m.no_tx,
        }
    }
}

/// Where a database stands against a release's migrations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// The highest applied version, `None` for a database never migrated.
    pub current_version: Option<i64>,
    /// The highest version the release knows.
    pub latest_version: Option<i64>,
    pub applied: Vec<MigrationInfo>,
    pub pending: Vec<MigrationInfo>,
    /// Applied migrations whose file has changed since.
    pub drifted: Vec<MigrationInfo>,
    /// Applied versions the release has no file for.
    pub unknown_applied: Vec<i64>,
    /// A version an earlier run left marked as failed.
    pub dirty: Option<i64>,
    pub source: MigrationSource,
}

impl MigrationStatus {
    /// The first reason not to migrate, as the error a caller reports:
    /// dirty first (nothing else can be trusted), then drift, then unknown
    /// versions.
    pub fn blocking_error(&self) -> Option<DbError> {
        if let Some(version) = self.dirty {
            return Some(DbError::Dirty { version });
        }
        if let Some(m) = self.drifted.first() {
            return Some(DbError::ChecksumDrift {
                version: m.version,
                name: m.name.clone(),
            });
        }
        self.unknown_applied
            .first()
            .map(|&version| DbError::UnknownAppliedMigration { version })
    }
}

/// Compares what the database recorded with the release's files.
pub fn plan(applied: &[AppliedRow], set: &MigrationSet) -> MigrationStatus {
    let by_version: BTreeMap<i64, &AppliedRow> = applied.iter().map(|r| (r.version, r)).collect();
    let mut status = MigrationStatus {
        current_version: applied
            .iter()
            .filter(|r| r.success)
            .map(|r| r.version)
            .max(),
        latest_version: set.latest_version(),
        applied: Vec::new(),
        pending: Vec::new(),
        drifted: Vec::new(),
        unknown_applied: Vec::new(),
        dirty: applied.iter().find(|r| !r.success).map(|r| r.version),
        source: set.source.clone(),
    };
    for m in set.ups() {
        match by_version.get(&m.version) {
            Some(row) => {
                if row.checksum != *m.checksum {
                    status.drifted.push(MigrationInfo::of(m));
                }
                status.applied.push(MigrationInfo::of(m));
            }
            None => status.pending.push(MigrationInfo::of(m)),
        }
    }
    status.unknown_applied = applied
        .iter()
        .filter(|r| set.up(r.version).is_none())
        .map(|r| r.version)
        .collect();
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{AssertSqlSafe, SqlSafeStr};

    fn set(files: &[(i64, &str, &str)]) -> MigrationSet {
        MigrationSet {
            source: MigrationSource::Embedded,
            migrations: files
                .iter()
                .map(|(v, name, sql)| {
                    Migration::new(
                        *v,
                        name.to_string().into(),
                        MigrationType::ReversibleUp,
                        AssertSqlSafe(sql.to_string()).into_sql_str(),
                        false,
                    )
                })
                .collect(),
        }
    }

    fn row(set: &MigrationSet, version: i64) -> AppliedRow {
        let m = set.up(version).unwrap();
        AppliedRow {
            version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
            success: true,
        }
    }

    #[test]
    fn a_fresh_database_has_every_migration_pending() {
        let files = set(&[(1, "a", "select 1"), (2, "b", "select 2")]);
        let status = plan(&[], &files);
        assert_eq!(status.current_version, None);
        assert_eq!(status.latest_version, Some(2));
        assert_eq!(
            status.pending.iter().map(|m| m.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(status.blocking_error().is_none());
    }

    #[test]
    fn applied_migrations_are_not_pending() {
        let files = set(&[(1, "a", "select 1"), (2, "b", "select 2")]);
        let status = plan(&[row(&files, 1)], &files);
        assert_eq!(status.current_version, Some(1));
        assert_eq!(
            status.pending.iter().map(|m| m.version).collect::<Vec<_>>(),
            [2]
        );
    }

    #[test]
    fn a_changed_applied_file_is_drift_named_by_version_and_name() {
        let released = set(&[(1, "create contacts", "create table contacts()")]);
        let edited = set(&[(1, "create contacts", "create table contacts(id int)")]);
        let status = plan(&[row(&released, 1)], &edited);
        assert_eq!(
            status.blocking_error(),
            Some(DbError::ChecksumDrift {
                version: 1,
                name: "create contacts".into()
            })
        );
    }

    #[test]
    fn an_applied_version_without_a_file_blocks() {
        let newer = set(&[(1, "a", "select 1"), (2, "b", "select 2")]);
        let older = set(&[(1, "a", "select 1")]);
        let status = plan(&[row(&newer, 1), row(&newer, 2)], &older);
        assert_eq!(status.unknown_applied, [2]);
        assert_eq!(
            status.blocking_error(),
            Some(DbError::UnknownAppliedMigration { version: 2 })
        );
    }

    #[test]
    fn a_failed_row_makes_the_database_dirty() {
        let files = set(&[(1, "a", "select 1")]);
        let mut failed = row(&files, 1);
        failed.success = false;
        let status = plan(&[failed], &files);
        assert_eq!(status.blocking_error(), Some(DbError::Dirty { version: 1 }));
    }

    #[tokio::test]
    async fn a_migrations_folder_past_its_bounds_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1_init.up.sql"), "select 1;").unwrap();
        // Sparse: 17 MiB to stat, nothing on disk.
        let big = std::fs::File::create(dir.path().join("2_load_everything.up.sql")).unwrap();
        big.set_len(17 << 20).unwrap();
        let err = MigrationSet::load(Some(dir.path())).await.unwrap_err();
        assert!(
            matches!(DbError::find(&err), Some(DbError::BadMigrations { .. })),
            "{err:#}"
        );
        assert_eq!(
            crate::phases::migrate::kind_of(&err),
            crate::error::Kind::Config
        );
        assert!(
            err.to_string().contains(
                "2_load_everything.up.sql is 17825792 bytes, over the 16777216 a migration may be"
            ),
            "{err}"
        );
        // More entries than a release's folder has, whatever they are.
        let many = tempfile::tempdir().unwrap();
        for i in 0..=BOUNDS.entries {
            std::fs::write(many.path().join(format!("note-{i}.txt")), "").unwrap();
        }
        let err = MigrationSet::load(Some(many.path())).await.unwrap_err();
        assert!(err.to_string().contains("more than 10000 entries"), "{err}");
        // Files within the bound one by one, past it together.
        let small = Bounds {
            entries: 10,
            file: 10,
            total: 15,
        };
        let sum = tempfile::tempdir().unwrap();
        std::fs::write(sum.path().join("1_a.sql"), "select 1;").unwrap();
        check_bounds(sum.path(), &small).unwrap();
        std::fs::write(sum.path().join("2_b.sql"), "select 2;").unwrap();
        let err = check_bounds(sum.path(), &small).unwrap_err();
        assert!(
            err.to_string().contains("more than 15 bytes together"),
            "{err}"
        );
        // What sqlx does not read counts as an entry only.
        std::fs::remove_file(sum.path().join("2_b.sql")).unwrap();
        std::fs::write(sum.path().join("README.md"), "x".repeat(100)).unwrap();
        check_bounds(sum.path(), &small).unwrap();
    }

    /// `sqlx::migrate!` re-reads a changed file but cannot see a new one
    /// without a rebuild of this module; a stale embedded copy fails here.
    #[tokio::test]
    async fn the_embedded_migrations_are_the_migrations_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let folder = MigrationSet::load(Some(&dir)).await.unwrap();
        let embedded = MigrationSet::embedded();
        let summary = |set: &MigrationSet| -> Vec<(i64, MigrationType, Vec<u8>)> {
            set.migrations
                .iter()
                .map(|m| (m.version, m.migration_type, m.checksum.to_vec()))
                .collect()
        };
        assert_eq!(
            summary(&embedded),
            summary(&folder),
            "the embedded migrations are stale: touch src/db/migrations.rs and rebuild"
        );
    }

    #[test]
    fn the_embedded_schema_is_reversible_migration_by_migration() {
        let set = MigrationSet::embedded();
        assert!(set.ups().count() >= 6);
        for up in set.ups() {
            assert!(
                set.down(up.version).is_some(),
                "migration {} has no .down.sql",
                up.version
            );
        }
    }
}
