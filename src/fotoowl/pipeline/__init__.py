"""The import pipeline, one module per stage, in the order a file meets them.

- `control`: create, queue, cancel and retry imports.
- `listing`: walk the source folder into item rows (the ledger), page by page.
- `claims`: the ledger: every statement on items, leases by token, rows out as dataclasses.
- `transfer`: claim batches and stream each file's bytes into storage.
- `previews`, `preview_lane`: each recorded image's thumbnail, made afterwards by every worker's lane.
- `finalise`: close an import once nothing of it is left to move.
- `sweeper`: periodic repair, so every import reaches an end.
- `limits`, `keys`, `deps`: per-process limits, storage keys, and what a process owns.

Every step is safe to run twice (arq delivers at least once) and safe to die in the middle of:
items are claimed with a lease, object keys derive from source ids, and an item becomes `done` in the
same transaction that writes its image row.
"""
