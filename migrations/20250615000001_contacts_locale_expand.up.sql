-- Expand step of the locale change: a nullable column with no default
-- rewrites nothing and takes its ACCESS EXCLUSIVE lock only for an instant.
-- The release that reads it backfills in batches; a later release (the
-- contract step) adds NOT NULL once every row has a value.
ALTER TABLE contacts ADD COLUMN locale text CHECK (locale ~ '^[a-z]{2}(-[A-Z]{2})?$');
