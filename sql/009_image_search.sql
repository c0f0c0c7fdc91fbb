-- Searching a million images by name (bench/scale.py): a name matching tens of thousands of old
-- images has its trigram candidates read, rechecked and sorted by id, and on the images table each
-- recheck visits a wide row and computes the name key again (~0.6 us; 36 ms for 23,000 candidates).
-- This narrow copy of what a search filters on (about a tenth of the table) keeps the key computed
-- and the candidates a few hundred pages apart, not thousands: the same search reads ~6 times less.
-- Kept by triggers, so every writer of images (pipeline COPY, sync updates, deletes) keeps it too.
CREATE TABLE image_search (
    id        bigint PRIMARY KEY,
    import_id bigint,
    source    text NOT NULL,
    mime_type text NOT NULL,
    name_key  text NOT NULL
);

INSERT INTO image_search (id, import_id, source, mime_type, name_key)
SELECT id, import_id, source, mime_type, images_name_key(name) FROM images ORDER BY id;

-- Inserts and deletes come in batches (COPY, a pruned folder): once per statement.
CREATE FUNCTION image_search_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO image_search (id, import_id, source, mime_type, name_key)
    SELECT id, import_id, source, mime_type, images_name_key(name) FROM new_rows;
    RETURN NULL;
END
$$;
CREATE TRIGGER image_search_inserted AFTER INSERT ON images REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION image_search_inserted();

CREATE FUNCTION image_search_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM image_search s USING old_rows o WHERE s.id = o.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER image_search_deleted AFTER DELETE ON images REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION image_search_deleted();

-- Updates are frequent (preview states) and almost never touch these columns: per row, only then.
CREATE FUNCTION image_search_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE image_search SET import_id = NEW.import_id, source = NEW.source, mime_type = NEW.mime_type,
                            name_key = images_name_key(NEW.name)
    WHERE id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER image_search_updated AFTER UPDATE OF name, import_id, source, mime_type ON images
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.import_id IS DISTINCT FROM NEW.import_id
                       OR OLD.source IS DISTINCT FROM NEW.source OR OLD.mime_type IS DISTINCT FROM NEW.mime_type)
    EXECUTE FUNCTION image_search_updated();

-- The trigram index moves here (where pg_trgm is available, as in sql/006): the one on images is
-- read by nothing once searches read this table.
DO $$
BEGIN
    IF to_regclass('images_name_trgm_idx') IS NULL THEN
        RETURN;
    END IF;
    DROP INDEX images_name_trgm_idx;
    CREATE INDEX image_search_name_trgm_idx ON image_search USING gin (name_key gin_trgm_ops)
        WITH (fastupdate = off);
END
$$;

-- Statistics now, not when autovacuum comes by: searches choose between the trigram index and a
-- walk from the planner's estimate of how many names match.
ANALYZE image_search;
