"""DHT state files: JSON, strictly read, written atomically; never pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sdmesh.dht.state import DhtState, StateError

STATE = DhtState(b"\x07" * 20, (("10.0.0.1", 7947), ("::1", 1)))


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dht.json"
    STATE.save(path)
    assert DhtState.load(path) == STATE
    assert path.read_text().lstrip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["dht.json"]  # no temp file left behind


def test_a_pickle_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "dht.state"
    path.write_bytes(pickle.dumps({"id": b"\x07" * 20, "neighbors": []}))
    with pytest.raises(StateError):
        DhtState.load(path)


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"format": 2, "node_id": "' + "07" * 20 + '", "neighbors": []}',
        '{"format": 1, "node_id": "07", "neighbors": []}',
        '{"format": 1, "node_id": "zz", "neighbors": []}',
        '{"format": 1, "node_id": "' + "07" * 20 + '", "neighbors": [["host", 1]]}',
        '{"format": 1, "node_id": "' + "07" * 20 + '", "neighbors": [["10.0.0.1", 0]]}',
        '{"format": 1, "node_id": "' + "07" * 20 + '", "neighbors": {}}',
        "not json",
    ],
)
def test_bad_state_is_refused(text: str) -> None:
    with pytest.raises(StateError):
        DhtState.from_json(text)


def test_missing_file_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot read"):
        DhtState.load(tmp_path / "missing.json")
