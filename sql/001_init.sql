-- Imports, the files each one found, and the images that landed in storage.

CREATE TABLE imports (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text        NOT NULL DEFAULT 'google_drive' CHECK (source IN ('google_drive')),
    folder_id         text        NOT NULL,
    folder_url        text        NOT NULL,
    resource_key      text,
    folder_name       text,
    recursive         boolean     NOT NULL DEFAULT true,
    status            text        NOT NULL DEFAULT 'queued' CHECK (status IN (
                          'queued', 'listing', 'running', 'completed', 'completed_with_errors',
                          'failed', 'cancelled')),
    -- Counters move only in the same transaction as the item rows they count, by atomic
    -- increments, so they stay exact with any number of workers.
    found_count       integer     NOT NULL DEFAULT 0,
    imported_count    integer     NOT NULL DEFAULT 0,
    skipped_count     integer     NOT NULL DEFAULT 0,
    failed_count      integer     NOT NULL DEFAULT 0,
    bytes_found       bigint      NOT NULL DEFAULT 0,
    bytes_imported    bigint      NOT NULL DEFAULT 0,
    error_code        text,
    error_message     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    listed_at         timestamptz,
    finished_at       timestamptz,
    -- Touched by the listing job after every page: a stale one means its worker died.
    heartbeat_at      timestamptz,
    list_attempts     integer     NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_status_idx ON imports (status) WHERE status IN ('queued', 'listing', 'running');

CREATE TABLE import_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    import_id         bigint      NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    file_id           text        NOT NULL,
    resource_key      text,
    name              text        NOT NULL,
    folder_path       text        NOT NULL DEFAULT '',
    mime_type         text        NOT NULL,
    size_bytes        bigint      NOT NULL DEFAULT 0,
    md5               text,
    width             integer,
    height            integer,
    taken_time        text,
    camera_make       text,
    camera_model      text,
    drive_created_at  timestamptz,
    drive_modified_at timestamptz,
    status            text        NOT NULL DEFAULT 'pending' CHECK (status IN (
                          'pending', 'in_progress', 'done', 'skipped', 'failed', 'cancelled')),
    attempts          integer     NOT NULL DEFAULT 0,
    error_code        text,
    error_message     text,
    -- A claim is a lease: a worker that dies leaves the item to be reclaimed once it expires.
    lease_token       uuid,
    lease_expires_at  timestamptz,
    not_before        timestamptz,
    -- An open multipart upload, recorded so a reclaim can abort what a killed worker left behind.
    upload_id         text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (import_id, file_id)
);
CREATE INDEX import_items_claim_idx ON import_items (import_id, id)
    WHERE status IN ('pending', 'in_progress');
CREATE INDEX import_items_status_idx ON import_items (import_id, status, id);

CREATE TABLE images (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text        NOT NULL DEFAULT 'google_drive',
    google_drive_id   text        NOT NULL,
    name              text        NOT NULL,
    size              bigint      NOT NULL,
    mime_type         text        NOT NULL,
    storage_path      text        NOT NULL,
    storage_key       text        NOT NULL,
    thumbnail_key     text,
    md5               text,
    width             integer,
    height            integer,
    taken_time        text,
    camera_make       text,
    camera_model      text,
    folder_path       text        NOT NULL DEFAULT '',
    drive_created_at  timestamptz,
    drive_modified_at timestamptz,
    import_id         bigint      REFERENCES imports (id) ON DELETE SET NULL,
    imported_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, google_drive_id)
);
-- Keyset pagination is newest first by id; each filter has an index ending in id.
CREATE INDEX images_import_idx ON images (import_id, id);
CREATE INDEX images_folder_idx ON images (folder_path, id);
CREATE INDEX images_mime_idx ON images (mime_type, id);
CREATE INDEX images_source_idx ON images (source, id);
