"""fotoowl: copy the images of a public Google Drive folder into S3-compatible storage."""

__version__ = "0.1.0"
