"""Real faults under a running job, each minutes long, so run by `make faults` rather than in
`make test` (issue 18). Each scenario starts `lote serve` on the machine's real RabbitMQ and
PostgreSQL (or SQLite), submits a job, breaks something mid-job, checks that the worker keeps
answering gRPC meanwhile, repairs it, and counts: documents submitted, results stored,
duplicates, losses. Lost and duplicated must both be 0.

Usage: python tests/faults/stops.py LOTE_BINARY FIXTURES_DIR [SCENARIO ...]
Scenarios: rabbitmq-stop, postgres-stop, partition, sigkill, disk-full, soak (all by
default; soak is SOAK_DOCUMENTS documents through two workers with a rolling restart).
Needs root (it stops the servers, mounts a tmpfs, makes a network namespace and nftables
rules). Prints a JSON report per scenario.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

LOTE, FIXTURES = sys.argv[1], sys.argv[2]
SCENARIOS = sys.argv[3:] or ["rabbitmq-stop", "postgres-stop", "partition", "sigkill", "disk-full",
                             "soak"]
ADMIN = os.environ.get("LOTE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
OUTAGE_S = 30
PARTITION_S = 20
WORDS = ["ação", "São Paulo", "você", "maçã", "pão", "coração", "João", "avó"]


def sh(*args, check=True, timeout=300):
    """A command's output; a command that hangs past `timeout` seconds fails the scenario."""
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cluster():
    return sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(x) for x in v.split(".")])[-1]


def fresh_database():
    name = f"lote_faults_{int(time.time() * 1000)}"
    sh("psql", ADMIN, "-qc", f"CREATE DATABASE {name}")
    return ADMIN.rsplit("/", 1)[0] + "/" + name


class Worker:
    """`lote serve` with one embedding model; `netns` runs it in that network namespace, where
    it reaches the servers at `amqp_url` and `store` and serves gRPC on `grpc_host`."""

    def __init__(self, folder, store, amqp, prefix, amqp_url=None, netns=None,
                 grpc_host="127.0.0.1"):
        self.config = os.path.join(folder, "lote.toml")
        self.wrap = ["ip", "netns", "exec", netns] if netns else []
        url = f'url = "{amqp_url}"\n' if amqp_url else ""
        with open(self.config, "w") as f:
            f.write(
                f'[server]\ngrpc_addr = "{grpc_host}:0"\nmetrics_addr = ""\nhttp_addr = ""\n'
                '[device]\nkind = "cpu"\nthreads = 1\n'
                f'[amqp]\nenabled = {"true" if amqp else "false"}\nqueue_prefix = "{prefix}"\n'
                f'{url}[store]\nurl = "{store}"\n'
                f'[[models]]\nname = "embed"\ntask = "feature-extraction"\n'
                f'path = "{FIXTURES}/bert-embed-mean"\n'
            )
        self.start()

    def start(self):
        env = dict(os.environ, LOTE__LOG__FORMAT="json")
        env.pop("LOTE__STORE__URL", None)
        self.process = subprocess.Popen(
            self.wrap + [LOTE, "--config", self.config, "serve"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        for line in self.process.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") == "serving":
                self.addr = "http://" + event["grpc_addr"]
                break
        else:
            raise SystemExit("lote serve exited before serving")
        # Keep reading its log so it never blocks on a full pipe; warnings and errors are kept
        # for the report of a scenario that fails.
        import threading
        self.log, self.warnings_at = [], []
        threading.Thread(target=self.keep_log, args=(self.process.stderr,), daemon=True).start()
        deadline = time.time() + 120
        while sh(LOTE, "health", "--addr", self.addr, check=False).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("the worker did not load its model")
            time.sleep(0.5)

    def keep_log(self, stream):
        for line in stream:
            if '"WARN"' in line or '"ERROR"' in line:
                self.log.append(line.strip())
                self.warnings_at.append(time.time())

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def peak_rss_mb(self):
        """The process's peak resident memory so far (VmHWM), in MiB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()

    def answers(self):
        """Whether the worker answers an Embed call over gRPC right now."""
        call = sh(LOTE, "infer", "--addr", self.addr, "--model", "embed",
                  "--task", "feature-extraction", "--text", "olá, você", "--timeout", "10s",
                  check=False)
        return call.returncode == 0

    def submit(self, folder, count, custom=""):
        path = os.path.join(folder, f"docs{custom}.jsonl")
        with open(path, "w") as f:
            for i in range(count):
                text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 11))
                f.write(json.dumps({"custom_id": f"doc-{i}", "text": text}, ensure_ascii=False))
                f.write("\n")
        out = sh(LOTE, "submit", "--addr", self.addr, "--model", "embed",
                 "--task", "feature-extraction", "--input", path, "--detach", check=False)
        return out

    def status(self, job):
        out = sh(LOTE, "status", "--addr", self.addr, job, check=False)
        match = re.search(r" (\w+) \(.*\): (\d+) of (\d+) succeeded, (\d+) failed", out.stdout)
        if not match:
            return None
        state, ok, total, failed = match.groups()
        return state, int(ok), int(total), int(failed)

    def wait(self, job, predicate, limit_s=600):
        deadline = time.time() + limit_s
        while time.time() < deadline:
            status = self.status(job)
            if status and predicate(status):
                return status
            time.sleep(0.2)
        recent, status = "\n".join(self.log[-20:]), self.status(job)
        self.stop()
        raise SystemExit(f"job {job}: {status} after {limit_s} s; the worker's last "
                         f"warnings and errors:\n{recent}")

    def count(self, job, submitted):
        out = sh(LOTE, "results", "--addr", self.addr, job).stdout.splitlines()
        ids = [json.loads(line)["custom_id"] for line in out]
        succeeded = sum(1 for line in out if json.loads(line)["state"] == "succeeded")
        return {
            "submitted": submitted,
            "results": len(ids),
            "succeeded": succeeded,
            "duplicates": len(ids) - len(set(ids)),
            "lost": submitted - len(set(ids)),
        }


def outage(worker, job, stop, start, submitted):
    """Stops a server mid-job for OUTAGE_S, probing the worker's gRPC meanwhile."""
    worker.wait(job, lambda s: s[1] >= 50)
    started = time.time()
    progress(f"stopping the server mid-job: {worker.status(job)}")
    stop()
    probes = []
    while time.time() - started < OUTAGE_S:
        probes.append(worker.answers())
        time.sleep(2)
    start()
    progress(f"started again: {worker.status(job)}")
    worker.wait(job, lambda s: s[0] in ("completed", "failed", "cancelled"))
    report = worker.count(job, submitted)
    report["served_during_outage"] = f"{sum(probes)}/{len(probes)}"
    report["state"] = worker.status(job)[0]
    report["seconds"] = round(time.time() - started, 1)
    return report


def rabbitmq_stop(folder):
    worker = Worker(folder, fresh_database(), True, f"lote-faults-{int(time.time())}")
    job = worker.submit(folder, 4000).stdout.strip()

    def stop():
        sh("rabbitmqctl", "shutdown")

    def start():
        sh("rabbitmq-server", "-detached")

    try:
        return outage(worker, job, stop, start, 4000)
    finally:
        worker.stop()


def postgres_stop(folder):
    worker = Worker(folder, fresh_database(), True, f"lote-faults-{int(time.time())}")
    job = worker.submit(folder, 4000).stdout.strip()
    version = cluster()

    def stop():
        sh("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop")

    def start():
        sh("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")

    try:
        return outage(worker, job, stop, start, 4000)
    finally:
        worker.stop()


class Partition:
    """A network namespace joined to this host by a veth pair, the RabbitMQ and PostgreSQL
    ports forwarded into it (socat on the host's end: both servers listen on loopback only),
    and an nftables table in the namespace that drops every packet to or from the broker's
    port while the partition lasts, as a cut link does: nothing is refused, nothing arrives."""

    NS, HOST_END, NS_END = "lote-partition", "lote-ph", "lote-pn"
    HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"

    def __enter__(self):
        self.close()
        sh("ip", "netns", "add", self.NS)
        sh("ip", "link", "add", self.HOST_END, "type", "veth", "peer", "name", self.NS_END)
        sh("ip", "link", "set", self.NS_END, "netns", self.NS)
        sh("ip", "addr", "add", f"{self.HOST_IP}/30", "dev", self.HOST_END)
        sh("ip", "link", "set", self.HOST_END, "up")
        inside = ["ip", "netns", "exec", self.NS]
        sh(*inside, "ip", "addr", "add", f"{self.NS_IP}/30", "dev", self.NS_END)
        sh(*inside, "ip", "link", "set", self.NS_END, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        self.forwarders = [
            subprocess.Popen(["socat", f"TCP-LISTEN:{port},bind={self.HOST_IP},fork,reuseaddr",
                              f"TCP:127.0.0.1:{port}"])
            for port in (5672, 5432)
        ]
        time.sleep(0.5)
        return self

    def cut(self):
        inside = ["ip", "netns", "exec", self.NS, "nft"]
        sh(*inside, "add", "table", "inet", "partition")
        for chain, hook, match in (("out", "output", "dport"), ("in", "input", "sport")):
            sh(*inside, "add", "chain", "inet", "partition", chain,
               f"{{ type filter hook {hook} priority 0; }}")
            sh(*inside, "add", "rule", "inet", "partition", chain, "tcp", match, "5672", "drop")

    def heal(self):
        sh("ip", "netns", "exec", self.NS, "nft", "delete", "table", "inet", "partition")

    def close(self):
        for forwarder in getattr(self, "forwarders", []):
            forwarder.terminate()
            forwarder.wait()
        sh("ip", "link", "del", self.HOST_END, check=False)
        sh("ip", "netns", "del", self.NS, check=False)

    def __exit__(self, *exc):
        self.close()


def partition(folder):
    """The worker's packets to and from RabbitMQ dropped for PARTITION_S: its heartbeats
    (every 5 s here) notice, it reconnects when the link heals, and the documents it held
    unacknowledged are delivered again; the store keeps each result once."""
    with Partition() as net:
        database = fresh_database().replace("@127.0.0.1:", f"@{net.HOST_IP}:")
        worker = Worker(folder, database, True, f"lote-faults-{int(time.time())}",
                        amqp_url=f"amqp://guest:guest@{net.HOST_IP}:5672/%2f?heartbeat=5",
                        netns=net.NS, grpc_host=net.NS_IP)
        try:
            job = worker.submit(folder, 4000).stdout.strip()
            worker.wait(job, lambda s: s[1] >= 50)
            progress(f"partition: cutting the link mid-job: {worker.status(job)}")
            started = time.time()
            net.cut()
            probes = []
            while time.time() - started < PARTITION_S:
                probes.append(worker.answers())
                time.sleep(2)
            net.heal()
            during = worker.status(job)
            noticed = sum(1 for at in worker.warnings_at if started <= at)
            progress(f"partition: healed: {during}; {noticed} warnings since the cut")
            worker.wait(job, lambda s: s[0] in ("completed", "failed", "cancelled"))
            report = worker.count(job, 4000)
            report["served_during_partition"] = f"{sum(probes)}/{len(probes)}"
            report["warnings_after_cut"] = noticed
            report["state"] = worker.status(job)[0]
            report["seconds"] = round(time.time() - started, 1)
            return report
        finally:
            worker.stop()


SOAK_DOCUMENTS = 100_000


def soak(folder):
    """SOAK_DOCUMENTS documents through two workers on RabbitMQ and PostgreSQL, each restarted
    once (SIGTERM, then started again) while the job runs, one after the other: documents/s,
    each worker's peak RSS over its runs, the store's size per document, every document once."""
    prefix = f"lote-soak-{int(time.time())}"
    database = fresh_database()
    workers = []
    for name in ("a", "b"):
        os.makedirs(os.path.join(folder, name))
        workers.append(Worker(os.path.join(folder, name), database, True, prefix))
    peaks = [0.0, 0.0]
    try:
        started = time.time()
        job = workers[0].submit(folder, SOAK_DOCUMENTS).stdout.strip()
        progress(f"soak: submitted {SOAK_DOCUMENTS} in {time.time() - started:.1f} s: {job}")
        for i, share in enumerate((0.3, 0.6)):
            workers[0].wait(job, lambda s, t=share: s[1] >= t * SOAK_DOCUMENTS, limit_s=3600)
            peaks[i] = max(peaks[i], workers[i].peak_rss_mb())
            progress(f"soak: restarting worker {'ab'[i]} at {workers[0].status(job)}")
            workers[i].stop()
            workers[i].start()
        workers[1].wait(job, lambda s: s[0] in ("completed", "failed", "cancelled"), limit_s=3600)
        seconds = time.time() - started
        report = workers[1].count(job, SOAK_DOCUMENTS)
        for i, worker in enumerate(workers):
            peaks[i] = max(peaks[i], worker.peak_rss_mb())
        size = sh("psql", database, "-tAc", "SELECT pg_database_size(current_database())")
        report.update({
            "state": workers[1].status(job)[0],
            "seconds": round(seconds, 1),
            "documents_per_s": round(SOAK_DOCUMENTS / seconds, 1),
            "peak_rss_mib": [round(p) for p in peaks],
            "store_bytes_per_document": round(int(size.stdout.strip()) / SOAK_DOCUMENTS),
            "restarts": 2,
        })
        return report
    finally:
        for worker in workers:
            worker.stop()


def sigkill(folder):
    """SIGKILL while results are being committed (a busy job commits every few ms)."""
    worker = Worker(folder, f"sqlite://{folder}/lote.db", False, "x")
    job = worker.submit(folder, 3000).stdout.strip()
    kills = 0
    for threshold in (200, 900, 1800):
        worker.wait(job, lambda s, t=threshold: s[1] >= t or s[0] == "completed")
        worker.kill()
        kills += 1
        worker.start()
    worker.wait(job, lambda s: s[0] in ("completed", "failed", "cancelled"))
    report = worker.count(job, 3000)
    report["kills"] = kills
    report["state"] = worker.status(job)[0]
    worker.stop()
    return report


def disk_full(folder):
    mount = os.path.join(folder, "small")
    os.makedirs(mount)
    sh("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mount)
    worker = None
    try:
        worker = Worker(folder, f"sqlite://{mount}/lote.db", False, "x")
        filler = os.path.join(mount, "filler")
        # Leave about 1.5 MB for the store.
        free = shutil.disk_usage(mount).free
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - 1_500_000))
        refusals, accepted = [], []
        for attempt in range(30):
            out = worker.submit(folder, 2000, custom=str(attempt))
            progress(f"disk-full: submission {attempt}: exit {out.returncode} "
                     f"{out.stdout.strip()} {out.stderr.strip()[-300:]}")
            if out.returncode == 0:
                accepted.append(out.stdout.strip())
            else:
                refusals.append(out.stderr.strip())
                break
        served_when_full = worker.answers()
        progress(f"disk-full: served when full: {served_when_full}; freeing the disk")
        os.remove(filler)
        after = worker.submit(folder, 500, custom="after")
        resumed = after.returncode == 0
        progress(f"disk-full: submission after freeing: exit {after.returncode} {after.stderr.strip()[-300:]}")
        for job in accepted + ([after.stdout.strip()] if resumed else []):
            progress(f"disk-full: waiting for {job}: {worker.status(job)}")
            worker.wait(job, lambda s: s[0] in ("completed", "failed", "cancelled"), limit_s=180)
        counts = [worker.count(job, worker.status(job)[2]) for job in accepted]
        worker.stop()
        import sqlite3
        store = sqlite3.connect(f"{mount}/lote.db")
        integrity = store.execute("PRAGMA integrity_check").fetchone()[0]
        store.close()
        return {
            "jobs_accepted_before_full": len(accepted),
            "refusal": refusals[0] if refusals else None,
            "served_when_full": served_when_full,
            "resumed_after_freeing": resumed,
            "lost": sum(c["lost"] for c in counts),
            "duplicates": sum(c["duplicates"] for c in counts),
            "integrity_check": integrity,
        }
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.kill()
        sh("umount", mount, check=False)


failed = False
for name in SCENARIOS:
    with tempfile.TemporaryDirectory() as folder:
        report = {"rabbitmq-stop": rabbitmq_stop, "postgres-stop": postgres_stop,
                  "partition": partition, "sigkill": sigkill, "disk-full": disk_full,
                  "soak": soak}[name](folder)
    report["scenario"] = name
    print(json.dumps(report, ensure_ascii=False), flush=True)
    if report.get("lost") or report.get("duplicates"):
        failed = True
sys.exit(1 if failed else 0)
