"""The requests the scale benchmark times: every /images filter alone and in combinations, common and
rare values, values that match nothing, deep pages, and the pages that list imports and images."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.scale_seed import SeedFacts
from fotoowl.web.params import encode_cursor


@dataclass(frozen=True)
class Case:
    label: str
    path: str  # "/images", "/imports", "/ui/gallery", ...
    params: dict[str, str] = field(default_factory=dict)
    group: str = "images"  # "images": judged against the /images target; "pages": the rest

    @property
    def filters(self) -> str:
        return "+".join(k for k in self.params if k not in ("limit", "cursor")) or "-"


def image_cases(facts: SeedFacts) -> list[Case]:
    big, small, old_small = str(facts.biggest_import), str(facts.newest_import), str(facts.old_small_import)
    middle = encode_cursor((facts.first_id + facts.last_id) // 2)
    rare = facts.rare_folder

    def c(label: str, **params: str) -> Case:
        return Case(label, "/images", {**params, "limit": "100"})

    return [
        c("no filter (newest page)"),
        c("no filter, page at the middle of the table", cursor=middle),
        c("import_id: the biggest import", import_id=big),
        c("import_id: an old import of a few hundred", import_id=old_small),
        c("import_id: no such import", import_id="999999"),
        c("source: google_drive (76 %)", source="google_drive"),
        c("source: dropbox (24 %)", source="dropbox"),
        c("mime_type: image/jpeg (79 %)", mime_type="image/jpeg"),
        c("mime_type: image/heic (9 %)", mime_type="image/heic"),
        c("mime_type: image/tiff (3 %, oldest imports only)", mime_type="image/tiff"),
        c("mime_type: image/gif (3 rows)", mime_type="image/gif"),
        c("mime_type: image/bmp (none)", mime_type="image/bmp"),
        c("folder: Ceremony and below (in 80 imports)", folder="Ceremony"),
        c("folder: Day 2/Sessions (a leaf)", folder="Day 2/Sessions"),
        c("folder: one import's own folder and below", folder=rare),
        c("folder: one subfolder of it", folder=f"{rare}/Reception"),
        c("folder: Film Scans (oldest imports only)", folder="Film Scans"),
        c("folder: no match", folder="No Such Folder"),
        c("folder: Ceremony, page at the middle of the table", folder="Ceremony", cursor=middle),
        c("q: img (43 %)", q="img"),
        c("q: final (2 %)", q="final"),
        c("q: IMG_0123 (41 rows)", q="IMG_0123"),
        c("q: IMG_012345 (none)", q="IMG_012345"),
        c("q: sunset_panorama (1 row)", q="sunset_panorama"),
        c("q: img jpg (none; every word common)", q="img jpg"),
        c("q: scan (3 %, oldest imports only)", q="scan"),
        c("q: mg (2 characters, many)", q="mg"),
        c("q: img, page at the middle of the table", q="img", cursor=middle),
        c("import_id + source (match)", import_id=big, source="google_drive"),
        c("import_id + source (none)", import_id=big, source="dropbox"),
        c("import_id + mime_type (common)", import_id=big, mime_type="image/jpeg"),
        c("import_id + mime_type (none)", import_id=big, mime_type="image/gif"),
        c("import_id + folder", import_id=big, folder="Reception"),
        c("import_id + q", import_id=big, q="img_1"),
        c("import_id + q (none)", import_id=big, q="zebra"),
        c("source + mime_type", source="dropbox", mime_type="image/heic"),
        c("source + mime_type (old only)", source="dropbox", mime_type="image/tiff"),
        c("source + folder", source="dropbox", folder="Ceremony"),
        c("source + q", source="dropbox", q="dsc"),
        c("mime_type + folder", mime_type="image/jpeg", folder="Ceremony"),
        c("mime_type + folder (old only)", mime_type="image/tiff", folder="Film Scans"),
        c("mime_type + folder (none)", mime_type="image/gif", folder="Ceremony"),
        c("mime_type + q", mime_type="image/heic", q="img_01"),
        c("mime_type + q (none)", mime_type="image/png", q="dsc"),
        c("folder + q", folder="Ceremony", q="IMG_0123"),
        c("folder + q (old only)", folder="Film Scans", q="scan_0001"),
        c("import_id + mime_type + folder", import_id=big, mime_type="image/jpeg", folder="Reception"),
        c("source + mime_type + q", source="google_drive", mime_type="image/jpeg", q="dsc_01"),
        c(
            "import_id + source + mime_type + folder",
            import_id=big,
            source="google_drive",
            mime_type="image/jpeg",
            folder="Ceremony",
        ),
        c(
            "all five filters",
            import_id=big,
            source="google_drive",
            mime_type="image/jpeg",
            folder="Reception",
            q="img",
        ),
        c("import_id: the newest import", import_id=small),
    ]


def page_cases(facts: SeedFacts) -> list[Case]:
    return [
        Case("GET /imports", "/imports", group="pages"),
        Case("import page /ui/imports/{biggest}", f"/ui/imports/{facts.biggest_import}", group="pages"),
        Case("import page /ui/imports/{newest}", f"/ui/imports/{facts.newest_import}", group="pages"),
        Case("gallery /ui/gallery", "/ui/gallery", group="gallery"),
        Case("gallery, q=img_0123", "/ui/gallery", {"q": "img_0123"}, group="gallery"),
        Case("gallery, one import", "/ui/gallery", {"import_id": str(facts.biggest_import)}, group="gallery"),
    ]
