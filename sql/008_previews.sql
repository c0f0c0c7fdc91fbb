-- Previews are a stage of their own: an image is recorded as soon as its original is stored, with
-- its preview pending, and every worker process's preview lane (pipeline/preview_lane.py) makes
-- pending previews afterwards, reading the original back from storage. An import's status does not
-- wait for them; its preview counts say how far they are.

-- 'pending': not made yet (claimed under a lease while being made); 'done': thumbnail_key is set;
-- 'none': there will be none, preview_reason says why: 'undecodable', 'too_large', 'missing' (the
-- original is gone from storage), 'failed' (its tries were spent), 'disabled' (FOTOOWL_THUMBNAIL_PX=0).
-- Existing rows: those with a thumbnail are done (a constant default: no table rewrite); those
-- without are tried once more, since earlier versions kept no reason (a storage error then looked
-- like an undecodable file).
ALTER TABLE images
    ADD COLUMN preview_status text NOT NULL DEFAULT 'done' CHECK (preview_status IN ('pending', 'done', 'none')),
    ADD COLUMN preview_reason text,
    ADD COLUMN preview_attempts integer NOT NULL DEFAULT 0,
    -- A claim is a lease, as on import items: a lane that dies leaves its previews to be claimed
    -- again once the lease expires. After a failed try, the expiry alone is set: a not-before.
    ADD COLUMN preview_lease_token uuid,
    ADD COLUMN preview_lease_expires_at timestamptz;
UPDATE images SET preview_status = 'pending' WHERE thumbnail_key IS NULL;
ALTER TABLE images ALTER COLUMN preview_status SET DEFAULT 'pending';
-- An image written with its thumbnail already (a copy of stored bytes with their preview, a seeded
-- or restored row) has its preview, whatever the statement says.
CREATE FUNCTION images_preview_from_thumbnail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.preview_status := 'done';
    NEW.preview_reason := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER images_preview_from_thumbnail BEFORE INSERT ON images
    FOR EACH ROW WHEN (NEW.thumbnail_key IS NOT NULL) EXECUTE FUNCTION images_preview_from_thumbnail();
-- Lanes claim the oldest pending previews first, of any import.
CREATE INDEX images_preview_pending_idx ON images (id) WHERE preview_status = 'pending';

-- The previews of each import's images, by state. Images are written by many statements (recording
-- copies, a later import re-copying a changed file and so taking the image over, pruning, deleting an
-- import), so the counts are kept by triggers: they move in the same statement, and transaction, as
-- the rows they count, whichever statement that is, and stay exact with any number of workers.
ALTER TABLE imports
    ADD COLUMN previews_pending_count integer NOT NULL DEFAULT 0,
    ADD COLUMN previews_done_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN previews_none_count    integer NOT NULL DEFAULT 0;
UPDATE imports i SET previews_pending_count = c.pending, previews_done_count = c.done, previews_none_count = c.nothing
FROM (SELECT import_id,
             count(*) FILTER (WHERE preview_status = 'pending') AS pending,
             count(*) FILTER (WHERE preview_status = 'done') AS done,
             count(*) FILTER (WHERE preview_status = 'none') AS nothing
      FROM images WHERE import_id IS NOT NULL GROUP BY import_id) c
WHERE i.id = c.import_id;

-- One statement-level trigger per kind of change, adding its rows' deltas (+1 for a row's new state,
-- -1 for its old one) to their imports in one UPDATE per statement.
CREATE FUNCTION images_previews_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE imports i SET previews_pending_count = i.previews_pending_count + d.pending,
                         previews_done_count = i.previews_done_count + d.done,
                         previews_none_count = i.previews_none_count + d.nothing
    FROM (SELECT import_id, count(*) FILTER (WHERE preview_status = 'pending') AS pending,
                 count(*) FILTER (WHERE preview_status = 'done') AS done,
                 count(*) FILTER (WHERE preview_status = 'none') AS nothing
          FROM new_rows WHERE import_id IS NOT NULL GROUP BY import_id) d
    WHERE i.id = d.import_id;
    RETURN NULL;
END $$;

CREATE FUNCTION images_previews_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE imports i SET previews_pending_count = i.previews_pending_count - d.pending,
                         previews_done_count = i.previews_done_count - d.done,
                         previews_none_count = i.previews_none_count - d.nothing
    FROM (SELECT import_id, count(*) FILTER (WHERE preview_status = 'pending') AS pending,
                 count(*) FILTER (WHERE preview_status = 'done') AS done,
                 count(*) FILTER (WHERE preview_status = 'none') AS nothing
          FROM old_rows WHERE import_id IS NOT NULL GROUP BY import_id) d
    WHERE i.id = d.import_id;
    RETURN NULL;
END $$;

-- Most updates of images change neither (lease renewals, metadata): their rows add nothing.
CREATE FUNCTION images_previews_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE imports i SET previews_pending_count = i.previews_pending_count + d.pending,
                         previews_done_count = i.previews_done_count + d.done,
                         previews_none_count = i.previews_none_count + d.nothing
    FROM (SELECT import_id, sum(pending) AS pending, sum(done) AS done, sum(nothing) AS nothing
          FROM (SELECT unnest(ARRAY[n.import_id, o.import_id]) AS import_id,
                       unnest(ARRAY[(n.preview_status = 'pending')::int, -(o.preview_status = 'pending')::int]) AS pending,
                       unnest(ARRAY[(n.preview_status = 'done')::int, -(o.preview_status = 'done')::int]) AS done,
                       unnest(ARRAY[(n.preview_status = 'none')::int, -(o.preview_status = 'none')::int]) AS nothing
                FROM new_rows n JOIN old_rows o ON o.id = n.id
                WHERE (n.import_id, n.preview_status) IS DISTINCT FROM (o.import_id, o.preview_status)) changed
          WHERE import_id IS NOT NULL GROUP BY import_id) d
    WHERE i.id = d.import_id AND (d.pending, d.done, d.nothing) <> (0, 0, 0);
    RETURN NULL;
END $$;

CREATE TRIGGER images_previews_inserted AFTER INSERT ON images REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION images_previews_inserted();
CREATE TRIGGER images_previews_updated AFTER UPDATE ON images REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION images_previews_updated();
CREATE TRIGGER images_previews_deleted AFTER DELETE ON images REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION images_previews_deleted();
