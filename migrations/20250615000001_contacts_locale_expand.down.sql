ALTER TABLE contacts DROP COLUMN locale;
