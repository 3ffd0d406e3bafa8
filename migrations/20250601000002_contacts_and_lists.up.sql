-- Contacts carry their own consent record: where it came from, when, from
-- which address, and when and why it was withdrawn. A send is only ever made
-- to a contact whose status is 'subscribed'.
CREATE TABLE contacts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email               text NOT NULL CHECK (position('@' IN email) > 1),
    first_name          text,
    last_name           text,
    attributes          jsonb NOT NULL DEFAULT '{}'::jsonb,
    status              text NOT NULL DEFAULT 'subscribed'
                        CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'complained')),
    consent_source      text NOT NULL CHECK (consent_source IN ('form', 'import', 'api', 'double_opt_in')),
    consented_at        timestamptz NOT NULL,
    consent_ip          inet,
    unsubscribed_at     timestamptz,
    unsubscribe_reason  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contacts_unsubscribed_has_time
        CHECK (status <> 'unsubscribed' OR unsubscribed_at IS NOT NULL)
);

CREATE UNIQUE INDEX contacts_organization_email_key ON contacts (organization_id, lower(email));
-- Audience building filters a tenant's contacts by status.
CREATE INDEX contacts_organization_status_idx ON contacts (organization_id, status);

CREATE TABLE lists (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    description      text,
    double_opt_in    boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

CREATE TABLE list_memberships (
    list_id          bigint NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id       bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'subscribed'
                     CHECK (status IN ('pending', 'subscribed', 'unsubscribed')),
    subscribed_at    timestamptz NOT NULL DEFAULT now(),
    unsubscribed_at  timestamptz,
    PRIMARY KEY (list_id, contact_id)
);

-- "Which lists is this contact on" (unsubscribe pages, contact detail).
CREATE INDEX list_memberships_contact_idx ON list_memberships (contact_id);

-- Addresses that must never be mailed again by a tenant, kept even after
-- the contact row is deleted (CAN-SPAM / GDPR suppression).
CREATE TABLE suppressions (
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email            text NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('unsubscribe', 'hard_bounce', 'complaint', 'manual')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, email)
);
