-- One row per (campaign, contact): the unique key makes a retried send job
-- idempotent. These two tables are the large ones (hundreds of millions of
-- rows), so keys are bigint and indexes are only those the product queries.
CREATE TABLE sends (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    campaign_id          bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id           bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'sent', 'delivered', 'bounced', 'failed')),
    provider_message_id  text,
    queued_at            timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    UNIQUE (campaign_id, contact_id)
);

-- Provider webhooks identify a message by the provider's id.
CREATE UNIQUE INDEX sends_provider_message_id_key ON sends (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX sends_contact_idx ON sends (contact_id);

CREATE TABLE delivery_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    send_id      bigint NOT NULL REFERENCES sends (id) ON DELETE CASCADE,
    campaign_id  bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    event_type   text NOT NULL
                 CHECK (event_type IN ('delivered', 'bounce', 'open', 'click', 'complaint', 'unsubscribe')),
    bounce_type  text CHECK (bounce_type IN ('hard', 'soft')),
    url          text,
    user_agent   text,
    ip           inet,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_events_bounce_has_type CHECK ((event_type = 'bounce') = (bounce_type IS NOT NULL)),
    CONSTRAINT delivery_events_click_has_url CHECK (event_type <> 'click' OR url IS NOT NULL)
);

-- Campaign reports aggregate events by type over time.
CREATE INDEX delivery_events_campaign_type_time_idx ON delivery_events (campaign_id, event_type, occurred_at);
CREATE INDEX delivery_events_send_idx ON delivery_events (send_id);
-- Events arrive roughly in time order: a BRIN index serves time-range scans
-- (retention, analytics exports) at a fraction of a btree's size.
CREATE INDEX delivery_events_occurred_brin ON delivery_events USING brin (occurred_at);
