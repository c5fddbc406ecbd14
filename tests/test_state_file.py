"""The JSON file state store runs the shared StateStore contract, plus its own details."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import StateLocked
from reconciler.state.base import State, StateStore
from reconciler.state.file import FileStateStore
from tests.support.state_contract import StateStoreContract, make_record, with_record


class TestFileStore(StateStoreContract):
    def make_store(self, tmp_path: Path) -> StateStore:
        return FileStateStore(tmp_path / "sub" / "state.json")

    def reopen(self, store: StateStore) -> StateStore:
        assert isinstance(store, FileStateStore)
        return FileStateStore(store.path)

    def plant(self, store: StateStore, text: str) -> None:
        assert isinstance(store, FileStateStore)
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.path.write_text(text)

    def raw(self, store: StateStore) -> str | None:
        assert isinstance(store, FileStateStore)
        return store.path.read_text() if store.path.exists() else None

    def open_code(self, store: StateStore) -> str:
        assert isinstance(store, FileStateStore)
        return f"from reconciler.state.file import FileStateStore\nstore = FileStateStore({str(store.path)!r})"


def test_write_leaves_no_temp_files_and_is_valid_json(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    state = State()
    for i in range(20):
        with_record(state, make_record(f"r{i}"))
        state.serial += 1
        store.write(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["serial"] == 20


def test_lock_held_by_another_process_names_it(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    code = (
        "import sys, time; from pathlib import Path; from reconciler.state.file import FileStateStore\n"
        "s = FileStateStore(Path(sys.argv[1]))\n"
        "with s.lock():\n    print('locked', flush=True); sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateLocked) as info:
            with store.lock(timeout=0.2):
                pass
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.communicate("\n", timeout=10)
    with store.lock():
        pass


def test_state_file_is_private(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    store.write(State())
    assert os.stat(store.path).st_mode & 0o077 == 0
