"""``reconcile status``: the recorded state and the target's registries side by side."""

from __future__ import annotations

from typing import Any, TextIO

from reconciler import render
from reconciler.runner import EXIT_OK, Options, _load, build_store, build_target, one_json_document
from reconciler.targets.base import Target


def run_status(opts: Options, out: TextIO, err: TextIO) -> int:
    def why(error: str) -> dict[str, Any]:
        return {"state": None, "target": None, "serial": None, "lineage": None, "registries": [], "error": error}

    with one_json_document(opts.fmt, out, why) as out:
        result = _load(opts)
        profile = result.desired.settings.profile if not result.errors else (opts.profile or "saas")
        store = build_store(opts)
        state = store.read()
        target = build_target(opts, profile, read_only=True)  # #9.40: status writes nothing
        try:
            observed = target.list()
            by_uid = {o.uid: o for o in observed}
            rows = []
            seen: set[str] = set()
            for _key, rec in sorted(state.records.items()):
                obs = by_uid.get(rec.uid)
                seen.add(rec.uid)
                sync = rec.last_sync or {}
                catalog = _catalog(target, rec.uid)
                rows.append([rec.kind, rec.name, rec.scope, rec.uid, rec.origin if obs else "MISSING on target",
                             "yes" if rec.protect else "", _applied(rec.applied_commit),
                             sync.get("status", ""), sync.get("last_synced", "") or "", catalog])
            for o in observed:
                if o.uid in seen:
                    continue
                rows.append([o.kind, o.name, o.scope, o.uid, "built-in" if o.builtin else "unmanaged", "", "", "", "",
                             _catalog(target, o.uid)])
            headers = ["KIND", "NAME", "SCOPE", "UID", "STATE", "PROTECT", "APPLIED", "SYNC", "LAST SYNCED", "CONTENT"]
            if opts.fmt == "json":
                render.write_json({"state": store.description, "target": target.description, "serial": state.serial,
                                   "lineage": state.lineage,
                                   "registries": [dict(zip([h.lower() for h in headers], r, strict=True)) for r in rows]},
                                  out)
            else:
                out.write(f"state: {store.description} (serial {state.serial}, {len(state.records)} managed)\n")
                out.write(f"target: {target.description} ({len(observed)} registries)\n")
                (render.markdown_table if opts.fmt == "markdown" else render.table)(rows, headers, out)
        finally:
            target.close()
        return EXIT_OK


def _applied(commit: str | None) -> str:
    """The applied commit, short; ``-dirty`` kept (applied from a work tree with changes)."""
    commit = commit or ""
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def _catalog(target: Target, uid: str) -> str:
    try:
        s = target.catalog(uid)
    except Exception:  # noqa: BLE001 - the catalog is informational in status
        return ""
    if not s:
        return ""
    parts = [f"{s[k]} {k}" for k in ("charts", "versions", "repositories", "tags", "packs") if s.get(k)]
    return ", ".join(parts)
