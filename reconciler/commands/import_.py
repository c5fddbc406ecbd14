"""``reconcile import NAME...|--all``: adopt existing registries of the target into management."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from reconciler import render
from reconciler.model import ca_digest, key_str, without_userinfo
from reconciler.runner import (
    EXIT_FAIL,
    EXIT_OK,
    Options,
    _check_state_target,
    _load,
    _print_problems,
    _target,
    build_store,
    one_json_document,
)
from reconciler.state.base import Record
from reconciler.text import escape


def run_import(opts: Options, names: Sequence[str], all_: bool, out: TextIO, err: TextIO) -> int:
    from reconciler.model import fingerprint

    rows: list[dict[str, str | None]] = []

    def why(error: str) -> dict[str, Any]:
        """Why the import stopped, with what it had done by then (each import is recorded as it is made)."""
        return {"imported": sum(1 for r in rows if r["result"] == "imported"), "registries": rows, "error": error}

    with one_json_document(opts.fmt, out, why) as out:
        result = _load(opts, require_definitions=True)
        _print_problems(result, err, opts.quiet)
        if result.errors:
            err.write("fix the definitions first; nothing was imported\n")
            if opts.fmt == "json":
                render.write_json({"imported": 0, "registries": [], "errors": [p.as_dict() for p in result.errors]},
                                  out)
            return EXIT_FAIL
        desired = {r.key: r for r in result.desired.registries}
        store = build_store(opts)
        failed = False
        # the state is read before the target is opened: a corrupt one creates no local database
        with store.lock(opts.lock_timeout):
            state = store.read()
            with _target(opts, result.desired.settings.profile, err) as target:
                _check_state_target(state, target, store)
                if not state.records:  # an emptied state of another target is this one's now (as apply takes it)
                    state.target = target.identity
                observed = [o for o in target.list() if not o.builtin]
                store.verify(state, {o.uid for o in observed})
                wanted = set(names)
                by_uid = {r.uid: r for r in state.records.values()}
                for name in sorted(wanted - {o.name for o in observed}):
                    rows.append({"name": name, "kind": None, "scope": None, "uid": None, "result": "not found",
                                 "message": f"no registry named {name!r} on {target.description}"})
                    failed = True
                for o in (o for o in observed if all_ or o.name in wanted):
                    row: dict[str, str | None] = {"name": o.name, "kind": o.kind, "scope": o.scope, "uid": o.uid}
                    if o.key in state.records:
                        rows.append({**row, "result": "already managed", "message": ""})
                        continue
                    twin = by_uid.get(o.uid)
                    if twin is not None:  # renamed on the target: a second record of one uid corrupts the state
                        rows.append({**row, "result": "skipped" if all_ else "refused",
                                     "message": f"uid {o.uid} is already managed as {key_str(twin.key)} (renamed on "
                                                "the target); apply the rename instead: the record follows the uid"})
                        failed = failed or not all_
                        continue
                    if o.key not in desired:
                        rows.append({**row, "result": "skipped" if all_ else "refused",
                                     "message": "not declared in registries.d/; declare it first (a record without "
                                                "a definition is deleted by the next apply; unmanaged, it is never "
                                                "touched)"})
                        failed = failed or not all_
                        continue
                    spec = without_userinfo(o.spec)  # never a password typed into the endpoint URL
                    state.records[o.key] = Record(uid=o.uid, kind=o.kind, name=o.name, scope=o.scope,
                                                  fingerprint=fingerprint(spec), protect=desired[o.key].protect,
                                                  origin="adopted", spec=spec,
                                                  ca_digest=ca_digest(o.ca_pem) if o.ca_pem else None,
                                                  applied_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                    by_uid[o.uid] = state.records[o.key]
                    state.target = state.target or target.identity
                    state.serial += 1
                    store.write(state, f"import {key_str(o.key)}")
                    rows.append({**row, "result": "imported", "message": ""})
        imported = sum(1 for r in rows if r["result"] == "imported")
        if opts.fmt == "json":
            render.write_json({"imported": imported, "registries": rows}, out)
        else:
            for r in rows:
                title = f"{r['kind']}/{r['name']}" if r["kind"] else str(r["name"])
                line = f"{title}: {r['result']}" + (f" (uid {r['uid']})" if r["result"] == "imported" else "")
                line += f": {r['message']}" if r["message"] else ""
                bad = r["result"] in ("not found", "refused")
                # names come from the target (or the command line): never raw on a terminal or CI log
                (err if bad else out).write(("import: " if bad else "= ") + escape(line) + "\n")
            out.write(f"Import: {imported} registr{'y' if imported == 1 else 'ies'} adopted\n")
        return EXIT_FAIL if failed else EXIT_OK
