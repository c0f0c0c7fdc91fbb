-- Webhooks: the outbox. An event is written here in the same transaction as the change it announces
-- (so it exists if and only if the change does), one row per destination, all rows of one event
-- sharing its event_id and its exact body; workers deliver the rows at least once, retrying with
-- backoff until the receiver answers 2xx or the event is FOTOOWL_WEBHOOK_GIVE_UP_S old.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL CHECK (event_type IN ('images.added', 'import.finished')),
    -- Deleting an import keeps its events deliverable (their body names the import): only the link goes.
    import_id       bigint      REFERENCES imports (id) ON DELETE SET NULL,
    -- 'webhook_url' (the admin's FOTOOWL_WEBHOOK_URL, trusted) or 'callback_url' (user input: its host
    -- is checked again before every attempt).
    destination     text        NOT NULL CHECK (destination IN ('webhook_url', 'callback_url')),
    url             text        NOT NULL,
    -- The exact bytes that are signed and sent, the same on every attempt.
    body            text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    -- Also the lease: a worker that claims the row pushes it forward, so no other sends it meanwhile
    -- and a worker that dies mid-attempt leaves it to be tried again when the lease runs out.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    gave_up_at      timestamptz,
    UNIQUE (event_id, url)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_import_idx ON webhook_deliveries (import_id, id);
