"""Cluster runs: the runner files, and a study on a two-node Ray cluster on this machine.

The runner files (``runners/``) are checked for what can be checked without a cluster: they
parse, they run ``ablate run`` with the documented options, and the SLURM script's requeue trap
works (its SLURM and Ray commands replaced by recording stand-ins).

The cluster is Ray's ``cluster_utils.Cluster``: a head and a worker node, one CPU each, so two
one-CPU trials run one per node. The study runs in a separate ``ablate run --address ...``
process, as it would on a real cluster's head node, and logs through an MLflow tracking server
started for the module. Mid-study the worker node is removed (its raylet and workers killed, as
when a spot instance goes away): its trial must be retried on the head from its last
checkpoint, and the study must complete with exactly one MLflow run per trial.

Which node ran what is read from the GCS actor table: every Tune trial attempt is an actor
whose process id Tune records in each result (``pid``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.studykit import (
    TRACKING_STORES,
    assert_study_complete,
    results,
    run,
    start,
    study_env,
    trial_dirs,
    trial_runs,
    wait_for,
    write_spec,
)

EPOCHS = 12  # long enough to remove a node between a trial's first checkpoint and its end
STUDY = "cluster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and proxied artifacts."""
    directory = tmp_path_factory.mktemp("mlflow-server")
    TRACKING_STORES.new(directory, "db")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow = str(Path(sys.executable).parent / "mlflow")
    with open(directory / "server.log", "w") as log:
        server = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{directory / 'db'}",
             "--artifacts-destination", str(directory / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def answers() -> bool:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited:\n{(directory / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, None, 120, "the MLflow server to answer", interval=0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass
class NodeLossStudy:
    """What happened in the study whose worker node was removed mid-trial."""

    root: Path
    tracking_uri: str
    head: str  # node ids
    worker: str
    node_of_pid: dict[int, str]
    results: dict[str, list[dict[str, Any]]]  # trial id -> every result Tune recorded
    interrupted: str  # the trial that was running on the removed node
    output: str


@pytest.fixture(scope="module")
def node_loss_study(tmp_path_factory: pytest.TempPathFactory, tracking_server: str,
                    no_local_ray: None) -> NodeLossStudy:
    from ray.cluster_utils import Cluster

    directory = tmp_path_factory.mktemp("cluster-study")
    cache = tmp_path_factory.mktemp("cache")
    # Raylets pass their environment to the trial workers: every node uses this cache.
    patch = pytest.MonkeyPatch()
    patch.setenv("ABLATE_CACHE", str(cache))
    patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        head_id, worker_id = cluster.head_node.node_id, worker.node_id

        def node_of_pid() -> dict[int, str]:
            table = cluster.global_state.actor_table(None)
            return {a["Pid"]: a["Address"]["NodeID"] for a in table.values() if a["Pid"]}

        spec = write_spec(directory, STUDY, epochs=EPOCHS, max_failures=3)
        root = directory / "runs" / STUDY
        driver = start(["run", str(spec), "--storage", str(directory / "runs"),
                        "--tracking-uri", tracking_server, "--address", cluster.address],
                       directory, study_env(cache))

        def checkpointed_on_worker() -> str | None:
            # A trial on the worker node that reported a checkpoint and has epochs to go.
            nodes = node_of_pid()
            for trial_dir in trial_dirs(root):
                rows = results(trial_dir)
                if (rows and rows[-1].get("checkpoint_dir_name") and rows[-1]["epoch"] < EPOCHS
                        and nodes.get(rows[-1]["pid"]) == worker_id):
                    return rows[-1]["trial_id"]
            return None

        interrupted = wait_for(checkpointed_on_worker, driver, 300,
                               "a checkpointed trial on the worker node", interval=0.1)
        cluster.remove_node(worker, allow_graceful=False)
        driver.wait(timeout=600)
        output = driver.output()
        assert driver.proc.returncode == 0, output[-3000:]
        return NodeLossStudy(root=root, tracking_uri=tracking_server, head=head_id,
                             worker=worker_id, node_of_pid=node_of_pid(),
                             results={results(d)[0]["trial_id"]: results(d)
                                      for d in trial_dirs(root)},
                             interrupted=interrupted, output=output)
    finally:
        cluster.shutdown()
        patch.undo()


@pytest.mark.slow
def test_trials_run_on_both_nodes(node_loss_study: NodeLossStudy) -> None:
    study = node_loss_study
    first_nodes = {study.node_of_pid[rows[0]["pid"]] for rows in study.results.values()}
    assert first_nodes == {study.head, study.worker}  # one trial per one-CPU node


@pytest.mark.slow
def test_trial_of_the_lost_node_resumes_from_its_checkpoint(
        node_loss_study: NodeLossStudy) -> None:
    study = node_loss_study
    rows = study.results[study.interrupted]
    nodes = [study.node_of_pid[r["pid"]] for r in rows]
    before = [r for r, n in zip(rows, nodes, strict=True) if n == study.worker]
    after = [r for r, n in zip(rows, nodes, strict=True) if n == study.head]
    assert before and after and nodes == sorted(nodes, key=lambda n: n == study.head), nodes
    # Tune's result.json keeps every attempt's results: the first on the worker from scratch,
    # then the retry on the head, continuing after the last checkpointed epoch.
    assert all(r["start_epoch"] == 0 for r in before)
    assert after[0]["start_epoch"] == before[-1]["epoch"] > 0
    # When the node died after the trial persisted an epoch but before Tune's snapshot took
    # that checkpoint, the retry first reports the epoch it resumed to again (no training: 0 s),
    # so the driver's last result and checkpoint are the newest.
    if after[0]["epoch"] == before[-1]["epoch"]:
        assert after[0]["epoch_seconds"] == 0.0, after[0]
        after = after[1:]
    assert [r["epoch"] for r in before + after] == list(range(1, EPOCHS + 1))
    assert "done, 0 failed" in study.output


@pytest.mark.slow
def test_every_trial_has_one_finished_mlflow_run(node_loss_study: NodeLossStudy) -> None:
    study = node_loss_study
    assert_study_complete(study.tracking_uri, study.root, EPOCHS)
    assert len(trial_runs(study.tracking_uri, STUDY)) == len(study.results) == 2
    assert "View run" not in study.output  # MLflow's links for every closed run on HTTP


# -- a cluster started with `ray start`, as users and the runners start one ----------------

RAY = str(Path(sys.executable).parent / "ray")


def _session_processes(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "sid=,pid="], capture_output=True, text=True).stdout
    return [int(pid) for s, pid in (line.split() for line in out.splitlines()) if s == str(sid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _end_session(leader: subprocess.Popen) -> None:
    """Stops every process of the session ``leader`` started (Ray's head, workers, raylets)."""
    import time

    try:
        os.killpg(leader.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _session_processes(leader.pid):
        time.sleep(0.5)
    for pid in _session_processes(leader.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    leader.wait(timeout=30)


def _token_home(directory: Path) -> Path:
    """A home with a Ray token, as on any machine that ever ran a local Ray (~/.ray/auth_token):
    `ray start --head` then turns token authentication on."""
    import secrets

    home = directory / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    return home


def _cluster_env(home: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in study_env(cache).items() if not k.startswith("RAY_AUTH")}
    return {**env, "HOME": str(home), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


@pytest.mark.slow
def test_run_attaches_to_a_ray_start_cluster_with_its_token(tmp_path: Path,
                                                            tracking_uri: str) -> None:
    """`ray start --head`, then `ablate run --address 127.0.0.1:PORT`: the driver sends the
    cluster's token (Ray 2.60 checks one) without being told to."""
    import tempfile

    env = _cluster_env(_token_home(tmp_path), tmp_path / "cache")
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # socket paths must stay short
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--num-gpus=0", f"--temp-dir={ray_tmp}",
             "--include-dashboard=false", "--disable-usage-stats", "--block"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        wait_for(lambda: "--block" in (tmp_path / "head.log").read_text(), None, 120,
                 "the Ray head to start", interval=0.5)
        assert "Token authentication is enabled" in (tmp_path / "head.log").read_text()
        spec = write_spec(tmp_path, "attach", epochs=2)
        uri = tracking_uri
        driver = start(["run", str(spec), "--address", f"127.0.0.1:{port}", "--storage",
                        str(tmp_path / "runs"), "--tracking-uri", uri, "--quiet"],
                       tmp_path, env)
        status = driver.wait(timeout=600)
        assert status == 0, driver.output()[-3000:]
        assert "study 'attach': 2/2 trials done, 0 failed" in driver.output()
        assert_study_complete(uri, tmp_path / "runs" / "attach", 2)
        # A machine without the token is told so at once, before anything is written.
        (tmp_path / "bare").mkdir()
        bare = run(["run", str(spec), "--address", f"127.0.0.1:{port}", "--name", "bare",
                    "--storage", str(tmp_path / "runs"), "--tracking-uri", uri],
                   tmp_path, {**env, "HOME": str(tmp_path / "bare")}, timeout=120)
        assert bare.returncode == 1
        assert bare.stderr == (f"error: the Ray cluster at 127.0.0.1:{port} checks a token and "
                               f"this machine has none; copy the token of its head "
                               f"(~/.ray/auth_token there) to ~/.ray/auth_token here, or set "
                               f"RAY_AUTH_TOKEN\n")
        assert not (tmp_path / "runs" / "bare").exists()
    finally:
        _end_session(head)
        subprocess.run(["rm", "-rf", ray_tmp], check=False)


def _free_job_id() -> int:
    """A SLURM job id whose Ray port (slurm.sbatch: 20000 + id % 20000) is free here."""
    import random

    for _ in range(100):
        job = random.randrange(1000, 20000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 20000 + job))
            except OSError:
                continue
        return job
    pytest.skip("no free port in 20000-39999")


@pytest.mark.slow
def test_slurm_script_runs_a_study_on_real_ray_nodes(tmp_path: Path,
                                                     tracking_uri: str) -> None:
    """slurm.sbatch with its SLURM commands replaced (srun runs its command here) but real
    `ray start` head and worker nodes and a real `ablate run`: everything agrees on the job's
    token, on a machine whose own ~/.ray/auth_token would otherwise turn authentication on."""
    fakes = _fake_bin(tmp_path / "bin", {
        "srun": 'while [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done; exec "$@"\n',
        "hostname": 'echo 127.0.0.1\n',
        "scontrol": 'if [[ $1 == show ]]; then printf "node1\\nnode2\\n"; fi\n',
    })
    spec = write_spec(tmp_path, "slurmjob", epochs=2)
    job = _free_job_id()
    env = {**_cluster_env(_token_home(tmp_path), tmp_path / "cache"),
           "PATH": f"{fakes}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SPEC": str(spec), "SLURM_JOB_ID": str(job), "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_CPUS_PER_TASK": "1", "SLURM_GPUS_PER_TASK": "0"}
    env.pop("ABLATE_STORAGE", None)
    env.pop("ABLATE_TRACKING_URI", None)
    with open(tmp_path / "job.out", "w") as out:
        script = subprocess.Popen(["bash", str(RUNNERS / "slurm.sbatch")], cwd=tmp_path,
                                  env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        status = script.wait(timeout=600)
        output = (tmp_path / "job.out").read_text()
        assert status == 0, output[-4000:]
        # Both nodes joined: the head's raylet and the worker's (a worker refused for want of
        # the token exits, and the study would still finish on the head alone).
        raylets = [pid for pid in _session_processes(script.pid)
                   if "raylet/raylet" in _cmdline(pid)]
        assert len(raylets) == 2, output[-4000:]
        assert "study 'slurmjob': 2/2 trials done, 0 failed" in output
        assert_study_complete(tracking_uri, tmp_path / "runs" / "slurmjob", 2)
    finally:
        _end_session(script)
        subprocess.run(["rm", "-rf", f"/tmp/ray-{job}"], check=False)


# -- runner files ---------------------------------------------------------------------------

RUNNERS = Path(__file__).resolve().parent.parent / "runners"
SPEC = "search_spaces/como.yaml"


def _fake_bin(directory: Path, scripts: dict[str, str]) -> Path:
    """Executables that stand in for cluster tools; each may append to $RECORD."""
    directory.mkdir()
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return directory


def test_every_runner_is_documented() -> None:
    readme = (RUNNERS / "README.md").read_text()
    runners = sorted(p.name for p in RUNNERS.iterdir() if p.name != "README.md")
    assert runners == ["cluster.yaml", "kuberay-rayjob.yaml", "ray_job_submit.sh",
                       "slurm.sbatch"]
    for name in runners:
        assert f"`{name}`" in readme, name
    assert readme.count("**Resume.**") == len(runners)


def test_ray_job_submit_runs_ablate_on_the_cluster(tmp_path: Path) -> None:
    record = tmp_path / "record"
    fakes = _fake_bin(tmp_path / "bin", {"ray": 'printf "%s\\n" "$@" > "$RECORD"\n'})
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "RECORD": str(record),
           "RAY_ADDRESS": "http://127.0.0.1:8265", "ABLATE_STORAGE": "s3://bucket/studies",
           "ABLATE_TRACKING_URI": "http://mlflow:5000"}
    result = subprocess.run([str(RUNNERS / "ray_job_submit.sh"), SPEC, "--quiet"],
                            cwd=RUNNERS.parent, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    assert argv[:5] == ["job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir"]
    assert argv[argv.index("--") + 1:] == [
        "ablate", "run", SPEC, "--storage", "s3://bucket/studies", "--tracking-uri",
        "http://mlflow:5000", "--quiet"]
    excludes = json.loads(argv[argv.index("--runtime-env-json") + 1])["excludes"]
    assert {"runs", "mlflow.db", "mlartifacts"} <= set(excludes)


def test_ray_job_submit_needs_storage_and_tracking(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABLATE_", "RAY_"))}
    env["RAY_ADDRESS"] = "http://127.0.0.1:8265"
    result = subprocess.run([str(RUNNERS / "ray_job_submit.sh"), SPEC], cwd=RUNNERS.parent,
                            env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ABLATE_STORAGE" in result.stderr


def test_cluster_launcher_config() -> None:
    import yaml

    config = yaml.safe_load((RUNNERS / "cluster.yaml").read_text())
    assert config["provider"]["type"] == "aws"
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [n for n in nodes.values() if n["resources"].get("GPU")]
    assert gpu and gpu[0]["node_config"]["InstanceType"] == "g5.xlarge"
    setup = " ".join(config["setup_commands"])
    assert "pip install -e ~/ablate" in setup
    head = " ".join(config["head_start_ray_commands"])
    assert "mlflow server --host 127.0.0.1" in head and "0.0.0.0" not in head
    assert "--dashboard-host=127.0.0.1" in head
    assert all("ablate" not in c for c in config["worker_start_ray_commands"])


def test_kuberay_manifest_is_a_rayjob_running_ablate() -> None:
    import yaml

    documents = list(yaml.safe_load_all((RUNNERS / "kuberay-rayjob.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith(f"ablate run {SPEC} --storage /shared/")
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]]
    claims = {v["persistentVolumeClaim"]["claimName"] for p in pods for v in p["spec"]["volumes"]}
    mounts = {m["mountPath"] for p in pods for c in p["spec"]["containers"]
              for m in c["volumeMounts"]}
    assert mounts == {"/shared"} and len(claims) == 1
    claim = next(d for d in documents if d["kind"] == "PersistentVolumeClaim")
    assert claim["metadata"]["name"] in claims
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_slurm_script_is_valid_bash_and_runs_ablate() -> None:
    script = RUNNERS / "slurm.sbatch"
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = script.read_text()
    assert 'ablate run "$SPEC" --storage "$STORAGE" --tracking-uri "$TRACKING_URI" ' \
           '--address "$address"' in text
    directives = [line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "--requeue" in directives and "--signal=B:USR1@300" in directives


def test_slurm_trap_requeues_and_the_same_command_runs_again(tmp_path: Path) -> None:
    """USR1 near the time limit requeues the job; the restarted script (same environment, a
    higher SLURM_RESTART_COUNT) runs exactly the same ``ablate run`` command."""
    record = tmp_path / "record"
    fakes = _fake_bin(tmp_path / "bin", {
        # srun: drop its options, run the command (the Ray starts are recorded, not run)
        "srun": 'while [[ $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done; exec "$@"\n',
        "hostname": 'echo 127.0.0.1\n',
        "scontrol": ('if [[ $1 == show ]]; then printf "node1\\nnode2\\n"; '
                     'else echo "scontrol $*" >> "$RECORD"; fi\n'),
        "ray": 'echo "ray $*" >> "$RECORD"\n',
        # the driver: record, then run until the job is requeued or released (or 30 s)
        "ablate": ('echo "ablate $*" >> "$RECORD"\n'
                   'for _ in $(seq 300); do\n'
                   '  grep -q "^scontrol requeue\\|^release" "$RECORD" && exit 0; sleep 0.1\n'
                   'done; exit 3\n'),
    })
    env = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "RECORD": str(record),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_CPUS_PER_TASK": "8", "SLURM_GPUS_PER_TASK": "1"}
    env.pop("ABLATE_STORAGE", None)
    env.pop("ABLATE_TRACKING_URI", None)

    def ablate_lines() -> list[str]:
        lines = record.read_text().splitlines() if record.exists() else []
        return [line for line in lines if line.startswith("ablate ")]

    commands = []
    for restart in range(2):
        job = subprocess.Popen(["bash", str(RUNNERS / "slurm.sbatch")], cwd=tmp_path,
                               env={**env, "SLURM_RESTART_COUNT": str(restart)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda n=restart: len(ablate_lines()) > n, None, 30, "the driver to start")
        if restart == 0:
            job.send_signal(signal.SIGUSR1)  # the time limit is near
        else:
            record.write_text(record.read_text() + "release\n")  # let the second driver end
        output, _ = job.communicate(timeout=60)
        assert job.returncode == 0, output
        commands.append(ablate_lines()[restart])

    port = 20000 + 4242 % 20000
    assert commands[0] == commands[1] == (
        f"ablate run {SPEC} --storage {tmp_path}/runs --tracking-uri "
        f"sqlite:///{tmp_path}/mlflow.db --address 127.0.0.1:{port}")
    lines = record.read_text().splitlines()
    assert lines.count("scontrol requeue 4242") == 1
    heads = [line for line in lines if line.startswith("ray start --head")]
    assert len(heads) == 2 and f"--port={port}" in heads[0] and "--num-gpus=1" in heads[0]
    assert [line for line in lines if line.startswith("ray start --address")] == [
        f"ray start --address=127.0.0.1:{port} --temp-dir=/tmp/ray-4242 --num-cpus=8 "
        f"--num-gpus=1 --block"] * 2
