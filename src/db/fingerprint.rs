//! A schema's fingerprint: one hash of its tables, columns, constraints and
//! indexes, as the catalog describes them.
//!
//! After a restore, the fingerprint must equal the one taken before the
//! failed run: that is how "restored and verified" is checked without
//! reading every row of a large database.

use anyhow::{Context, Result};
use sqlx::PgConnection;

const FINGERPRINT_SQL: &str = r#"
WITH objects AS (
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
           || coalesce(' identity ' || nullif(a.attidentity::text, ''), '') AS line
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm')
    UNION ALL
    SELECT 'constraint ' || c.relname || '.' || k.conname || ' ' || pg_get_constraintdef(k.oid)
      FROM pg_constraint k
      JOIN pg_class c ON c.oid = k.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1)
)
SELECT md5(coalesce(string_agg(line, E'\n' ORDER BY line), '')) FROM objects
"#;

/// The fingerprint of `schemas`' structure.
pub async fn schema_fingerprint(conn: &mut PgConnection, schemas: &[String]) -> Result<String> {
    sqlx::query_scalar(FINGERPRINT_SQL)
        .bind(schemas)
        .fetch_one(conn)
        .await
        .context("could not read the schema from the catalog")
}
