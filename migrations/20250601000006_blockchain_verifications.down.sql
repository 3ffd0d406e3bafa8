DROP TABLE blockchain_verifications;
