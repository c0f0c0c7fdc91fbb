"""Run inside a fotoowl container by deploy/compose_test.py (`python - IMAGES SEED < this file`).

Prints one JSON object: the demo folder's manifest (what the emulator container serves: the same
tree is rebuilt here from the same image, count and seed) and what the bucket holds, read back byte
for byte (every object's size and MD5), plus the multipart uploads left open. The comparison itself
is done by compose_test.py, next to what the API says.

Only the image's own packages are used: fotoowl's emulator for the manifest, aiobotocore (a fotoowl
dependency) and the container's environment (FOTOOWL_S3_*, AWS_*) for the bucket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any


def manifest(n_images: int, seed: int) -> dict[str, Any]:
    from fotoowl.testing.drive_emulator import DriveEmulator, build_demo_tree

    emu = DriveEmulator(seed=seed)
    tree = build_demo_tree(emu, n_images, seed=seed)
    files = {}
    for item_id in sorted(tree.expected_image_ids):
        item = emu.items[item_id]
        assert item.content is not None, item_id
        size = item.content.size_bytes
        digest = hashlib.md5()
        for chunk in item.content.iter_bytes(0, size):
            digest.update(chunk)
        files[item_id] = {"name": item.name, "size": size, "md5": digest.hexdigest()}
    return {"root_id": tree.root_id, "link": tree.link, "files": files, "skipped": dict(tree.expected_skipped)}


async def bucket() -> dict[str, Any]:
    from aiobotocore.session import get_session

    name = os.environ.get("FOTOOWL_S3_BUCKET", "fotoowl")
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=os.environ["FOTOOWL_S3_ENDPOINT_URL"],
        region_name=os.environ.get("FOTOOWL_S3_REGION", "us-east-1"),
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    ) as s3:
        keys: list[str] = []
        async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys += [entry["Key"] for entry in page.get("Contents", [])]
        uploads: list[str] = []
        async for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            uploads += [entry["Key"] for entry in page.get("Uploads", [])]
        semaphore = asyncio.Semaphore(16)

        async def read(key: str) -> tuple[str, dict[str, Any]]:
            async with semaphore:
                answer = await s3.get_object(Bucket=name, Key=key)
                digest, size = hashlib.md5(), 0
                async with answer["Body"] as body:
                    while chunk := await body.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                return key, {"size": size, "md5": digest.hexdigest()}

        objects = dict(await asyncio.gather(*(read(key) for key in keys)))
    return {"bucket": name, "objects": objects, "open_uploads": uploads}


def main() -> None:
    n_images, seed = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps({"manifest": manifest(n_images, seed), "storage": asyncio.run(bucket())}))


if __name__ == "__main__":
    main()
