DROP TABLE suppressions;
DROP TABLE list_memberships;
DROP TABLE lists;
DROP TABLE contacts;
