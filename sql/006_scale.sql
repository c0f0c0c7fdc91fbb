-- A gallery of a million images that still answers in milliseconds (bench/scale.py measures it):
-- an index for every filter of GET /images and every mix of them, each ending in id because pages
-- are newest first. src/fotoowl/web/image_query.py says which statement reads which index.

-- The folder filter is a path and everything below it (folder_path LIKE 'X/%'). A plain text index
-- serves a LIKE prefix only under the C collation, so under docker-compose's postgres:16 (en_US.utf8)
-- that filter read the whole table; text_pattern_ops compares bytes under any collation. The index
-- carries import, source and type, so a folder with any of them is answered from the index alone.
DROP INDEX images_folder_idx;
CREATE INDEX images_folder_tree_idx ON images (folder_path text_pattern_ops, id)
    INCLUDE (import_id, source, mime_type);

-- Two equality filters at once, in id order. Import + source needs none: an image has its import's
-- source, so the import is walked once its source is checked.
CREATE INDEX images_import_mime_idx ON images (import_id, mime_type, id);
CREATE INDEX images_source_mime_idx ON images (source, mime_type, id);

-- q, a substring of the name: a trigram index (pg_trgm). pg_trgm cuts a name into words at every
-- character that is not a letter or digit, so on the bare name "img jpg" would find every
-- IMG_1234.JPG as a candidate; on this key (lowercased, the usual separators turned into a letter)
-- a name is one word and its trigrams keep where the separators were. Immutable, as an index needs.
CREATE FUNCTION images_name_key(name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT replace(replace(replace(replace(lower(name), '_', 'q'), '.', 'q'), '-', 'q'), ' ', 'q') $$;

-- pg_trgm ships with PostgreSQL's contrib, which not every server has (the embedded one of
-- `make run` and `make test` does not): without it the same query works, by walking the table.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        RAISE NOTICE 'pg_trgm is not available: searching images by name will scan';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'this role may not create pg_trgm: searching images by name will scan';
        RETURN;
    END;
    -- fastupdate off: with it, rows written since the last vacuum wait in a pending list that every
    -- search reads through, so searches slow down while an import runs.
    CREATE INDEX images_name_trgm_idx ON images USING gin (images_name_key(name) gin_trgm_ops)
        WITH (fastupdate = off);
END
$$;

-- Lease renewal (pipeline/transfer.py) and release find a batch's items by its lease token; the
-- claim index held every pending item of the import, so each renewal read them all.
CREATE INDEX import_items_lease_idx ON import_items (lease_token) WHERE status = 'in_progress';
