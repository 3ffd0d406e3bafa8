-- A campaign's content hash anchored on a public chain, so a recipient can
-- check a message was not altered. The verifier polls pending rows.
CREATE TABLE blockchain_verifications (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    campaign_id       bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    chain             text NOT NULL CHECK (chain IN ('ethereum', 'polygon')),
    chain_id          bigint NOT NULL CHECK (chain_id > 0),
    contract_address  text NOT NULL CHECK (contract_address ~ '^0x[0-9a-fA-F]{40}$'),
    tx_hash           text CHECK (tx_hash ~ '^0x[0-9a-fA-F]{64}$'),
    block_number      bigint CHECK (block_number >= 0),
    content_sha256    bytea NOT NULL CHECK (length(content_sha256) = 32),
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'submitted', 'confirmed', 'failed')),
    submitted_at      timestamptz,
    confirmed_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT blockchain_verifications_confirmed_has_block
        CHECK (status <> 'confirmed' OR (tx_hash IS NOT NULL AND block_number IS NOT NULL))
);

CREATE UNIQUE INDEX blockchain_verifications_chain_tx_key ON blockchain_verifications (chain, tx_hash)
    WHERE tx_hash IS NOT NULL;
CREATE INDEX blockchain_verifications_campaign_idx ON blockchain_verifications (campaign_id);
CREATE INDEX blockchain_verifications_open_idx ON blockchain_verifications (created_at)
    WHERE status IN ('pending', 'submitted');
