"""Dropbox shared folder links, read with app authentication only (an app key and secret, no user token).

Covers what an import needs: parsing the folder links people paste, checking the folder, walking it
folder by folder (a shared link lists one level at a time), and streaming file bytes with resume.

Transient failures (429, 5xx, dropped connections, timeouts) are retried here with truncated
exponential backoff and full jitter, honouring Dropbox's retry_after; everything else is raised at
once as a fotoowl.sources.base error. The app key and secret travel only in the Authorization header
to the configured API hosts and are scrubbed from every message this package produces.

One module per concern, imported directly (this file imports nothing, which keeps import circles out):

- `links`: parse_dropbox_link, for the links people paste.
- `content_hash`: DropboxContentHasher, Dropbox's block-wise SHA-256 of a file's bytes.
- `errors`: how Dropbox's error answers are read and classified into SourceError kinds.
- `models`: listing entries into Entry and Skipped (types from extensions, paths in the link).
- `client`: DropboxClient: authenticated requests, pacing, retries, the three routes used.
- `download`: DropboxDownload, one file's bytes streamed with Range resume and size checks.
- `source`: DropboxSource, the fotoowl.sources.base.Source for Dropbox.
"""
