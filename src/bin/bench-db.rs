//! Backup and restore speed of `maily_deploy::db` against plain
//! `pg_dump -Fc` / `pg_restore` run by hand, on a Maily database of a
//! given size, and the time `migrate` adds to a deploy when nothing is
//! pending.
//!
//! ```text
//! cargo run --release --bin bench-db -- [SIZE_MB] [DATABASE_SERVER_URL]
//! ```
//! SIZE_MB defaults to 1024; the server defaults to MAILY_TEST_POSTGRES_URL
//! (the tests' server) or postgres://postgres@127.0.0.1:5432. The benchmark creates its own
//! databases and drops them.
//!
//! The plain tools are run as the tool runs its own: connected through
//! libpq's environment, so the server's password is never on a command
//! line `ps` shows, and the logs go through the tool's redacting writer.

use std::time::{Duration, Instant};

use anyhow::Result;
use comfy_table::Table;
use maily_deploy::db::backup::PgTools;
use maily_deploy::db::connection::DatabaseUrl;
use maily_deploy::db::restore::{RestoreRequest, restore_file};
use maily_deploy::db::store::BackupStore;
use maily_deploy::db::{self, BackupReason, MigrateSettings};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

const BATCH_CONTACTS: i64 = 100_000;

#[tokio::main]
async fn main() -> Result<()> {
    maily_deploy::logging::init(0, false, true);
    let args: Vec<String> = std::env::args().collect();
    let size_mb: i64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let server = args
        .get(2)
        .cloned()
        .or_else(|| std::env::var("MAILY_TEST_POSTGRES_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    // Its password (and the URL) are hidden from every line logged.
    maily_deploy::redact::register("the database server URL", &server);
    let name = format!("maily_bench_{}", std::process::id());
    let copy = format!("{name}_plain");
    let url = format!("{server}/{name}");
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    drop_databases(&mut admin, &[&name, &copy]).await?;
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let work = tempfile::tempdir()?;
    let result = run(&url, &server, &copy, size_mb, work.path()).await;
    drop_databases(&mut admin, &[&name, &copy]).await?;
    result
}

async fn drop_databases(admin: &mut PgConnection, names: &[&str]) -> Result<()> {
    for db in names {
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .await?;
    }
    Ok(())
}

async fn run(
    url: &str,
    server: &str,
    copy: &str,
    size_mb: i64,
    work: &std::path::Path,
) -> Result<()> {
    let mut settings = MigrateSettings::new(url, "bench-20250601-120000");
    settings.backup_url = Some(format!("file://{}/store/", work.display()));
    db::migrate(&settings).await?;
    let mut conn = PgConnection::connect(url).await?;
    let started = Instant::now();
    let bytes = seed(&mut conn, size_mb * 1024 * 1024).await?;
    eprintln!(
        "seeded {} MB in {:.1}s",
        bytes / 1024 / 1024,
        started.elapsed().as_secs_f64()
    );
    let jobs = settings.restore_jobs;
    let db_url = DatabaseUrl::parse(url)?;

    // Plain pg_dump, as a person would run it, and the tool (pg_dump,
    // verification, SHA-256, stored), alternated three times so that
    // checkpoints and caches hit both alike; medians are reported.
    let plain_file = work.join("plain.dump");
    let plain_file = plain_file.to_str().unwrap();
    let mut plain_dumps = Vec::new();
    let mut tool_dumps = Vec::new();
    let mut record = None;
    for round in 0..3 {
        let t = Instant::now();
        pg_tool("pg_dump", &db_url, &["-Fc", "-f", plain_file]).await?;
        plain_dumps.push(t.elapsed());
        let mut s = settings.clone();
        s.deployment_id = format!("bench-20250601-12000{round}");
        let t = Instant::now();
        record = Some(db::backup(&s, BackupReason::PreMigrate).await?);
        tool_dumps.push(t.elapsed());
        eprintln!(
            "round {round}: plain pg_dump {:.2}s, tool backup {:.2}s",
            plain_dumps[round].as_secs_f64(),
            tool_dumps[round].as_secs_f64()
        );
    }
    let record = record.expect("three rounds ran");
    let plain_dump = median(plain_dumps);
    let tool_dump = median(tool_dumps);

    // Plain pg_restore into a fresh database with one job once, then
    // plain `--jobs` and the tool's restore step (schema swap, pg_restore
    // --jobs into the live database) alternated three times; medians.
    let copy_url = format!("{server}/{copy}");
    let plain_restore = |j: usize| {
        let copy_url = copy_url.clone();
        async move {
            let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
            drop_databases(&mut admin, &[copy]).await?;
            admin
                .execute(AssertSqlSafe(format!("CREATE DATABASE {copy}")))
                .await?;
            let copy_db = DatabaseUrl::parse(&copy_url)?;
            let jarg = format!("--jobs={j}");
            let dbname = format!("--dbname={}", copy_db.database());
            let t = Instant::now();
            pg_tool(
                "pg_restore",
                &copy_db,
                &[&dbname, &jarg, "--exit-on-error", plain_file],
            )
            .await?;
            eprintln!(
                "plain pg_restore --jobs={j}: {:.2}s",
                t.elapsed().as_secs_f64()
            );
            anyhow::Ok(t.elapsed())
        }
    };
    let single = plain_restore(1).await?;
    let store = BackupStore::open(settings.backup_url.as_deref().unwrap(), &[])?;
    let dump = store.fetch(&record).await?;
    let mut plain_parallel = Vec::new();
    let mut tool_steps = Vec::new();
    for _ in 0..3 {
        plain_parallel.push(plain_restore(jobs).await?);
        let t = Instant::now();
        restore_file(
            &mut conn,
            RestoreRequest {
                db: &db_url,
                tools: &PgTools::default(),
                record: &record,
                dump: dump.path(),
                jobs,
            },
        )
        .await?;
        tool_steps.push(t.elapsed());
        eprintln!("tool restore step: {:.2}s", t.elapsed().as_secs_f64());
    }
    let parallel = median(plain_parallel);
    let tool_restore_step = median(tool_steps);
    let _ = conn.close().await;
    let mut restore_settings = settings.clone();
    restore_settings.deployment_id = "bench-20250601-130000".into();
    let t = Instant::now();
    db::restore(&restore_settings, &record).await?;
    let tool_restore_all = t.elapsed();
    eprintln!(
        "tool restore, whole: {:.2}s",
        tool_restore_all.as_secs_f64()
    );

    // migrate with nothing pending: what it adds to every deploy, with
    // the URL's TLS setting as given (sslmode=prefer by default) and with
    // TLS off, to show what the TLS handshake costs.
    let idle = idle_migrate(&settings).await?;
    let mut plain_tcp = settings.clone();
    plain_tcp.database_url = format!("{url}?sslmode=disable");
    let idle_no_tls = idle_migrate(&plain_tcp).await?;

    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
    let mut table = Table::new();
    table.set_header(["operation", "tool (s)", "plain (s)", "tool / plain"]);
    table.add_row([
        "backup, median of 3: tool (pg_dump -Fc, verify, sha256, store) vs pg_dump -Fc".to_owned(),
        secs(tool_dump),
        secs(plain_dump),
        ratio(tool_dump, plain_dump),
    ]);
    table.add_row([
        format!("restore step, median of 3: tool (schema swap, --jobs={jobs}) vs pg_restore, 1 job, fresh db"),
        secs(tool_restore_step),
        secs(single),
        ratio(tool_restore_step, single),
    ]);
    table.add_row([
        format!("restore step, medians of 3: tool vs pg_restore --jobs={jobs}, fresh db"),
        secs(tool_restore_step),
        secs(parallel),
        ratio(tool_restore_step, parallel),
    ]);
    table.add_row([
        "restore, whole (checksum, verify, safety backup, restore) vs pg_restore, 1 job".to_owned(),
        secs(tool_restore_all),
        secs(single),
        ratio(tool_restore_all, single),
    ]);
    for (label, times) in [
        (
            "migrate with nothing pending (TLS as the URL says): median; max of 21",
            &idle,
        ),
        (
            "migrate with nothing pending, sslmode=disable: median; max of 21",
            &idle_no_tls,
        ),
    ] {
        table.add_row([
            label.to_owned(),
            format!(
                "{:.1} ms; {:.1} ms",
                times[10].as_secs_f64() * 1e3,
                times[20].as_secs_f64() * 1e3
            ),
            "-".to_owned(),
            "-".to_owned(),
        ]);
    }
    println!(
        "database {} MB on disk, dump {} MB, {} cores\n{table}",
        bytes / 1024 / 1024,
        record.size_bytes / 1024 / 1024,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
}

/// 21 runs of `migrate` with nothing pending, sorted.
async fn idle_migrate(settings: &MigrateSettings) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let outcome = db::migrate(settings).await?;
        anyhow::ensure!(outcome.backup.is_none(), "something was pending");
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// `program` with `args`, connected to `db` through libpq's environment
/// (PgTools' command: inherited `PG*` cleared, the password in
/// `PGPASSWORD`), its output read with bounds and its errors redacted.
async fn pg_tool(program: &str, db: &DatabaseUrl, args: &[&str]) -> Result<()> {
    let tools = PgTools::default();
    let mut cmd = tools.command(program, Some(db));
    cmd.args(args);
    tools.run(cmd, program, Some(db)).await?;
    Ok(())
}

/// Fills the database in batches until it reaches `target` bytes: contacts,
/// list memberships, one send and two delivery events per contact, and AI
/// generations, the shape of a real tenant's data.
async fn seed(conn: &mut PgConnection, target: i64) -> Result<i64> {
    conn.execute(
        r#"
        INSERT INTO organizations (name, slug) SELECT 'Org ' || g, 'org-' || g FROM generate_series(1, 10) g;
        INSERT INTO lists (organization_id, name) SELECT id, 'Newsletter' FROM organizations;
        INSERT INTO templates (organization_id, name, subject, html_body)
             SELECT id, 'Welcome', 'Welcome!', repeat('<p>Hello there</p>', 20) FROM organizations;
        INSERT INTO campaigns (organization_id, template_id, list_id, name, subject, from_name, from_email)
             SELECT t.organization_id, t.id, l.id, 'Spring', 'Spring sale', 'Maily', 'news@example.com'
               FROM templates t JOIN lists l USING (organization_id);
        "#,
    )
    .await?;
    let mut batch = 0i64;
    loop {
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut *conn)
            .await?;
        if size >= target {
            conn.execute("VACUUM ANALYZE").await?;
            return Ok(size);
        }
        let lo = batch * BATCH_CONTACTS + 1;
        let hi = lo + BATCH_CONTACTS - 1;
        conn.execute(AssertSqlSafe(format!(
            r#"
            INSERT INTO contacts (organization_id, email, first_name, last_name, attributes, consent_source,
                                  consented_at, consent_ip)
                 SELECT o.id, 'contact' || g || '@example.org', 'First' || g, 'Last' || g,
                        jsonb_build_object('score', g % 100, 'city', 'City ' || g % 500),
                        'form', now() - g * interval '1 second', '10.1.2.3'
                   FROM generate_series({lo}, {hi}) g
                   JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM organizations) o
                     ON o.n = g % 10;
            INSERT INTO list_memberships (list_id, contact_id)
                 SELECT l.id, c.id FROM contacts c JOIN lists l USING (organization_id)
                  WHERE c.id BETWEEN {lo} AND {hi};
            INSERT INTO sends (organization_id, campaign_id, contact_id, status, provider_message_id, sent_at)
                 SELECT c.organization_id, k.id, c.id, 'delivered', 'msg-' || c.id, now()
                   FROM contacts c JOIN campaigns k USING (organization_id)
                  WHERE c.id BETWEEN {lo} AND {hi};
            INSERT INTO delivery_events (send_id, campaign_id, event_type, user_agent, ip, occurred_at)
                 SELECT s.id, s.campaign_id, e, 'Mozilla/5.0 (X11; Linux x86_64)', '192.0.2.1', now()
                   FROM sends s CROSS JOIN (VALUES ('delivered'), ('open')) AS v(e)
                  WHERE s.contact_id BETWEEN {lo} AND {hi};
            INSERT INTO ai_generations (organization_id, provider, model, purpose, prompt_tokens,
                                        completion_tokens, cost_usd, status)
                 SELECT organization_id, 'anthropic', 'claude', 'subject_line', 120, 30, 0.0012, 'succeeded'
                   FROM contacts WHERE id BETWEEN {lo} AND {hi} AND id % 20 = 0;
            "#
        )))
        .await?;
        batch += 1;
    }
}
