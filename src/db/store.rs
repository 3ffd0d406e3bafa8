//! Backup locations: `file:///path/` and `s3://bucket/prefix/`.
//!
//! Both go through `object_store`, so listing, reading and writing are one
//! code path. A backup is two objects: `<name>.dump` (pg_dump's custom
//! format) and `<name>.json`, its [`BackupRecord`]; listing reads only the
//! small `.json` files. The daily backup CronJob's dumps, under `daily/`,
//! have no record: listing names them ([`DailyDump`]) from the listing
//! alone, and finding one for a restore says why it cannot be taken.
//!
//! `pg_dump` writes to a local file (it must seek to finish its table of
//! contents). For a `file://` location that file is staged in the backup
//! directory itself and renamed into place, so a 1 GB backup is never
//! copied; for S3 it is staged in the temp directory and uploaded in parts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::backup::BackupRecord;
use super::error::DbError;

/// The most a backup record's JSON may be: 1 MiB (one is a few hundred
/// bytes).
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// The most objects a listing reads: years of deploys and daily dumps are a
/// few thousand; far more is not a backup location (or one no lifecycle
/// rule prunes), and is refused rather than read into memory.
const MAX_LISTED_OBJECTS: usize = 200_000;

/// Records read at once: a location of a thousand backups is a thousand
/// small GETs, which one after another take a minute on S3.
const RECORD_READS_AT_ONCE: usize = 16;

/// The folder of a backup location the daily backup CronJob uploads to
/// (`manifests/platform/40-database-backup.yaml`).
pub const DAILY_FOLDER: &str = "daily/";

/// A dump the daily backup CronJob left without a record beside it (no
/// checksum, schemas or schema version): one of a job from before it wrote
/// records, of the whole database, which a restore cannot check. It is
/// listed, and restored by hand. (The job now writes the record, and its
/// backups are listed and restored like the tool's own.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyDump {
    /// `daily/<UTC time>`, as `db restore` would be asked for it.
    pub name: String,
    pub location: String,
    pub size_bytes: u64,
    /// The time in its name; the object's modification time when the name
    /// holds none.
    pub created_at: DateTime<Utc>,
}

/// Everything a backup location holds, newest first each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The backups the tool took, with their records.
    pub backups: Vec<BackupRecord>,
    /// The daily CronJob's dumps.
    pub daily: Vec<DailyDump>,
}

/// The daily dump an object is, from its key inside the location (`rel`):
/// `daily/<name>.dump`, nothing deeper.
pub fn daily_dump_of(
    base: &str,
    rel: &str,
    size_bytes: u64,
    modified: DateTime<Utc>,
) -> Option<DailyDump> {
    let stem = rel
        .strip_prefix(DAILY_FOLDER)?
        .strip_suffix(".dump")
        .filter(|s| !s.is_empty() && !s.contains('/'))?;
    let created_at = NaiveDateTime::parse_from_str(stem, "%Y%m%d-%H%M%S")
        .map(|t| t.and_utc())
        .unwrap_or(modified);
    Some(DailyDump {
        name: format!("{DAILY_FOLDER}{stem}"),
        location: format!("{base}{rel}"),
        size_bytes,
        created_at,
    })
}

/// Why a download stopped before its end.
enum Download {
    BrokeOff(object_store::Error),
    /// More bytes came than the caller expects; the chunk that passed the
    /// bound was not handed on.
    PastBound,
}

/// The next chunk of a GET's body, its length counted into `seen`: none
/// at the body's end, [`Download::PastBound`] once more than `limit`
/// bytes have come. Both readers of the store (records, dumps) count the
/// same way, so neither trusts a size it was told.
async fn next_chunk(
    stream: &mut (impl futures_util::Stream<Item = object_store::Result<bytes::Bytes>> + Unpin),
    seen: &mut u64,
    limit: u64,
) -> std::result::Result<Option<bytes::Bytes>, Download> {
    let Some(chunk) = stream.try_next().await.map_err(Download::BrokeOff)? else {
        return Ok(None);
    };
    *seen = seen.saturating_add(chunk.len() as u64);
    if *seen > limit {
        return Err(Download::PastBound);
    }
    Ok(Some(chunk))
}

/// Where backups are kept.
#[derive(Debug, Clone)]
pub struct BackupStore {
    /// The location as configured, ending in `/`.
    base: String,
    store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (S3 key prefix; empty for a local directory).
    prefix: String,
    /// The directory, for `file://` locations.
    local_dir: Option<PathBuf>,
}

/// A backup file staged on local disk before it is stored.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    /// Removes the file if it is never stored (for S3: always, after upload).
    _temp: Option<tempfile::TempPath>,
}

impl BackupStore {
    /// Opens a backup location. `options` are `object_store` S3 settings
    /// (`aws_endpoint`, `aws_allow_http`, `aws_access_key_id`, ...) on top of
    /// the `AWS_*` environment variables; a `file://` location ignores them.
    pub fn open(location: &str, options: &[(String, String)]) -> Result<Self> {
        Self::open_with(location, options, true)
    }

    /// As [`BackupStore::open`], for reading only (listing, finding): a
    /// `file://` directory that is not there yet is an empty location, not
    /// one to create, since a command that only reads changes nothing.
    pub fn open_to_read(location: &str, options: &[(String, String)]) -> Result<Self> {
        Self::open_with(location, options, false)
    }

    fn open_with(location: &str, options: &[(String, String)], create: bool) -> Result<Self> {
        let bad = |reason: String| DbError::BadBackupLocation {
            location: crate::error::clipped(location).into_owned(),
            reason,
        };
        let base = if location.ends_with('/') {
            location.to_owned()
        } else {
            format!("{location}/")
        };
        let url = Url::parse(&base).map_err(|e| bad(format!("it is not a URL ({e})")))?;
        match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("it is not a local path".into()))?;
                // Without its trailing `/`: a file named with one is "not
                // there" to stat, which would hide it.
                let dir: std::path::PathBuf = dir.components().collect();
                if dir.exists() && !dir.is_dir() {
                    return Err(bad(format!("{} is a file, not a directory", dir.display())).into());
                }
                if !dir.exists() && !create {
                    return Ok(Self {
                        base,
                        store: Arc::new(object_store::memory::InMemory::new()),
                        prefix: String::new(),
                        local_dir: Some(dir),
                    });
                }
                std::fs::create_dir_all(&dir).map_err(|e| {
                    bad(format!(
                        "the directory {} cannot be created ({e})",
                        dir.display()
                    ))
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
                    bad(format!(
                        "the directory {} cannot be opened ({e})",
                        dir.display()
                    ))
                })?;
                Ok(Self {
                    base,
                    store: Arc::new(store),
                    prefix: String::new(),
                    local_dir: Some(dir),
                })
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .with_context(|| format!("backup location {location:?} names no bucket"))?;
                // The project's TLS is rustls with ring (no aws-lc-rs, whose
                // second provider would leave rustls without a default).
                // main.rs installs it too; a library caller may not have.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in options {
                    let key = key
                        .parse()
                        .with_context(|| format!("unknown S3 option {key:?}"))?;
                    builder = builder.with_config(key, value);
                }
                let store = builder
                    .build()
                    .with_context(|| format!("could not set up S3 access for {location}"))?;
                Ok(Self {
                    base,
                    store: Arc::new(store),
                    prefix: url.path().trim_matches('/').to_owned(),
                    local_dir: None,
                })
            }
            other => Err(bad(format!("its scheme is {other:?}")).into()),
        }
    }

    /// The location as configured, ending in `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full location of an object of this store, as recorded.
    pub fn location_of(&self, file_name: &str) -> String {
        format!("{}{file_name}", self.base)
    }

    fn key(&self, file_name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(file_name)
        } else {
            ObjectPath::from(format!("{}/{file_name}", self.prefix))
        }
    }

    /// A local path for `pg_dump` to write `file_name` to.
    pub fn stage(&self, file_name: &str) -> Result<Staged> {
        let dir = match &self.local_dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir(),
        };
        let temp = tempfile::Builder::new()
            .prefix(&format!(".partial-{file_name}-"))
            .tempfile_in(&dir)
            .with_context(|| format!("could not create a staging file in {}", dir.display()))?
            .into_temp_path();
        Ok(Staged {
            path: temp.to_path_buf(),
            _temp: Some(temp),
        })
    }

    /// Stores a staged file as `file_name` and returns its stored size.
    pub async fn commit(&self, staged: Staged, file_name: &str) -> Result<u64> {
        let key = self.key(file_name);
        if let Some(dir) = &self.local_dir {
            let target = dir.join(file_name);
            let mut staged = staged;
            let temp = staged
                ._temp
                .take()
                .expect("a staged file has its temp path");
            temp.persist(&target)
                .with_context(|| format!("could not move the backup into {}", target.display()))?;
        } else {
            let mut reader = tokio::fs::File::open(&staged.path).await.with_context(|| {
                format!("could not read the staged backup {}", staged.path.display())
            })?;
            let mut writer = BufWriter::new(self.store.clone(), key.clone());
            let copied = tokio::io::copy(&mut reader, &mut writer).await;
            match copied {
                Ok(_) => writer.shutdown().await.with_context(|| {
                    format!(
                        "could not finish the upload of {}",
                        self.location_of(file_name)
                    )
                })?,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e).with_context(|| {
                        format!("could not upload {}", self.location_of(file_name))
                    });
                }
            }
        }
        let meta = self.store.head(&key).await.with_context(|| {
            format!(
                "the stored backup {} cannot be found",
                self.location_of(file_name)
            )
        })?;
        Ok(meta.size)
    }

    /// Writes a backup's record next to it.
    pub async fn put_record(&self, record: &BackupRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record)?;
        let name = record_file_name(&record.name);
        self.store
            .put(&self.key(&name), PutPayload::from(json))
            .await
            .with_context(|| format!("could not write {}", self.location_of(&name)))?;
        Ok(())
    }

    /// Every backup recorded in this location, newest first.
    pub async fn list(&self) -> Result<Vec<BackupRecord>> {
        Ok(self.listing().await?.backups)
    }

    /// Every backup in this location, recorded or daily, newest first.
    pub async fn listing(&self) -> Result<Listing> {
        self.listing_of_at_most(MAX_LISTED_OBJECTS).await
    }

    async fn listing_of_at_most(&self, max_objects: usize) -> Result<Listing> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let objects: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .take(max_objects.saturating_add(1))
            .try_collect()
            .await
            .with_context(|| format!("could not list the backups in {}", self.base))?;
        if objects.len() > max_objects {
            anyhow::bail!(
                "{} holds more than {max_objects} objects, more than any backup location \
                 should; point DATABASE_BACKUP_URL at the folder of this environment's backups, \
                 or give the bucket a lifecycle rule",
                self.base
            );
        }
        let mut to_read = Vec::new();
        let mut daily = Vec::new();
        for meta in objects {
            let key = meta.location.as_ref();
            let rel = match self.prefix.as_str() {
                "" => key,
                prefix => key
                    .strip_prefix(prefix)
                    .and_then(|k| k.strip_prefix('/'))
                    .unwrap_or(key),
            };
            if let Some(dump) = daily_dump_of(&self.base, rel, meta.size, meta.last_modified) {
                daily.push(dump);
                continue;
            }
            if !key.ends_with(".json") {
                continue;
            }
            // A record is a few hundred bytes; anything far larger is not one.
            if meta.size > MAX_RECORD_BYTES {
                tracing::warn!(object = %meta.location, size = meta.size, "skipping a backup record larger than {MAX_RECORD_BYTES} bytes");
                continue;
            }
            to_read.push(meta.location);
        }
        let read: Vec<(ObjectPath, Result<Option<Vec<u8>>>)> = futures_util::stream::iter(to_read)
            .map(|key| async move {
                let bytes = self.read_record(&key).await;
                (key, bytes)
            })
            .buffered(RECORD_READS_AT_ONCE)
            .collect()
            .await;
        let mut records = Vec::new();
        for (key, bytes) in read {
            let Some(bytes) = bytes? else {
                continue;
            };
            match serde_json::from_slice::<BackupRecord>(&bytes) {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(object = %key, "skipping an unreadable backup record: {e}")
                }
            }
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        // A daily dump with its record is a backup like the others.
        daily.retain(|d| !records.iter().any(|r| r.name == d.name));
        daily.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        Ok(Listing {
            backups: records,
            daily,
        })
    }

    /// A backup record's bytes; none (warned of) when the GET brings more
    /// than [`MAX_RECORD_BYTES`]. The listing's size was checked, but what
    /// a GET returns is another answer (an object replaced meanwhile, a
    /// server that lists one size and serves another), so it is counted
    /// as it comes and read no further than the bound.
    async fn read_record(&self, key: &ObjectPath) -> Result<Option<Vec<u8>>> {
        let mut stream = self.store.get(key).await?.into_stream();
        let mut seen = 0u64;
        let mut out = Vec::new();
        loop {
            match next_chunk(&mut stream, &mut seen, MAX_RECORD_BYTES).await {
                Ok(Some(chunk)) => out.extend_from_slice(&chunk),
                Ok(None) => return Ok(Some(out)),
                Err(Download::BrokeOff(e)) => return Err(e.into()),
                Err(Download::PastBound) => {
                    tracing::warn!(object = %key, "skipping a backup record that holds more than {MAX_RECORD_BYTES} bytes (though listed within them); it was read no further");
                    return Ok(None);
                }
            }
        }
    }

    /// A local file holding the backup's bytes: the file itself for a
    /// `file://` location, a downloaded temporary copy for S3.
    pub async fn fetch(&self, record: &BackupRecord) -> Result<Staged> {
        let file_name = record.file_name();
        if let Some(dir) = &self.local_dir {
            let path = dir.join(&file_name);
            if !path.is_file() {
                return Err(DbError::BackupCorrupt {
                    location: record.location.clone(),
                    reason: "the file is missing".into(),
                }
                .into());
            }
            return Ok(Staged { path, _temp: None });
        }
        let staged = self.stage(&file_name)?;
        let result = self
            .store
            .get(&self.key(&file_name))
            .await
            .with_context(|| format!("could not download {}", record.location))?;
        let mut file = tokio::fs::File::create(&staged.path).await?;
        let mut stream = result.into_stream();
        let mut written = 0u64;
        loop {
            // Past the recorded size it is not the backup recorded: stop
            // before it fills the disk.
            match next_chunk(&mut stream, &mut written, record.size_bytes).await {
                Ok(Some(chunk)) => file.write_all(&chunk).await?,
                Ok(None) => break,
                Err(Download::BrokeOff(e)) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("the download of {} broke off", record.location)));
                }
                Err(Download::PastBound) => {
                    return Err(DbError::BackupCorrupt {
                        location: record.location.clone(),
                        reason: format!(
                            "it holds more than the {} bytes recorded when it was taken; the download was stopped there",
                            record.size_bytes
                        ),
                    }
                    .into());
                }
            }
        }
        file.flush().await?;
        Ok(staged)
    }

    /// Finds a backup by its name (with or without `.dump`) or by the
    /// deployment id that took it (the newest, if it took several).
    /// A daily dump asked for is refused ([`DbError::DailyDumpNotRestorable`]).
    pub async fn find(&self, wanted: &str) -> Result<BackupRecord> {
        let wanted_name = wanted.trim_end_matches(".dump");
        let Listing { backups, daily } = self.listing().await?;
        if let Some(found) = backups
            .iter()
            .find(|r| r.name == wanted_name || r.location == wanted)
            .or_else(|| backups.iter().find(|r| r.deployment_id == wanted))
        {
            return Ok(found.clone());
        }
        if let Some(dump) = daily
            .iter()
            .find(|d| d.name == wanted_name || d.location == wanted)
        {
            return Err(DbError::DailyDumpNotRestorable {
                name: dump.name.clone(),
                location: dump.location.clone(),
            }
            .into());
        }
        Err(DbError::BackupNotFound {
            wanted: crate::error::clipped(wanted).into_owned(),
            store: self.base.clone(),
        }
        .into())
    }
}

fn record_file_name(name: &str) -> String {
    format!("{name}.json")
}

impl Staged {
    /// The staged file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_a_location_not_there_yet_creates_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("backups/staging");
        let url = format!("file://{}/", dir.display());
        let store = BackupStore::open_to_read(&url, &[]).unwrap();
        assert!(store.list().await.unwrap().is_empty());
        assert!(!dir.exists(), "a listing created {}", dir.display());
        // Writing creates it.
        BackupStore::open(&url, &[]).unwrap();
        assert!(dir.is_dir());
    }

    #[test]
    fn a_daily_dump_is_named_and_timed_by_its_file_name() {
        let modified = "2026-12-01T03:20:00Z".parse().unwrap();
        assert_eq!(
            daily_dump_of("s3://b/maily/", "daily/20261201-031702.dump", 42, modified),
            Some(DailyDump {
                name: "daily/20261201-031702".into(),
                location: "s3://b/maily/daily/20261201-031702.dump".into(),
                size_bytes: 42,
                created_at: "2026-12-01T03:17:02Z".parse().unwrap(),
            })
        );
        // A name that is no time: the object's modification time.
        assert_eq!(
            daily_dump_of("file:///b/", "daily/manual.dump", 1, modified).map(|d| d.created_at),
            Some(modified)
        );
        for other in [
            "daily/.dump",
            "daily/x/20261201-031702.dump",
            "daily/20261201-031702.dump.partial",
            "production-20261201-120000.pre-migrate.dump",
            "weekly/20261201-031702.dump",
        ] {
            assert_eq!(
                daily_dump_of("file:///b/", other, 1, modified),
                None,
                "{other}"
            );
        }
    }

    #[tokio::test]
    async fn daily_dumps_are_listed_beside_the_records_and_refused_for_a_restore() {
        let root = tempfile::tempdir().unwrap();
        let url = format!("file://{}/", root.path().display());
        std::fs::create_dir_all(root.path().join("daily")).unwrap();
        std::fs::write(root.path().join("daily/20261130-031700.dump"), b"PGDMP").unwrap();
        std::fs::write(root.path().join("daily/20261201-031700.dump"), b"PGDMP1").unwrap();
        let store = BackupStore::open_to_read(&url, &[]).unwrap();
        let listing = store.listing().await.unwrap();
        assert!(listing.backups.is_empty());
        assert_eq!(
            listing
                .daily
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["daily/20261201-031700", "daily/20261130-031700"],
            "newest first"
        );
        assert_eq!(listing.daily[0].size_bytes, 6);
        for wanted in [
            "daily/20261201-031700",
            "daily/20261201-031700.dump",
            listing.daily[0].location.as_str(),
        ] {
            let err = store.find(wanted).await.unwrap_err();
            assert!(
                matches!(
                    DbError::find(&err),
                    Some(DbError::DailyDumpNotRestorable { name, .. }) if name == "daily/20261201-031700"
                ),
                "{wanted}: {err:#}"
            );
        }
    }

    #[tokio::test]
    async fn a_location_of_more_objects_than_the_bound_is_refused_not_read() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(root.path().join(format!("{i}.dump")), b"x").unwrap();
        }
        let url = format!("file://{}/", root.path().display());
        let store = BackupStore::open_to_read(&url, &[]).unwrap();
        let err = store.listing_of_at_most(3).await.unwrap_err();
        assert!(
            err.to_string().contains("holds more than 3 objects"),
            "{err:#}"
        );
        assert_eq!(
            store.listing_of_at_most(5).await.unwrap(),
            Listing::default()
        );
    }

    /// A store that lists every object as 1 byte long and serves what it
    /// holds: a listing and a GET that disagree, as an object replaced
    /// between the two leaves them.
    #[derive(Debug)]
    struct ListsSmall(object_store::memory::InMemory);

    impl std::fmt::Display for ListsSmall {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("ListsSmall")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for ListsSmall {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0
                .list(prefix)
                .map_ok(|meta| object_store::ObjectMeta { size: 1, ..meta })
                .boxed()
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    fn record(name: &str) -> BackupRecord {
        super::super::backup::sample_record(name, &format!("s3://b/{name}.dump"))
    }

    #[tokio::test]
    async fn a_record_served_larger_than_the_bound_is_skipped_whatever_its_listed_size() {
        let store = BackupStore {
            base: "s3://b/".into(),
            store: Arc::new(ListsSmall(object_store::memory::InMemory::new())),
            prefix: String::new(),
            local_dir: None,
        };
        let small = record("production-20250101-120000.pre-migrate");
        store.put_record(&small).await.unwrap();
        // A record's JSON, padded past the bound with white space JSON
        // allows: read whole, it would parse and be listed.
        let mut huge =
            serde_json::to_vec(&record("production-20250102-120000.pre-migrate")).unwrap();
        huge.resize(MAX_RECORD_BYTES as usize + 1, b' ');
        store
            .store
            .put(
                &ObjectPath::from("production-20250102-120000.pre-migrate.json"),
                PutPayload::from(huge),
            )
            .await
            .unwrap();
        assert_eq!(store.list().await.unwrap(), vec![small]);
    }

    #[tokio::test]
    async fn a_name_no_backup_has_is_echoed_clipped() {
        let root = tempfile::tempdir().unwrap();
        let url = format!("file://{}/", root.path().display());
        let store = BackupStore::open(&url, &[]).unwrap();
        let Err(err) = store.find(&"x".repeat(5000)).await else {
            panic!("found a backup in an empty store");
        };
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn a_location_that_is_a_file_is_a_configuration_problem() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let url = format!("file://{}/", file.display());
        for result in [
            BackupStore::open_to_read(&url, &[]),
            BackupStore::open(&url, &[]),
        ] {
            let Err(err) = result else {
                panic!("a file as the backup directory was taken");
            };
            assert!(
                matches!(DbError::find(&err), Some(DbError::BadBackupLocation { .. })),
                "{err:#}"
            );
            assert!(
                err.to_string().contains("is a file, not a directory"),
                "{err:#}"
            );
        }
        let Err(err) = BackupStore::open("ftp://host/x/", &[]) else {
            panic!("ftp taken as a backup location");
        };
        assert!(err.to_string().contains("its scheme is \"ftp\""), "{err:#}");
    }
}
