CREATE TABLE templates (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    subject          text NOT NULL,
    html_body        text NOT NULL,
    text_body        text,
    version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name, version)
);

CREATE TABLE campaigns (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    template_id      bigint NOT NULL REFERENCES templates (id) ON DELETE RESTRICT,
    list_id          bigint NOT NULL REFERENCES lists (id) ON DELETE RESTRICT,
    name             text NOT NULL,
    subject          text NOT NULL,
    from_name        text NOT NULL,
    from_email       text NOT NULL CHECK (position('@' IN from_email) > 1),
    status           text NOT NULL DEFAULT 'draft'
                     CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'paused', 'cancelled')),
    scheduled_at     timestamptz,
    send_timezone    text NOT NULL DEFAULT 'UTC',
    started_at       timestamptz,
    completed_at     timestamptz,
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_scheduled_has_time CHECK (status <> 'scheduled' OR scheduled_at IS NOT NULL),
    CONSTRAINT campaigns_completed_after_start CHECK (completed_at IS NULL OR completed_at >= started_at)
);

-- The scheduler polls "scheduled campaigns due now"; a partial index keeps
-- that scan tiny however many campaigns have been sent.
CREATE INDEX campaigns_due_idx ON campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_organization_created_idx ON campaigns (organization_id, created_at DESC);
