from __future__ import annotations

import pytest

from fotoowl.sources.google_drive.links import FolderRef, InvalidFolderLink, parse_folder_link

FOLDER_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
PARENT_ID = "1ParentFolderIdParentFolderId0000"
SHARED_DRIVE_ROOT = "0AbCdEfGhIjKlMnOpQ9"
KEY = "0-AbCdEfGhIjKlMnOpQrStUv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=drive_link", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}/", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?hl=fr&fbclid=xyz", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/u/0/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/u/3/folders/{FOLDER_ID}?usp=sharing", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/mobile/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/u/0/mobile/folders/{PARENT_ID}/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/open?id={FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/folderview?id={FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/embeddedfolderview?id={FOLDER_ID}#grid", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?resourcekey={KEY}", FolderRef(FOLDER_ID, KEY)),
        (
            f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing&resourcekey={KEY}",
            FolderRef(FOLDER_ID, KEY),
        ),
        (f"https://drive.google.com/open?id={FOLDER_ID}&resourcekey={KEY}", FolderRef(FOLDER_ID, KEY)),
        (f"https://drive.google.com/drive/folders/{SHARED_DRIVE_ROOT}", FolderRef(SHARED_DRIVE_ROOT)),
        (FOLDER_ID, FolderRef(FOLDER_ID)),
        (f"  \t{FOLDER_ID}\n", FolderRef(FOLDER_ID)),
        (f"  https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing \n", FolderRef(FOLDER_ID)),
        (f"http://drive.google.com/drive/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"drive.google.com/drive/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"HTTPS://DRIVE.GOOGLE.COM/drive/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
        (f"https://drive.google.com:443/drive/folders/{FOLDER_ID}", FolderRef(FOLDER_ID)),
    ],
)
def test_accepted_links(text: str, expected: FolderRef) -> None:
    assert parse_folder_link(text) == expected


@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        ("", "Paste the link"),
        ("   \n", "Paste the link"),
        ("x" * 2001, "too long"),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=" + "a" * 2000, "too long"),
        (f"https://evil.com/drive/folders/{FOLDER_ID}", "Only drive.google.com"),
        (f"https://drive.google.com.evil.com/drive/folders/{FOLDER_ID}", "Only drive.google.com"),
        (f"https://evil-drive.google.com/drive/folders/{FOLDER_ID}", "Only drive.google.com"),
        (f"https://google.com/drive/folders/{FOLDER_ID}", "Only drive.google.com"),
        (f"https://drive.google.com@evil.com/drive/folders/{FOLDER_ID}", "'@'"),
        (f"https://user:pass@drive.google.com/drive/folders/{FOLDER_ID}", "'@'"),
        (f"https://drive.google.com:8080/drive/folders/{FOLDER_ID}", "Only drive.google.com"),
        (f"ftp://drive.google.com/drive/folders/{FOLDER_ID}", "http"),
        (f"javascript:alert('{FOLDER_ID}')", "not a valid web link"),
        (f"https://drive.google.com/file/d/{FOLDER_ID}/view?usp=sharing", "single file"),
        (f"https://drive.google.com/uc?id={FOLDER_ID}&export=download", "single file"),
        (f"https://docs.google.com/document/d/{FOLDER_ID}/edit", "Google Docs"),
        (f"https://docs.google.com/spreadsheets/d/{FOLDER_ID}/edit#gid=0", "Google Docs"),
        ("https://drive.google.com/drive/my-drive", "does not point to a folder"),
        ("https://drive.google.com/drive/u/0/shared-with-me", "does not point to a folder"),
        ("https://drive.google.com/drive/folders/", "does not point to a folder"),
        ("https://drive.google.com/open", "no folder id"),
        ("https://drive.google.com/drive/folders/short", "malformed"),
        ("https://drive.google.com/drive/folders/abc%27def0123456789", "malformed"),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}<script>", "malformed"),
        (f"https://drive.google.com/drive/folders/{'a' * 101}", "malformed"),
        (f"https://drive.google.com/drive/folders/{FOLDER_ID}?resourcekey=bad/key", "resourcekey"),
        ("not a link at all", "spaces"),
        ("short", "Only drive.google.com"),
        ("https://[::1", "not a valid web link"),
    ],
)
def test_rejected_links_explain_why(text: str, message_part: str) -> None:
    with pytest.raises(InvalidFolderLink) as caught:
        parse_folder_link(text)
    assert message_part in str(caught.value)


def test_invalid_link_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="single file"):
        parse_folder_link(f"https://drive.google.com/file/d/{FOLDER_ID}/view")
