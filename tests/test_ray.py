"""``audiodecode.ray`` on real Ray clusters: a local one (``ray.init(num_cpus=2)``) and, in the
last test, a head and a worker node started as separate processes. Speech is made by
espeak-ng here and labelled with the offline ``tiny.en`` model; the reference output is
the ``audiodecode label`` binary's on the same files."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install 'ray[data]'); audiodecode.ray is untested"
)

import audiodecode
import audiodecode.ray as adray
from conftest import REPO, SENTENCES, built_binary, speak, tone, write_wav


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ray-speech")
    return [speak(root / f"s{i}.wav", text) for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def inputs(speech: list[Path]) -> list[str]:
    """The speech plus a file that is not audio and one that does not exist."""
    broken = speech[0].parent / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    return [*map(str, speech), str(broken), str(speech[0].parent / "missing.wav")]


def client_env(binary: Path) -> dict[str, str]:
    """What Ray's workers need to import this checkout's client and find its binary."""
    path = os.environ.get("PYTHONPATH")
    client = str(REPO / "client-py")
    return {
        "PYTHONPATH": client if not path else f"{client}{os.pathsep}{path}",
        "AUDIODECODE_BIN": str(binary),
    }


@pytest.fixture(scope="module")
def cluster(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local two-CPU cluster (workers inherit this environment); yields its address. Its
    per-user daemon (used by decode) gets a socket of its own, stopped at the end."""
    saved = dict(os.environ)
    os.environ.update(client_env(binary))
    os.environ["AUDIODECODE_SOCKET"] = str(tmp_path_factory.mktemp("ray-node") / "d.sock")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        stop_daemon(Path(os.environ["AUDIODECODE_SOCKET"]))
        os.environ.clear()
        os.environ.update(saved)


def stop_daemon(sock: Path) -> None:
    if not sock.exists():
        return
    from audiodecode._client import Connection
    from audiodecode._protocol import Request, Response

    try:
        with Connection.open(sock) as conn:
            conn.request(Request.Shutdown(), Response.Ok, timeout=10)
    except (OSError, audiodecode.DaemonError):
        pass


@pytest.fixture(scope="module")
def cli_labels(
    binary: Path, inputs: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """``audiodecode label`` on the inputs with ``--block N --threads T``: the reference for
    Ray batches of N files on actors of T CPUs (the same files are packed into the same
    windows, and int8 results depend slightly on the thread count)."""
    made: dict[tuple[int, int], Path] = {}

    def manifest(block: int, threads: int = 2) -> Path:
        if (block, threads) not in made:
            out = tmp_path_factory.mktemp("ray-cli") / f"block{block}-{threads}.jsonl"
            subprocess.run(
                [str(binary), "label", *inputs, "--out", str(out), "--model", "tiny.en"]
                + ["--block", str(block), "--threads", str(threads), "--quiet"],
                check=True,
                capture_output=True,
            )
            made[block, threads] = out
        return made[block, threads]

    return manifest


def records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def by_path(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        assert r["audio_filepath"] not in out, f"{r['audio_filepath']} came out twice"
        out[r["audio_filepath"]] = r
    return out


def test_importing_audiodecode_does_not_import_ray() -> None:
    code = "import sys, audiodecode; sys.exit('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "client-py")}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


def test_label_matches_the_cli_and_errors_are_rows(
    cluster: str, inputs: list[str], cli_labels: Callable[..., Path], tmp_path: Path
) -> None:
    # Batches of 4 files on two CPUs against the CLI's blocks of 4 on two threads: the same
    # windows go through the same model, so the manifest must be the same, byte for byte.
    ds = adray.label(inputs, "tiny.en", num_cpus=2, batch_size=4)
    out = tmp_path / "ray.jsonl"
    assert adray.write_manifest(ds, out) == len(inputs)
    assert out.read_text() == cli_labels(4).read_text()
    ours = records(out)
    assert [r["audio_filepath"] for r in ours] == inputs  # input order, each once
    assert all(heard(s, r["text"]) for s, r in zip(SENTENCES, ours, strict=False)), ours
    assert "broken.wav" in ours[-2]["error"] and "not found" in ours[-1]["error"]

    rows = sorted(ds.take_all(), key=lambda r: r["index"])
    assert set(adray.LABEL_FIELDS) <= rows[0].keys()
    assert rows[-1]["text"] is None and rows[-1]["error"]
    assert json.loads(rows[0]["segments"]) == ours[0]["segments"]


def test_a_model_that_cannot_load_fails_the_job(cluster: str, inputs: list[str]) -> None:
    # Not a row error per file: nothing could be labelled, so the job says why.
    with pytest.raises(Exception, match="/no/such/model"):
        adray.label(inputs[:1], "/no/such/model", num_cpus=2).take_all()
    with pytest.raises(TypeError, match="beam_width"):
        adray.label(inputs[:1], "tiny.en", beam_width=2)  # checked before any actor starts


def test_the_node_daemon_gives_the_same_labels(cluster: str, inputs: list[str]) -> None:
    # The same batch (three files packed together) through either daemon.
    def texts(daemon: str) -> dict[str, str]:
        rows = adray.label(inputs[:3], "tiny.en", num_cpus=2, daemon=daemon).take_all()
        return by_path([{"audio_filepath": r["audio_filepath"], "text": r["text"]} for r in rows])

    node, actor = texts("node"), texts("actor")
    assert sorted(node) == sorted(inputs[:3]) and node == actor


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def ray_daemons() -> dict[int, int]:
    """``{pid: parent pid}`` of the private daemons the label actors started."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        args = cmdline(int(entry)).split(b"\0")
        if b"serve" in args and any(b"audiodecode-ray-" in a for a in args):
            found[int(entry)] = parent_of(int(entry))
    return {pid: parent for pid, parent in found.items() if parent}


def gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True  # exited, not yet reaped
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("victim", ["actor", "daemon"])
def test_a_kill_mid_run_still_gives_every_row_once(
    cluster: str, speech: list[Path], victim: str
) -> None:
    """SIGKILL the actor (Ray restarts it and reruns its batch) or its daemon (the actor
    restarts it and relabels the batch) once the first batch is out."""
    paths = [str(p) for p in speech]  # six batches of one file
    earlier = set(ray_daemons())  # daemons of earlier tests' actors, still exiting
    ds = adray.label(paths, "tiny.en", num_cpus=2, batch_size=1, concurrency=1)
    seen, first, successors = [], 0, set()
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        seen += batch.to_dict("records")
        daemons = {d: a for d, a in ray_daemons().items() if d not in earlier}
        if not first:
            ((first, actor),) = daemons.items()
            os.kill(actor if victim == "actor" else first, signal.SIGKILL)
            assert gone(first), "the killed actor's daemon outlived it"
        successors |= set(daemons) - {first}
    assert sorted(r["index"] for r in seen) == list(range(len(paths)))
    assert all(r["error"] is None and r["text"] for r in seen), seen
    assert successors, "no new actor or daemon did the rest of the job"


def test_decode_rows_equal_load(cluster: str, speech: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"\x00" * 64)
    files = [*map(str, speech[:3]), str(broken)]
    rows = sorted(adray.decode(files, sr=16000).take_all(), key=lambda r: r["index"])
    assert [r["audio_filepath"] for r in rows] == files
    for path, row in zip(files[:3], rows, strict=False):
        samples, rate = audiodecode.load(path, sr=16000)
        assert row["sample_rate"] == rate and row["error"] is None
        assert row["audio"].dtype == np.float32 and np.array_equal(row["audio"], samples)
        assert row["duration"] == pytest.approx(len(samples) / 16000)
    assert rows[-1]["error"] and rows[-1]["audio"].size == 0

    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, np.stack([tone(0.5, 22050, 300), tone(0.5, 22050, 700, 0.3)]), 22050)
    (row,) = adray.decode([stereo, speech[0]], sr=None, mono=False).take(1)
    samples, rate = audiodecode.load(stereo, mono=False)
    assert row["audio"].shape == (2, samples.shape[1]) and rate == 22050
    assert np.array_equal(row["audio"], samples)


def test_read_audio_over_manifests_yields_every_sample_once(
    cluster: str, speech: list[Path], tmp_path: Path
) -> None:
    # A labeling manifest with relative paths (taken from its directory) and an error line
    # (left out, as the daemon's manifest reader does), and a CSV manifest.
    jsonl = speech[0].parent / "m.jsonl"
    lines = [{"audio_filepath": p.name, "text": "x"} for p in speech[:4]]
    lines.append({"audio_filepath": "broken.wav", "error": "unreadable"})
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in lines))
    csv = tmp_path / "m.csv"
    csv.write_text("duration,path\n" + "".join(f"1.0,{p}\n" for p in speech[3:]))

    rows = adray.read_audio([jsonl, csv], sr=16000).take_all()
    want = [str(p) for p in speech]  # speech[3] is in both: once
    assert sorted(r["audio_filepath"] for r in rows) == sorted(want)
    assert sorted(r["index"] for r in rows) == list(range(len(want)))
    for row in rows:
        assert row["error"] is None
        assert np.array_equal(row["audio"], audiodecode.load(row["path"], sr=16000)[0])
    names = adray.read_audio(jsonl, decode_audio=False).take_all()
    assert sorted(r["audio_filepath"] for r in names) == sorted(want[:4])


def test_read_audio_over_shards_yields_every_sample_once(cluster: str, tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    originals = {}
    with wds.ShardWriter(str(tmp_path / "s-%03d.tar"), maxcount=3, verbose=0) as sink:
        for i in range(7):
            path = tmp_path / f"c{i}.wav"
            write_wav(path, tone(0.3 + 0.05 * i, 22050, 300 + 40 * i), 22050)
            originals[f"k{i}"] = path
            sink.write({"__key__": f"k{i}", "wav": path.read_bytes(), "cls": i % 2})
        sink.write({"__key__": "bad", "wav": b"RIFF-not-audio", "cls": 0})
    rows = adray.read_audio(str(tmp_path / "s-{000..002}.tar"), sr=16000).take_all()
    assert len(rows) == 8
    good = [r for r in rows if r["error"] is None]
    [bad] = [r for r in rows if r["error"] is not None]
    assert bad["path"].endswith("s-002.tar#bad.wav") and bad["audio"].size == 0
    keys = sorted(r["path"].rsplit("#", 1)[1].split(".")[0] for r in good)
    assert keys == sorted(originals)
    for row in good:
        key = row["path"].rsplit("#", 1)[1].split(".")[0]
        assert np.array_equal(row["audio"], audiodecode.load(originals[key], sr=16000)[0])
        assert row["label"] == int(key[1:]) % 2 and row["sample_rate"] == 16000
    # Lhotse Shar, one read task per cuts/recording pair (written by audiodecode shard).
    shar = tmp_path / "shar"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": str(p), "text": k}) + "\n" for k, p in originals.items()
        )
    )
    subprocess.run(
        [str(built_binary()), "shard", str(manifest), "--format", "shar"]
        + ["--out", str(shar), "--shard-size", "30KB", "-q"],
        check=True,
        timeout=120,
    )
    assert len(list(shar.glob("cuts.*"))) >= 2
    rows = adray.read_audio(shar, format="shar", sr=16000).take_all()
    assert sorted(r["text"] for r in rows) == sorted(originals)
    for row in rows:
        assert row["error"] is None
        expected = audiodecode.load(originals[row["text"]], sr=16000)[0]
        # A cut lasts its stated duration: round(d * 16000) samples, as lhotse counts
        # them, where a whole-file decode rounds up (one sample more at most).
        n = row["audio"].shape[0]
        assert len(expected) - n in (0, 1)
        assert np.array_equal(row["audio"], expected[:n])
    # NeMo tarred audio (NeMo's names: audio_N.tar holds shard_id N), one task per tar.
    nemo = tmp_path / "nemo"
    nemo.mkdir()
    lines = []
    for shard in range(3):
        with tarfile.open(nemo / f"audio_{shard}.tar", "w") as tar:
            for key, path in list(originals.items())[shard::3]:
                tar.add(path, arcname=f"{key}.wav")
                lines.append({"audio_filepath": f"{key}.wav", "text": key, "shard_id": shard})
    tarred = nemo / "tarred_audio_manifest.json"
    tarred.write_text("".join(json.dumps(line) + "\n" for line in lines))
    patterns = [tarred, str(nemo / "audio__OP_0..2_CL_.tar")]
    rows = adray.read_audio(patterns, format="nemo", sr=16000).take_all()
    assert sorted(r["text"] for r in rows) == sorted(originals)
    assert {r["shard"] for r in rows} == {str(nemo / f"audio_{i}.tar") for i in range(3)}
    for row in rows:
        assert row["error"] is None and row["path"].startswith(row["shard"] + "#")
        expected = audiodecode.load(originals[row["text"]], sr=16000)[0]
        assert np.array_equal(row["audio"], expected)


def test_write_shards_packs_labelled_rows_that_the_loader_reads(
    cluster: str, speech: list[Path], tmp_path: Path
) -> None:
    import ray

    rows = [
        {"index": i, "audio_filepath": str(p), "text": f"sentence {i}", "error": None}
        for i, p in enumerate(speech[:3])
    ]
    rows.append({"index": 3, "audio_filepath": str(tmp_path / "gone.wav"), "error": "unreadable"})
    ds = ray.data.from_items([{k: r.get(k) for k in adray.LABEL_FIELDS} | r for r in rows])
    shards = adray.write_shards(ds, tmp_path / "packed", sr=16000)
    assert shards == [str(tmp_path / "packed" / "shard-000000.tar")]
    loader = audiodecode.AudioDataLoader(shards[0], batch_size=3, shuffle=False, label_field="txt")
    [batch] = list(loader)
    assert list(batch.labels) == ["sentence 0", "sentence 1", "sentence 2"]
    for k in range(3):
        expected = audiodecode.load(speech[k], sr=16000)[0]
        got = np.asarray(batch.audio[k][: int(batch.lengths[k])])
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1 / 32768 + 1e-6


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audiodecode.ray", "label", *args],
        check=False,
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_entry_writes_the_same_manifest_and_resumes(
    cluster: str, inputs: list[str], cli_labels: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "labels.jsonl"
    env = {"RAY_ADDRESS": cluster}
    common = ["--out", str(out), "--model", "tiny.en", "--batch-size", "2"]
    first = run_cli([*inputs[:2], *common, "-q"], env)
    assert first.returncode == 0, first.stderr
    kept = out.read_bytes()
    # A torn last line, as a driver killed mid-write leaves: cut, and that input redone.
    out.write_bytes(kept + b'{"audio_filepath": "' + inputs[2].encode())

    refused = run_cli([*inputs, *common], env)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = run_cli([*inputs, *common, "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: 2 of {len(inputs)} files" in resumed.stderr
    assert f"labelled {len(inputs) - 2} files" in resumed.stderr
    # The resumed run's batches are the CLI's blocks of two: the same file, byte for byte.
    assert out.read_bytes().startswith(kept)
    assert out.read_text() == cli_labels(2).read_text()

    again = run_cli([*inputs, *common, "--resume"], env)
    assert again.returncode == 0 and out.read_text() == cli_labels(2).read_text()


def names(manifest: Path) -> list[str]:
    return [r["audio_filepath"] for r in records(manifest)]


def test_cli_entry_names_inputs_from_the_manifest_as_audiodecode_label_does(
    cluster: str, binary: Path, speech: list[Path], tmp_path: Path
) -> None:
    # Relative inputs given in work/ (one through a symbolic link to the speech's
    # directory, one climbing out of a directory, one missing, one absolute), manifests
    # in m/: each tool names the inputs from m/, the same way.
    work = tmp_path / "work"
    (work / "local").mkdir(parents=True)
    (work / "local" / "a.wav").write_bytes(speech[0].read_bytes())
    (work / "link").symlink_to(speech[0].parent, target_is_directory=True)
    inputs = ["local/a.wav", "link/s1.wav", "local/../link/s2.wav", "gone.wav", str(speech[3])]
    model = ["--model", "tiny.en", "--quiet"]
    cli = subprocess.run(
        [str(binary), "label", *inputs, "--out", "../m/cli.jsonl", *model], cwd=work, check=False
    )
    assert cli.returncode == 0
    env = {"RAY_ADDRESS": cluster}
    done = run_cli([*inputs, "--out", "../m/ray.jsonl", *model], env, cwd=work)
    assert done.returncode == 0, done.stderr
    written = names(tmp_path / "m" / "ray.jsonl")
    assert written == names(tmp_path / "m" / "cli.jsonl")
    assert written[0] == "../work/local/a.wav" and written[3] == "../work/gone.wav"
    assert written[4] == str(speech[3])  # absolute: as given
    for given, name in zip(inputs[:3], written, strict=False):
        assert os.path.samefile(tmp_path / "m" / name, work / given)

    # A manifest written the old way (inputs as given, relative to work/) for the first
    # two and the new way for the third: those three are skipped, the rest labelled.
    old = tmp_path / "m" / "old.jsonl"
    lines = [{"audio_filepath": inputs[0]}, {"audio_filepath": inputs[1]}]
    lines.append({"audio_filepath": written[2]})
    old.write_text("".join(json.dumps(line) + "\n" for line in lines))
    resumed = run_cli(
        [*inputs, "--out", "../m/old.jsonl", "--model", "tiny.en", "--resume"], env, cwd=work
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: 3 of {len(inputs)} files" in resumed.stderr
    assert names(old) == [*inputs[:2], *written[2:]]


def test_manifest_names_and_resume_matches_are_the_clis(
    binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a cluster: ``write_manifest``'s names and ``--resume``'s matches against
    the CLI's on missing inputs (error lines, no audio to label), spelled every way."""
    from audiodecode.ray._inputs import labelled_paths
    from audiodecode.ray._label_paths import DoneLines, PathRule

    work, m = tmp_path / "work", tmp_path / "m"
    (work / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (work / "link").symlink_to(tmp_path / "other", target_is_directory=True)
    inputs = ["a.wav", "./b.wav", "sub/../c.wav", "sub/d.wav", "link/e.wav", "link/../f.wav"]
    inputs += ["../other/g.wav", "nodir/../h.wav", str(tmp_path / "i.wav")]
    inputs += ["https://127.0.0.1:1/j.wav", f"file://{tmp_path}/k.wav"]
    monkeypatch.chdir(work)

    def label(out: str, *extra: str) -> list[str]:
        cmd = [str(binary), "label", *inputs, "--out", out, "--model", "tiny.en", "-q", *extra]
        subprocess.run(cmd, check=False, capture_output=True)  # exit 1: every file failed
        return names(Path(out))

    cli = label("../m/new.jsonl")
    assert cli[:3] == ["../work/a.wav", "../work/b.wav", "../work/c.wav"]
    assert cli[4:6] == ["../other/e.wav", "../f.wav"]  # directories as the kernel sees them
    assert cli[-3:] == inputs[-3:]  # absolute paths and URLs (file: too) as given
    assert [PathRule("../m/new.jsonl").written(i) for i in inputs] == cli

    # Lines as given (older versions) for every input; two of them name files that exist
    # beside the manifest, so they are those files' lines, not these inputs'.
    (m / "old.jsonl").write_text("".join(json.dumps({"audio_filepath": i}) + "\n" for i in inputs))
    (m / "sub").mkdir()
    (m / "sub" / "d.wav").touch()
    (m / "a.wav").touch()
    done = DoneLines(labelled_paths("../m/old.jsonl"), PathRule("../m/old.jsonl"))
    assert [i for i in inputs if i not in done] == ["a.wav", "sub/d.wav"]
    relabelled = label("../m/old.jsonl", "--resume")[len(inputs) :]
    assert relabelled == ["../work/a.wav", "../work/sub/d.wav"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Before the two-node test, which stops every Ray process on the machine.
def test_audiodecode_label_ray_runs_the_same_job(
    cluster: str, binary: Path, inputs: list[str], tmp_path: Path
) -> None:
    """The Rust CLI's ``label --ray`` hands its inputs and options to ``audiodecode.ray``."""
    out = tmp_path / "ray.jsonl"
    env = {**os.environ, **client_env(binary), "RAY_ADDRESS": cluster}
    cmd = [str(binary), "label", "--ray", *inputs, "--out", str(out), "--model", "tiny.en"]
    done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = by_path(records(out))
    assert sorted(rows) == sorted(inputs)
    assert sum(1 for r in rows.values() if r.get("error")) == 2  # not audio, and missing
    assert all(r.get("text") for r in rows.values() if not r.get("error"))
    # Options the cluster run cannot honour are refused, not dropped.
    refused = subprocess.run(
        [*cmd, "--overwrite", "--word-timestamps"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--ray passes" in refused.stderr


def test_a_two_node_cluster_runs_one_labeler_per_node(
    binary: Path, inputs: list[str], cli_labels: Callable[..., Path], tmp_path: Path
) -> None:
    """A head and a worker node of one CPU each, started as separate processes: the job
    places one actor on each, and the manifest is the CLI's."""
    ray.shutdown()  # the module's local cluster, if a test above started it
    env = {**os.environ, **client_env(binary)}
    env.pop("AUDIODECODE_SOCKET", None)
    # Ray 2.60 makes a head require its token (~/.ray/auth_token) but a joining node
    # sends it only in token mode.
    env["RAY_AUTH_MODE"] = "token"
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{free_port()}"
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                "ray",
                "start",
                "--head",
                f"--port={address.split(':')[1]}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                *common,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            ["ray", "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        out = tmp_path / "two.jsonl"
        args = [*inputs, "--out", str(out), "--model", "tiny.en", "--batch-size", "2"]
        job = subprocess.Popen(
            [sys.executable, "-m", "audiodecode.ray", "label", *args, "--address", address],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Each node's raylet starts its own workers: the labelers' daemons' grandparents.
        # Read while both are alive: a worker that exits between the two reads (an actor
        # restarted after a dropped socket) has no parent, or a reused pid's.
        raylets = set()
        while job.poll() is None:
            for actor in ray_daemons().values():
                raylet = parent_of(actor)
                if b"raylet" in cmdline(raylet):
                    raylets.add(raylet)
            time.sleep(0.2)
        stderr = job.stderr.read() if job.stderr else ""
        assert job.returncode == 0, stderr
        assert "on 2 node(s) (2 actors)" in stderr
        assert len(raylets) == 2, raylets
        # Actors of one CPU in batches of two: the CLI with blocks of two on one thread.
        assert out.read_text() == cli_labels(2, 1).read_text()
    finally:
        ray.shutdown()
        subprocess.run(["ray", "stop"], check=False, env=env, capture_output=True, timeout=120)


def key_words(text: str) -> set[str]:
    """Content words by stem (first five letters), so "stand" counts for "stands"."""
    return {w.strip(".,").lower()[:5] for w in text.split() if len(w.strip(".,")) > 4}


def heard(sentence: str, text: str) -> bool:
    """Most content words of the sentence are in the text (tiny.en misses some)."""
    want = key_words(sentence)
    return len(want & key_words(text)) * 3 >= len(want) * 2


def test_actors_take_a_gpu_each_where_the_cluster_has_gpus() -> None:
    """The placement `label --ray` and `audiodecode.ray.label` choose by default: one actor
    per GPU, each reserving one (so the model runs there with ``device="auto"``); on a CPU
    cluster one actor per node with all its CPUs. A cluster's resources as Ray reports
    them (this machine has no GPU to run one on)."""
    from audiodecode.ray.__main__ import _placement
    from audiodecode.ray._datasets import gpus_per_actor

    class Nodes:
        def __init__(self, *resources: dict[str, float]) -> None:
            self._nodes = [{"Alive": True, "Resources": r} for r in resources]

        def nodes(self) -> list[dict[str, object]]:
            return self._nodes

    defaults = argparse.Namespace(gpus_per_actor=None, concurrency=None, cpus_per_actor=None)
    gpu_nodes = Nodes({"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0})
    assert _placement(gpu_nodes, defaults) == {"concurrency": 4, "num_cpus": 1, "num_gpus": 1}
    cpu_nodes = Nodes({"CPU": 2.0}, {"CPU": 4.0})
    assert _placement(cpu_nodes, defaults) == {"concurrency": 2, "num_cpus": 2.0, "num_gpus": 0}
    assert gpus_per_actor({"CPU": 16.0, "GPU": 8.0}) == 1
    assert gpus_per_actor({"CPU": 16.0}) == 0
