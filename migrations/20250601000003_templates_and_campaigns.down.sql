DROP TABLE campaigns;
DROP TABLE templates;
