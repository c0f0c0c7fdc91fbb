"""Google Drive v3 client for public ("Anyone with the link") folders, authenticated by an API key only.

Covers what an import needs: parsing the folder links people paste, checking the folder, walking it
page by page (subfolders, shortcuts, resource keys), and streaming file bytes with resume.

Transient failures (429, 403 rate limits, 5xx, dropped connections, timeouts) are retried here, with
truncated exponential backoff and full jitter, honouring Retry-After; everything else is raised at
once as a DriveError. The API key travels as the `key` query parameter and is scrubbed from every
message this package produces: aiohttp exceptions quote request URLs, so they are never chained.

One module per concern, imported directly (this file imports nothing, which keeps import circles out):

- `links`: FolderRef and parse_folder_link, for the links people paste.
- `errors`: DriveError and its kinds, and how Google's error answers are read.
- `models`: DriveFile and SkippedFile, the fields masks, and the parsing of file resources.
- `client`: DriveClient: requests, retries, pacing, get_folder and walk.
- `download`: Download and the media request, with its redirects and resumes.
"""
