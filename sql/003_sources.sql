-- Sources beyond Google Drive: an image is known by its source and the source's own id for it, and
-- carries its checksum with the kind of checksum the source gives (Drive: md5; Dropbox: its
-- content_hash). google_drive_id stays on Drive images and is null on the others.

ALTER TABLE imports DROP CONSTRAINT imports_source_check;
ALTER TABLE imports ADD CONSTRAINT imports_source_check CHECK (source IN ('google_drive', 'dropbox'));
-- A password-protected shared link (Dropbox) is listed and downloaded with its password.
ALTER TABLE imports ADD COLUMN link_password text;

ALTER TABLE import_items ADD COLUMN checksum text;
ALTER TABLE import_items ADD COLUMN checksum_kind text;
UPDATE import_items SET checksum = md5, checksum_kind = 'md5' WHERE md5 IS NOT NULL;

ALTER TABLE images ADD COLUMN source_id text;
ALTER TABLE images ADD COLUMN checksum text;
ALTER TABLE images ADD COLUMN checksum_kind text;
UPDATE images SET source_id = google_drive_id, checksum = md5, checksum_kind = CASE WHEN md5 IS NOT NULL THEN 'md5' END;
ALTER TABLE images ALTER COLUMN source_id SET NOT NULL;
ALTER TABLE images ALTER COLUMN google_drive_id DROP NOT NULL;
ALTER TABLE images ADD CONSTRAINT images_source_id_key UNIQUE (source, source_id);
ALTER TABLE images DROP CONSTRAINT images_source_google_drive_id_key;
ALTER TABLE images ADD CONSTRAINT images_google_drive_id_only_for_drive
    CHECK (google_drive_id IS NULL OR (source = 'google_drive' AND google_drive_id = source_id));
