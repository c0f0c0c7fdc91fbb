-- Listing has an attempt budget of its own: failures are counted (outages of our own services are
-- not), and the last one is kept so the import's final error can say what kept going wrong.
ALTER TABLE imports ADD COLUMN list_failures integer NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN list_error text;

-- Each worker process beats here every few seconds while it runs. An item claimed by a process
-- whose beat has stopped (SIGKILL, lost machine) goes back at once instead of after its lease.
CREATE TABLE workers (
    id           uuid        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE import_items ADD COLUMN worker_id uuid;
CREATE INDEX import_items_worker_idx ON import_items (worker_id) WHERE status = 'in_progress';
