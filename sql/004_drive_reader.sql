-- How a Drive import reads its folder: through the API with a key ('api'), or, without one, the way
-- a browser does ('public_page': no sizes or checksums listed, so they come from the bytes).
ALTER TABLE imports ADD COLUMN reader text CHECK (reader IN ('api', 'public_page'));
UPDATE imports SET reader = 'api' WHERE source = 'google_drive';
