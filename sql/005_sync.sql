-- Keeping a folder in step: a new import of a folder is a sync (unchanged files are not copied,
-- files gone from the folder are reported and, with prune, removed), watches that start syncs on
-- their own, content dedupe across sources, and deleting what was imported.

-- 'deleting': the import's objects and rows are being removed by a job; the row goes last.
ALTER TABLE imports DROP CONSTRAINT imports_status_check;
ALTER TABLE imports ADD CONSTRAINT imports_status_check CHECK (status IN (
    'queued', 'listing', 'running', 'completed', 'completed_with_errors', 'failed', 'cancelled', 'deleting'));
ALTER TABLE imports
    ADD COLUMN unchanged_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN deduplicated_count integer NOT NULL DEFAULT 0,
    ADD COLUMN removed_count      integer NOT NULL DEFAULT 0,
    ADD COLUMN pruned_count       integer NOT NULL DEFAULT 0,
    -- Remove from storage and the database the images of files that are gone from the folder.
    ADD COLUMN prune              boolean NOT NULL DEFAULT false,
    ADD COLUMN callback_url       text,
    ADD COLUMN watch_id           bigint;

-- 'unchanged': the file is stored already, with the same checksum and modified time;
-- 'removed': a file an earlier import of this folder stored that the folder no longer has.
ALTER TABLE import_items DROP CONSTRAINT import_items_status_check;
ALTER TABLE import_items ADD CONSTRAINT import_items_status_check CHECK (status IN (
    'pending', 'in_progress', 'done', 'skipped', 'failed', 'cancelled', 'unchanged', 'removed'));
-- The image whose stored bytes this item's copy was made from (server-side), when it was.
ALTER TABLE import_items ADD COLUMN deduplicated_from bigint;

-- Content dedupe finds stored bytes by checksum: an MD5 (computed for every stored image) or the
-- source's own kind (Dropbox's content_hash).
CREATE INDEX images_md5_idx ON images (md5, size) WHERE md5 IS NOT NULL;
CREATE INDEX images_checksum_idx ON images (checksum, size) WHERE checksum IS NOT NULL;

CREATE TABLE watches (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text        NOT NULL CHECK (source IN ('google_drive', 'dropbox')),
    folder_id        text        NOT NULL,
    folder_url       text        NOT NULL,
    resource_key     text,
    link_password    text,
    reader           text        CHECK (reader IN ('api', 'public_page')),
    recursive        boolean     NOT NULL DEFAULT true,
    prune            boolean     NOT NULL DEFAULT false,
    callback_url     text,
    interval_s       integer     NOT NULL CHECK (interval_s >= 1),
    paused           boolean     NOT NULL DEFAULT false,
    next_check_at    timestamptz NOT NULL DEFAULT now(),
    -- A lease: the worker checking this watch holds it until then, so no two check it at once.
    checking_until   timestamptz,
    -- What the folder held when a sync last started from it: a check that finds the same starts none.
    fingerprint      text,
    last_checked_at  timestamptz,
    last_sync_at     timestamptz,
    last_import_id   bigint      REFERENCES imports (id) ON DELETE SET NULL,
    last_result      text,
    -- Checks that failed in a row (the folder unshared, the source down): each one doubles the wait.
    failures         integer     NOT NULL DEFAULT 0,
    error_code       text,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX watches_due_idx ON watches (next_check_at) WHERE NOT paused;
ALTER TABLE imports ADD CONSTRAINT imports_watch_id_fkey FOREIGN KEY (watch_id) REFERENCES watches (id) ON DELETE SET NULL;
CREATE INDEX imports_watch_idx ON imports (watch_id, id) WHERE watch_id IS NOT NULL;
-- A sync compares the folder with the images earlier imports of it stored.
CREATE INDEX imports_folder_idx ON imports (source, folder_id);
