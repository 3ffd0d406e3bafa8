-- Every call to an AI provider, for cost accounting per tenant and model.
CREATE TABLE ai_generations (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id            uuid REFERENCES users (id) ON DELETE SET NULL,
    campaign_id        bigint REFERENCES campaigns (id) ON DELETE SET NULL,
    template_id        bigint REFERENCES templates (id) ON DELETE SET NULL,
    provider           text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    model              text NOT NULL,
    purpose            text NOT NULL CHECK (purpose IN ('subject_line', 'body', 'personalization', 'analysis')),
    prompt_tokens      integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  integer NOT NULL CHECK (completion_tokens >= 0),
    cost_usd           numeric(12, 6) NOT NULL CHECK (cost_usd >= 0),
    latency_ms         integer CHECK (latency_ms >= 0),
    status             text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    error              text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Billing sums a tenant's cost over a period; usage pages group by model.
CREATE INDEX ai_generations_organization_created_idx ON ai_generations (organization_id, created_at);
CREATE INDEX ai_generations_provider_model_idx ON ai_generations (provider, model, created_at);
