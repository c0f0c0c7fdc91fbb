"""Fields masks: parsing a `fields` parameter, validating it against the files schema, applying it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Mask = dict[str, "Mask | None"]
# Schema: None = a leaf, "any" = an object we do not model (any sub-selection accepted).
Schema = Mapping[str, "Schema | str | None"]


class FieldsError(ValueError):
    pass


def _leaves(names: str) -> dict[str, None]:
    """Schema leaves from whitespace-separated field names."""
    return dict.fromkeys(names.split())


_IMAGE_SCHEMA: Schema = {
    **_leaves(
        """width height rotation time cameraMake cameraModel exposureTime aperture flashUsed focalLength
        isoSpeed meteringMode sensor exposureMode colorSpace whiteBalance exposureBias maxApertureValue
        subjectDistance lens"""
    ),
    "location": "any",
}
_FILE_SCHEMA: Schema = {
    **_leaves(
        """kind id name mimeType description starred trashed explicitlyTrashed parents spaces version
        webContentLink webViewLink iconLink hasThumbnail thumbnailLink thumbnailVersion viewedByMe
        viewedByMeTime createdTime modifiedTime modifiedByMeTime modifiedByMe sharedWithMeTime driveId
        shared ownedByMe viewersCanCopyContent copyRequiresWriterPermission writersCanShare permissionIds
        hasAugmentedPermissions folderColorRgb originalFilename fullFileExtension fileExtension md5Checksum
        sha1Checksum sha256Checksum size quotaBytesUsed headRevisionId isAppAuthorized resourceKey
        teamDriveId inheritedPermissionsDisabled"""
    ),
    **{
        name: "any"
        for name in _leaves(
            """properties appProperties sharingUser owners lastModifyingUser capabilities permissions
            contentHints videoMediaMetadata exportLinks contentRestrictions linkShareMetadata labelInfo
            downloadRestrictions trashingUser"""
        )
    },
    "imageMediaMetadata": _IMAGE_SCHEMA,
    "shortcutDetails": _leaves("targetId targetMimeType targetResourceKey"),
}
_FILE_LIST_SCHEMA: Schema = {**_leaves("kind nextPageToken incompleteSearch"), "files": _FILE_SCHEMA}

_DEFAULT_FILE_MASK: Mask = {"kind": None, "id": None, "name": None, "mimeType": None}
_DEFAULT_LIST_MASK: Mask = {"kind": None, "nextPageToken": None, "incompleteSearch": None, "files": _DEFAULT_FILE_MASK}
_NAME_RE = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*")


def _merge_mask(mask: Mask, path: list[str], sub: Mask | None) -> None:
    node = mask
    for part in path[:-1]:
        if part in node and node[part] is None:
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        node = child
    leaf = path[-1]
    if leaf in node and node[leaf] is None:
        return
    if sub is None or leaf not in node:
        node[leaf] = sub
        return
    existing = node[leaf]
    assert existing is not None
    for key, value in sub.items():
        _merge_mask(existing, [key], value)


def parse_fields(text: str) -> Mask:
    """Parse a `fields` parameter: `a,b/c,d(e,f(g))` into a nested mask."""

    def parse_list(position: int) -> tuple[Mask, int]:
        mask: Mask = {}
        while True:
            match = _NAME_RE.match(text, position)
            if match is None:
                raise FieldsError(f"Invalid field selection {text[position:]!r}")
            position = match.end()
            sub: Mask | None = None
            if position < len(text) and text[position] == "(":
                sub, position = parse_list(position + 1)
                if position >= len(text) or text[position] != ")":
                    raise FieldsError("Invalid field selection: unbalanced parentheses")
                position += 1
                while position < len(text) and text[position] == " ":
                    position += 1
            _merge_mask(mask, match.group(1).split("/"), sub)
            if position < len(text) and text[position] == ",":
                position += 1
                continue
            return mask, position

    mask, position = parse_list(0)
    if position != len(text):
        raise FieldsError(f"Invalid field selection {text[position:]!r}")
    return mask


def validate_mask(mask: Mask, schema: Schema) -> None:
    for name, sub in mask.items():
        if name == "*":
            continue
        if name not in schema:
            raise FieldsError(f"Invalid field selection {name}")
        node = schema[name]
        if sub is None or node == "any":
            continue
        if node is None or isinstance(node, str):
            raise FieldsError(f"Invalid field selection {name}")
        validate_mask(sub, node)


def apply_mask(mask: Mask, value: Mapping[str, Any]) -> dict[str, Any]:
    if "*" in mask:
        return dict(value)
    out: dict[str, Any] = {}
    for name, sub in mask.items():
        if name not in value:
            continue
        item = value[name]
        if sub is None:
            out[name] = item
        elif isinstance(item, list):
            out[name] = [apply_mask(sub, element) if isinstance(element, dict) else element for element in item]
        elif isinstance(item, dict):
            out[name] = apply_mask(sub, item)
        else:
            out[name] = item
    return out
