"""Google Drive public folders read without an API key, through the pages a browser sees.

Covers what an import needs: the folder's name and entries from the embedded folder view (one page per
folder, subfolders walked breadth first) and each file's bytes from the download host, past the
virus-scan form, resumed with Range. Google rate-limits these pages per client address: every request is
paced (shared through Redis), and errors, captchas or unexpected pages slow the pace and back off.
Entries have no size and no checksum: the page shows neither.

One module per concern, imported directly (this file imports nothing, which keeps import circles out):

- `pages`: reading the HTML (folder pages, the virus-scan form, quota, sign-in and captcha pages).
- `errors`: reason codes, which failures slow the pace, the messages people read.
- `transport`: PublicFetcher: paced, retried requests; redirects followed to Google's hosts only.
- `listing`: folder pages read into Entry and Skipped, and the walk.
- `download`: PublicDownload, the resumable byte stream.
- `source`: DrivePublicSource, the Source, and public_pacer.
"""
