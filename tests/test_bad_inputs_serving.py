"""`finance serve` under hostile requests and restarts (issue 18 Transactions/serving, issue 19 item 3),
and formula injection in the CSVs fedsite writes. Real uvicorn servers on 127.0.0.1, stopped after."""

from __future__ import annotations

import contextlib
import csv
import time

import httpx
import pytest

from common.atomic import write_csv
from common.cli import main
from common.csv_cells import plain, spreadsheet_cell
from verticals.finance.serve_process import serving


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_finance):
    root = tmp_path_factory.mktemp("serve")
    full, model = tiny_finance
    lines = full.read_text().splitlines(keepends=True)[:241]  # the synthetic file is in time order
    data = root / "stream.csv"
    data.write_text("".join(lines))
    batch = root / "batch" / "scores.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(model), "--out", str(batch)]) == 0
    expected = {r["txn_id"]: float(r["fraud_probability"]) for r in csv.DictReader(batch.open())}
    return root, data, model, expected


@contextlib.contextmanager
def _server(model, *args: str):
    # a generous bound: the first request pays for lazy loading, seconds on a loaded 2-core machine
    with serving(model, *args) as served, httpx.Client(base_url=served.url, timeout=120) as client:
        yield client, served.process


def _rows(data):
    return list(csv.DictReader(data.open()))


def _post_all(client, rows, headers=None) -> dict[str, float]:
    got = {}
    for i in range(0, len(rows), 7):  # small lists: the service orders each list by time
        reply = client.post("/score", json=rows[i : i + 7], headers=headers)
        assert reply.status_code == 200, reply.text
        got.update({b["txn_id"]: b["fraud_probability"] for b in reply.json()})
    return got


def _assert_batch(got, expected):
    assert got and all(abs(p - expected[t]) < 1e-6 for t, p in got.items()), max(
        abs(p - expected[t]) for t, p in got.items()
    )


def test_a_restart_halfway_keeps_the_account_state(trained, tmp_path):
    _, data, model, expected = trained
    rows, state = _rows(data), tmp_path / "state.npz"
    with _server(model, "--state", str(state)) as (client, proc):
        got = _post_all(client, rows[:120])
    assert proc.returncode == 0 and state.is_file()
    with _server(model, "--state", str(state)) as (client, _):
        assert client.get("/health").json()["transactions_scored"] == 120
        assert client.post("/score", json=rows[5]).status_code == 422  # ids seen before the restart
        got.update(_post_all(client, rows[120:]))
    assert len(got) == len(rows)
    _assert_batch(got, expected)
    # the check can fail: a service that forgets (no --state) scores the second half differently
    with _server(model) as (client, _):
        fresh = _post_all(client, rows[120:])
    assert max(abs(p - expected[t]) for t, p in fresh.items()) > 1e-4


def test_warm_start_replays_history_before_serving(trained, tmp_path):
    _, data, model, expected = trained
    rows = _rows(data)
    history = tmp_path / "history.csv"
    history.write_text("".join(data.read_text().splitlines(keepends=True)[:121]))
    with _server(model, "--warm-start", str(history), "--token-file", str(_token(tmp_path))) as (client, _):
        assert client.post("/score", json=rows[150]).status_code == 401
        assert client.post("/score", json=rows[150], headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
        got = _post_all(client, rows[120:], headers={"Authorization": f"Bearer {TOKEN}"})
    _assert_batch(got, expected)


TOKEN = "s3cret-token-0123456789"


def _token(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def test_hostile_requests_get_4xx_and_memory_stays_bounded(trained):
    _, data, model, _ = trained
    row = _rows(data)[0]
    with _server(model, "--remember-ids", "3") as (client, proc):
        huge = client.post("/score", json={**row, "txn_id": "x" * 10_000_000})
        assert huge.status_code == 413 and "x" * 100 not in huge.text
        long_id = client.post("/score", json={**row, "txn_id": "y" * 300})
        assert long_id.status_code == 422 and "longer than 256" in long_id.text and "y" * 257 not in long_id.text

        def chunked():
            yield b"["
            for _ in range(9000):
                yield b'{"txn_id": "' + b"z" * 1000 + b'"},'
            yield b"{}]"

        assert client.post("/score", content=chunked()).status_code == 413
        deep = client.post("/score", content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and "nested too deeply" in deep.text
        nested = client.post("/score", json={**row, "amount": {"a": [1, {"b": 2}]}})
        assert nested.status_code == 422 and "must be a string" in nested.text
        for i in range(5):  # only the last 3 ids are remembered: the oldest can come back
            assert client.post("/score", json={**row, "txn_id": f"id{i}"}).status_code == 200
        assert client.post("/score", json={**row, "txn_id": "id4"}).status_code == 422
        assert client.post("/score", json={**row, "txn_id": "id0"}).status_code == 200
        assert client.get("/health").status_code == 200  # still serving
    assert proc.returncode == 0


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_formula_cells_are_neutralised_and_read_back(tmp_path, text):
    path = write_csv(tmp_path / "t.csv", ["a", "b"], [[text, -3.5], ["-3.5", "+1e-3"]])
    rows = list(csv.reader(path.open(newline="")))
    assert rows[1][0] == "'" + text and rows[1][1] == "-3.5"  # numbers stay numbers
    assert rows[2] == ["-3.5", "+1e-3"]
    assert plain(rows[1][0]) == text and spreadsheet_cell("plain") == "plain"


def test_scores_and_rejected_csv_escape_formula_ids(trained, tmp_path):
    _, data, model, _ = trained
    lines = data.read_text().splitlines(keepends=True)[:40]
    fields = lines[5].split(",")
    fields[0] = '=HYPERLINK("http://evil","click")'
    bad = lines[6].split(",")
    bad[0], bad[4] = "@bad", "-1"
    src = tmp_path / "t.csv"
    with src.open("w", newline="") as fh:
        fh.write("".join(lines[:5]))
        csv.writer(fh).writerow([f.strip() for f in fields])
        csv.writer(fh).writerow([f.strip() for f in bad])
        fh.write("".join(lines[7:]))
    out = tmp_path / "o" / "scores.csv"
    assert main(["finance", "score", "--data", str(src), "--model", str(model), "--out", str(out)]) == 3
    text = out.read_text()
    assert "'=HYPERLINK" in text and "\n=HYPERLINK" not in text
    assert "\n'@bad," in (out.parent / "rejected.csv").read_text()
    assert main(["finance", "evaluate", "--data", str(src), "--scores", str(out)]) in (0, 3)


def test_state_is_saved_on_a_schedule_and_survives_a_kill(trained, tmp_path):
    """SIGKILL leaves no chance to save on shutdown: the scheduled snapshot is what restores."""
    _, data, model, expected = trained
    rows, state = _rows(data), tmp_path / "state.npz"
    with _server(model, "--state", str(state), "--snapshot-every", "1") as (client, proc):
        got = _post_all(client, rows[:60])
        for _ in range(100):
            if state.is_file():
                break
            time.sleep(0.1)
        time.sleep(1.5)  # one more period: the snapshot holds all 60
        proc.kill()
        proc.wait()
    with _server(model, "--state", str(state)) as (client, _):
        assert client.get("/health").json()["transactions_scored"] == 60
        got.update(_post_all(client, rows[60:]))
    _assert_batch(got, expected)


def test_a_state_file_of_another_model_or_garbage_is_refused(tmp_path):
    from common.errors import UserError
    from verticals.finance import serve_state
    from verticals.finance.features import AccountState

    path = tmp_path / "s.npz"
    serve_state.save(path, AccountState(8), serve_state.RecentIds(5), "key-a", 0)
    with pytest.raises(UserError, match="another model"):
        serve_state.load(path, 8, "key-b", serve_state.RecentIds(5))
    state, scored = serve_state.load(path, 8, "key-a", serve_state.RecentIds(5))
    assert scored == 0 and len(state.accounts) == 0
    path.write_bytes(b"PK\x03\x04 not a state")
    with pytest.raises(UserError, match="unreadable service state"):
        serve_state.load(path, 8, "key-a", serve_state.RecentIds(5))


def test_explain_returns_the_batch_reasons_with_the_same_scores(trained, tmp_path):
    """`/score?explain=1` carries each transaction's top 3 reasons: those of `score --explain`."""
    _, data, model, expected = trained
    batch = tmp_path / "explained.csv"
    cmd = ["finance", "score", "--data", str(data), "--model", str(model), "--out", str(batch), "--explain"]
    assert main(cmd) == 0
    reasons = {r["txn_id"]: [r[f"reason_{i}"] for i in (1, 2, 3)] for r in csv.DictReader(batch.open())}
    rows = _rows(data)
    with _server(model) as (client, _):
        got = {}
        for i in range(0, len(rows), 7):
            explain = i % 2 == 0  # alternate: explaining must not change the state the next request sees
            reply = client.post("/score", params={"explain": "1"} if explain else None, json=rows[i : i + 7])
            assert reply.status_code == 200, reply.text
            for item in reply.json():
                got[item["txn_id"]] = item["fraud_probability"]
                if explain:
                    assert item["reasons"] == reasons[item["txn_id"]], item
                else:
                    assert "reasons" not in item
        single = client.post("/score?explain=1", json={**rows[0], "txn_id": "fresh"}).json()
    _assert_batch(got, expected)
    assert len(single["reasons"]) == 3 and all(r.rsplit(" ", 1)[1][0] in "+-" for r in single["reasons"])
