//! What the database tests share: a fresh database per test on the
//! machine's PostgreSQL, checksums of its rows and schema computed
//! independently of the code under test, seed data, and an S3-compatible
//! server (moto) started on a free port.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use maily_deploy::db::MigrateSettings;
use sqlx::{Connection, Executor, PgConnection};

/// The tests' PostgreSQL, as `postgres` without a password:
/// `MAILY_TEST_POSTGRES_URL` (which `scripts/test` sets from
/// `scripts/setup.d/services.sh`), else the machine's 127.0.0.1:5432.
pub fn server() -> String {
    std::env::var("MAILY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub backups: tempfile::TempDir,
}

impl TestDb {
    pub async fn create(label: &str) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "maily_test_{label}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let server = server();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the tests' PostgreSQL must answer at {server} (scripts/test starts it): {e}"
                )
            });
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap();
        TestDb {
            url: format!("{server}/{name}"),
            name,
            backups: tempfile::tempdir().unwrap(),
        }
    }

    pub fn backup_url(&self) -> String {
        format!("file://{}/", self.backups.path().display())
    }

    /// Settings for this database, backing up to the test's own directory.
    pub fn settings(&self, deployment_id: &str) -> MigrateSettings {
        let mut s = MigrateSettings::new(&self.url, deployment_id);
        s.backup_url = Some(self.backup_url());
        s.restore_jobs = 2;
        s
    }

    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    pub async fn execute(&self, sql: &str) {
        let mut c = self.conn().await;
        c.execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap();
        c.close().await.unwrap();
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        let mut c = self.conn().await;
        let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        v
    }

    /// Versions recorded in `_sqlx_migrations`.
    pub async fn applied_versions(&self) -> Vec<i64> {
        let mut c = self.conn().await;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if !exists {
            return vec![];
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap()
    }

    /// The database's state as a user would compare it: the schema, and a
    /// checksum of every table's rows.
    pub async fn state(&self) -> DbState {
        let mut c = self.conn().await;
        let schema: Vec<String> = sqlx::query_scalar(
            "SELECT line FROM (
                SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type,
                              is_nullable, coalesce(column_default, '')) AS line
                  FROM information_schema.columns WHERE table_schema = 'public'
                UNION ALL
                SELECT format('constraint %s %s', conrelid::regclass, pg_get_constraintdef(oid))
                  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                UNION ALL
                SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
                UNION ALL
                SELECT format('sequence %s', sequence_name) FROM information_schema.sequences
                 WHERE sequence_schema = 'public'
                UNION ALL
                SELECT format('schema %s owner %s acl %s comment %s', nspname, pg_get_userbyid(nspowner),
                              nspacl, obj_description(oid, 'pg_namespace'))
                  FROM pg_namespace WHERE nspname = 'public'
             ) s ORDER BY line",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        let mut rows = BTreeMap::new();
        for t in tables {
            let (count, sum): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM public.\"{t}\" t"
            )))
            .fetch_one(&mut c)
            .await
            .unwrap();
            rows.insert(t, (count, sum.unwrap_or_default()));
        }
        c.close().await.unwrap();
        DbState { schema, rows }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("dropdb")
            .args([
                "--maintenance-db",
                &format!("{}/postgres", server()),
                "--force",
                "--if-exists",
                &self.name,
            ])
            .status();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    pub schema: Vec<String>,
    /// table -> (row count, md5 of its rows)
    pub rows: BTreeMap<String, (i64, String)>,
}

impl DbState {
    /// The schema without sqlx's bookkeeping table.
    pub fn app_schema(&self) -> Vec<&str> {
        self.schema
            .iter()
            .map(String::as_str)
            .filter(|l| !l.contains("_sqlx_migrations"))
            .collect()
    }

    pub fn total_rows(&self) -> i64 {
        self.rows.values().map(|(n, _)| n).sum()
    }
}

/// The source tree's migrations folder.
pub fn repo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A migrations directory holding the repository's migrations (the first
/// `count` of them, up and down) plus `extra` files.
pub fn migrations_dir(count: usize, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut versions: Vec<String> = std::fs::read_dir(repo_migrations())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n.split('_').next().unwrap().to_owned())
        .collect();
    versions.sort();
    versions.dedup();
    let keep: Vec<_> = versions.into_iter().take(count).collect();
    for entry in std::fs::read_dir(repo_migrations()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.iter().any(|v| name.starts_with(&format!("{v}_"))) {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    for (name, sql) in extra {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

/// The number of migrations in the repository.
pub fn repo_migration_count() -> usize {
    std::fs::read_dir(repo_migrations())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".up.sql")
        })
        .count()
}

/// Fills a migrated database with `contacts` contacts and proportional
/// campaigns, sends, events, AI generations and verifications: about
/// 2.5 rows per contact in all.
pub async fn seed(db: &TestDb, contacts: i64) {
    let sends = contacts / 2;
    let events = contacts / 2;
    let sql = format!(
        r#"
        INSERT INTO organizations (id, name, slug, plan)
             SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,
                    'Org ' || g, 'org-' || g, (ARRAY['free','starter','growth','enterprise'])[1 + g % 4]
               FROM generate_series(1, 10) g;
        INSERT INTO users (id, organization_id, email, full_name, role)
             SELECT ('10000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid,
                    ('00000000-0000-0000-0000-' || lpad((1 + g % 10)::text, 12, '0'))::uuid,
                    'user' || g || '@example.com', 'User ' || g, 'member'
               FROM generate_series(1, 50) g;
        INSERT INTO contacts (organization_id, email, first_name, attributes, status, consent_source,
                              consented_at, consent_ip, unsubscribed_at)
             SELECT ('00000000-0000-0000-0000-' || lpad((1 + g % 10)::text, 12, '0'))::uuid,
                    'contact' || g || '@example.org', 'First' || g,
                    jsonb_build_object('score', g % 100),
                    CASE WHEN g % 17 = 0 THEN 'unsubscribed' ELSE 'subscribed' END,
                    'form', timestamptz '2025-01-01 00:00:00+00' + g * interval '1 second',
                    ('10.0.' || (g % 250) || '.' || (g % 200))::inet,
                    CASE WHEN g % 17 = 0 THEN timestamptz '2025-03-01 00:00:00+00' END
               FROM generate_series(1, {contacts}) g;
        INSERT INTO lists (organization_id, name)
             SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, 'Newsletter'
               FROM generate_series(1, 10) g;
        INSERT INTO list_memberships (list_id, contact_id, subscribed_at)
             SELECT l.id, c.id, timestamptz '2025-01-02 00:00:00+00'
               FROM contacts c JOIN lists l USING (organization_id)
              WHERE c.id % 4 = 0;
        INSERT INTO templates (organization_id, name, subject, html_body)
             SELECT id, 'Welcome', 'Welcome!', '<p>Hello {{{{first_name}}}}</p>' FROM organizations;
        INSERT INTO campaigns (organization_id, template_id, list_id, name, subject, from_name, from_email, status,
                               scheduled_at)
             SELECT t.organization_id, t.id, l.id, 'Spring', 'Spring sale', 'Maily', 'news@example.com',
                    'scheduled', timestamptz '2025-04-01 09:00:00+00'
               FROM templates t JOIN lists l USING (organization_id);
        INSERT INTO sends (organization_id, campaign_id, contact_id, status, provider_message_id, queued_at)
             SELECT c.organization_id, k.id, c.id, 'delivered', 'msg-' || c.id, timestamptz '2025-04-01 09:00:00+00'
               FROM contacts c JOIN campaigns k USING (organization_id)
              WHERE c.id <= {sends};
        INSERT INTO delivery_events (send_id, campaign_id, event_type, bounce_type, url, occurred_at)
             SELECT s.id, s.campaign_id,
                    (ARRAY['delivered','open','click','bounce'])[1 + s.id % 4],
                    CASE WHEN s.id % 4 = 3 THEN 'soft' END,
                    CASE WHEN s.id % 4 = 2 THEN 'https://example.com/offer' END,
                    timestamptz '2025-04-01 09:05:00+00' + s.id * interval '1 second'
               FROM sends s WHERE s.id <= {events};
        INSERT INTO ai_generations (organization_id, provider, model, purpose, prompt_tokens, completion_tokens,
                                    cost_usd, status, created_at)
             SELECT ('00000000-0000-0000-0000-' || lpad((1 + g % 10)::text, 12, '0'))::uuid,
                    (ARRAY['openai','anthropic','google'])[1 + g % 3], 'model-' || g % 3, 'subject_line',
                    100 + g % 50, 20 + g % 10, round((g % 100) * 0.0001, 6), 'succeeded',
                    timestamptz '2025-02-01 00:00:00+00' + g * interval '1 minute'
               FROM generate_series(1, {ai}) g;
        INSERT INTO blockchain_verifications (organization_id, campaign_id, chain, chain_id, contract_address,
                                              content_sha256, status)
             SELECT organization_id, id, 'polygon', 137, '0x' || repeat('ab', 20), sha256(name::bytea), 'pending'
               FROM campaigns;
        "#,
        ai = contacts / 20,
    );
    db.execute(&sql).await;
}

/// moto's S3-compatible server on a free port, stopped on drop.
pub struct S3Server {
    pub port: u16,
    child: Child,
}

impl S3Server {
    /// Starts `moto_server`. A test that needs S3 fails when it cannot.
    pub fn start() -> S3Server {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server must be installed (scripts/setup.d/db.sh installs it)");
        let server = S3Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Creates a bucket (moto accepts the unsigned request).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", format!("http://127.0.0.1:{}", self.port)),
            ("aws_allow_http", "true".to_owned()),
            ("aws_access_key_id", "test".to_owned()),
            ("aws_secret_access_key", "test".to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
