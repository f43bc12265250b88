"""Hostile model code against the sandbox, in both modes: bubblewrap ("namespaces") and the fallback
without it (NASFORGE_NO_NAMESPACES=1). Each attack runs as a candidate; after it, a clean control
network must get its true accuracy, the world outside must be untouched (canary files, a listener on
127.0.0.1, a secret in a temporary $HOME, an environment secret, the run store), no process of the
candidate may survive, and the test process (the search's stand-in) must still be alive.
The same attacks then go through `search run` (a scripted LLM server answers them), `mutator generate`
and `corpus profile`."""
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, free_port, run_module
from mutator.landlock import abi_version
from mutator.sandbox import WorkerPool, namespaces_available

NEEDS_BWRAP = pytest.mark.skipif(not namespaces_available(), reason="needs bubblewrap")
NEEDS_LANDLOCK = pytest.mark.skipif(abi_version() < 6, reason="the fallback without namespaces needs Landlock ABI >= 6")
# namespaces: bubblewrap; none: the fallback without it (unshare + Landlock where available);
# landlock: NASFORGE_NO_NAMESPACES=1, Landlock alone
MODES = [pytest.param("namespaces", marks=NEEDS_BWRAP), "none", pytest.param("landlock", marks=NEEDS_LANDLOCK)]
CLI_MODES = [pytest.param("namespaces", marks=NEEDS_BWRAP), pytest.param("landlock", marks=NEEDS_LANDLOCK)]
TOKEN = uuid.uuid4().hex  # names the attacks' files; it is in their code
SECRET = uuid.uuid4().hex  # in the secret files and environment only: must never leave the sandbox
ENV_SECRET = f"env-secret-{SECRET}"
REAL_CACHE = os.environ.get("NASFORGE_CACHE") or str(Path.home() / ".cache" / "nasforge")

NET = """
import os, sys, signal, time, socket, json, glob
import torch, torch.nn as nn

W = json.loads({world!r})


class Net(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.tag = {tag!r}
{attack}
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
"""

ATTACKS = {
    # 1. the run store, found by its path, through /proc/<pid>/fd of every process, and walking up
    "truncate_store": """
for path in [W['store']] + glob.glob('/proc/*/fd/*'):
    try:
        if os.path.realpath(path).endswith(('.sqlite', '.jsonl')):
            open(path, 'r+').truncate(0)
    except Exception:
        pass
d = os.getcwd()
while d != '/':
    for f in glob.glob(os.path.join(d, '*.sqlite')):
        try: open(f, 'r+').truncate(0)
        except Exception: pass
    d = os.path.dirname(d)
""",
    # 2. poison later candidates: every tensor comparison says "equal"
    "patch_eq": """
torch.Tensor.__eq__ = lambda a, b: torch.ones(a.shape, dtype=torch.bool)
torch.Tensor.eq = torch.Tensor.__eq__
""",
    # 3. forge results for itself and the next candidates on every descriptor it can find
    "forge": """
fake = {'status': 'ok', 'accuracy': 0.9991, 'device_name': 'FORGED-BY-CANDIDATE'}
frames = [json.dumps({'id': i, 'result': fake}).encode() for i in range(200)]
targets = list(range(3, 256)) + glob.glob('/proc/*/fd/*')
for t in targets:
    try:
        fd = t if isinstance(t, int) else os.open(t, os.O_WRONLY | os.O_NONBLOCK)
        for fr in frames[:5]:
            os.write(fd, fr)
    except Exception:
        pass
""",
    # 4. secrets out through the error text
    "secrets": """
leak = []
for p in [W['secret'], '/etc/shadow', os.path.expanduser('~/.ssh/id_rsa'), '/root/.bash_history']:
    try: leak.append(open(p).read())
    except Exception as e: leak.append(type(e).__name__)
leak.append(os.environ.get('NASFORGE_TEST_SECRET', 'no-env'))
raise RuntimeError(' | '.join(leak))
""",
    # 5. writes outside: the canary, a new file beside it, /tmp, the project's own packages
    "write_outside": """
for p, mode in [(W['canary'], 'w'), (W['outside'] + '/new.txt', 'w'), ('/tmp/nasforge-escape-' + W['token'], 'w'),
                (W['project'] + '/mutator/_evil_' + W['token'] + '.py', 'w')]:
    try: open(p, mode).write('owned')
    except Exception: pass
""",
    # 6. the network: a listener on the host's loopback
    "network": """
try: socket.create_connection(('127.0.0.1', W['port']), timeout=2).sendall(b'hello')
except Exception: pass
""",
    # 7. a double-forked daemon that outlives the request
    "daemon": """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
""",
    # 8. kill the search (the parent's parent) and everything else it can see
    "kill_parent": """
for pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:
    if pid != os.getpid():
        try: os.kill(pid, 9)
        except Exception: pass
""",
    # 9. escape as root: unmount the private /tmp, remount / read-write, write to /root
    "remount": """
os.system('umount -l /tmp 2>/dev/null; mount -o remount,bind,rw / 2>/dev/null; '
          'touch /root/nasforge-escape-' + W['token'] + ' /tmp/nasforge-escape-' + W['token'] + ' 2>/dev/null')
""",
    # 10. memory: three children share the budget (RLIMIT_AS alone is per process)
    "memory_tree": """
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        b = bytearray(700 << 20)
        for i in range(0, len(b), 4096): b[i] = 1
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
time.sleep(30)
""",
    # 11. a hang that ignores SIGTERM
    "hang": """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True: pass
""",
}
EXPECT = {"memory_tree": "oom", "hang": "timeout"}


def net(attack: str = "", tag: str = "control", world: dict | None = None) -> str:
    return NET.format(world=json.dumps(world or {}), tag=tag,
                      attack=textwrap.indent(textwrap.dedent(attack).strip(), " " * 8) if attack else "")


def _listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    got, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                got.append(srv.accept())
            except OSError:
                pass

    threading.Thread(target=loop, daemon=True).start()
    return srv, got, stop


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files, a listener and secrets outside the sandbox; a tiny learnable data set in the cache."""
    import torch

    base = tmp_path_factory.mktemp("world")
    home, outside, run = base / "home", base / "outside", base / "run"
    for d in (home, outside, run):
        d.mkdir()
    (home / "secret.txt").write_text(f"home-secret-{SECRET}")
    os.chmod(home / "secret.txt", 0o600)
    (outside / "canary.txt").write_text("canary")
    (run / "run.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    cache = base / "cache"
    g = torch.Generator().manual_seed(0)

    def split(n):  # class k = a bright quadrant k
        y = torch.randint(0, 4, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
        for i, k in enumerate(y.tolist()):
            r, c = divmod(k, 2)
            x[i, 0, r * 4:r * 4 + 4, c * 4:c * 4 + 4] += 150
        return x, y

    (xtr, ytr), (xte, yte) = split(512), split(256)
    (cache / "data").mkdir(parents=True)
    data = cache / "data" / "hostile-test.pt"
    torch.save({"name": "hostile", "source": "test", "x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte},
               data)
    srv, got, stop = _listener()
    old = {k: os.environ.get(k) for k in ("NASFORGE_CACHE", "NASFORGE_TEST_SECRET")}
    os.environ.update(NASFORGE_CACHE=str(cache), NASFORGE_TEST_SECRET=ENV_SECRET)
    w = {"store": str(run / "run.sqlite"), "secret": str(home / "secret.txt"), "canary": str(outside / "canary.txt"),
         "outside": str(outside), "port": srv.getsockname()[1], "token": TOKEN, "project": str(ROOT),
         "data": str(data), "store_hash": hashlib.sha256((run / "run.sqlite").read_bytes()).hexdigest()}
    yield w, got
    stop.set()
    srv.close()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def untouched(w: dict, got: list) -> None:
    """The world outside the sandbox is as it was."""
    assert hashlib.sha256(Path(w["store"]).read_bytes()).hexdigest() == w["store_hash"], "run store changed"
    assert Path(w["canary"]).read_text() == "canary"
    assert sorted(p.name for p in Path(w["outside"]).iterdir()) == ["canary.txt"]
    assert not Path(f"/tmp/nasforge-escape-{TOKEN}").exists()
    assert not Path(f"/root/nasforge-escape-{TOKEN}").exists()
    assert not list((ROOT / "mutator").glob(f"_evil_{TOKEN}*"))
    assert not got, "a candidate reached the listener on 127.0.0.1"


def worker_processes() -> set[int]:
    import psutil

    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True)}


def profile(pool, source: str, w: dict, timeout_s: float = 60) -> dict:
    from corpus.train import Recipe

    recipe = Recipe(epochs=4, batch_size=64, min_steps=0, crop=False, flip=False).to_dict()  # 32 steps
    from corpus.evaluator import call  # scored here: the labels never enter the sandbox

    return call(pool, {"source": source, "data_path": w["data"], "classes": 4, "class_name": None, "recipe": recipe,
                       "device": "cpu"}, timeout_s)


@contextlib.contextmanager
def mode_env(mode: str):
    """NASFORGE_NO_NAMESPACES=1 for a landlock pool while it starts (a pool's launcher is fixed then):
    set for a fixture's whole life, it leaked into the other module fixture's pools of other modes."""
    old = os.environ.pop("NASFORGE_NO_NAMESPACES", None)
    if mode == "landlock":
        os.environ["NASFORGE_NO_NAMESPACES"] = "1"
    try:
        yield
    finally:
        os.environ.pop("NASFORGE_NO_NAMESPACES", None)
        if old is not None:
            os.environ["NASFORGE_NO_NAMESPACES"] = old


@pytest.fixture(scope="module", params=MODES)
def pool(request, world):
    with mode_env(request.param):
        p = WorkerPool(1, timeout_s=60, memory_mb=1800, isolate="namespaces" if request.param == "namespaces" else "none")
    try:
        assert p.containment["mode"] == {"namespaces": "bubblewrap", "none": p.containment["mode"],
                                         "landlock": "landlock"}[request.param]
        truth = profile(p, net(tag="truth"), world[0])
        assert truth["status"] == "ok", truth
        assert truth["accuracy"] > 0.5  # the control network learns the quadrant task
        yield p, truth["accuracy"], request.param
    finally:
        p.close()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_contained(pool, world, name):
    p, truth, mode = pool
    w, got = world
    assert p.isolated == (mode == "namespaces")
    steady = worker_processes()
    res = profile(p, net(ATTACKS[name], tag=name, world=w), w, timeout_s=8 if name == "hang" else 60)
    if name in EXPECT:
        assert res["status"] == EXPECT[name], res
    text = json.dumps(res)
    assert SECRET not in text, "a secret left through the result"  # home, environment
    assert "root:" not in text  # /etc/shadow
    assert res.get("device_name") != "FORGED-BY-CANDIDATE"
    control = profile(p, net(tag=f"after-{name}"), w)
    assert control["status"] == "ok" and control["accuracy"] == truth, (control, truth)
    assert control.get("device_name") != "FORGED-BY-CANDIDATE"
    untouched(w, got)
    assert worker_processes() <= steady, "a candidate's process survived its request"


# ---- the same attacks through the commands a user runs -------------------------------------------

SEQ_SERVER = textwrap.dedent('''
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    ANSWERS = json.load(open(sys.argv[2]))
    LOG = sys.argv[3]
    class H(BaseHTTPRequestHandler):
        n = 0
        def log_message(self, *a): pass
        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def do_GET(self):
            self._send({"data": [{"id": "scripted"}]})
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            open(LOG, "ab").write(body + b"\\n")
            answer = ANSWERS[min(H.n, len(ANSWERS) - 1)]
            H.n += 1
            self._send({"choices": [{"message": {"role": "assistant", "content": answer}}]})
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')
FM = Path("/usr/share/datasets/fashion-mnist")
CLI_ATTACKS = ["truncate_store", "patch_eq", "forge", "secrets", "write_outside", "network", "daemon", "kill_parent"]


def fm_net(attack: str, tag: str, w: dict) -> str:
    """A Fashion-MNIST network (1x28x28, 10 classes) carrying an attack."""
    return net(attack, tag, w).replace("num_classes=4", "num_classes=10")


def _env(mode: str, home: str) -> dict:
    env = {"NASFORGE_TEST_SECRET": ENV_SECRET, "HOME": home, "NASFORGE_CACHE": REAL_CACHE}
    if mode == "landlock":
        env["NASFORGE_NO_NAMESPACES"] = "1"
    return env


# the Landlock-only fallback's containment is checked attack by attack (test_attack_is_contained, default run);
# this whole-run pass through search run repeats it at ~30 s: slow there
@pytest.mark.skipif(not FM.is_dir(), reason="needs dataset-fashion-mnist")
@pytest.mark.parametrize("mode", [CLI_MODES[0], pytest.param("landlock", marks=[NEEDS_LANDLOCK, pytest.mark.slow])])
def test_search_run_survives_hostile_llm_answers(tmp_path, world, mode):
    w, got = world
    out = tmp_path / "run"
    w = dict(w, store=str(out / "run.sqlite"))
    answers = []
    for name in CLI_ATTACKS:
        answers.append(f"```python\n{fm_net(ATTACKS[name], name, w)}```")
        answers.append(f"```python\n{fm_net('', 'control-after-' + name, w)}```")
    seed = tmp_path / "seed.py"
    seed.write_text(fm_net("", "seed", w))
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    (tmp_path / "server.py").write_text(SEQ_SERVER)
    port = free_port()
    log = tmp_path / "requests.log"
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port), str(tmp_path / "answers.json"),
                               str(log)])
    env = _env(mode, str(Path(w["secret"]).parent))
    try:
        time.sleep(1.0)
        res = run_module("search", "run", "--llm-url", f"http://127.0.0.1:{port}", "--llm", "scripted",
                         "--improver-llm", "rule", "--seed", seed, "--iterations", len(answers),
                         "--train-limit", 512, "--answer-format", "code", "--out", out, env=env, timeout=1200)
    finally:
        server.kill()
    assert res.returncode == 0, res.stderr[-3000:]
    from search.store import RunStore

    iters = RunStore(out, create=False).iterations()
    assert [r["it"] for r in iters] == list(range(len(answers))), "the store lost iterations"
    controls = [r for r in iters if "control-after" in r["code"]]
    accs = {r["metrics"]["accuracy"] for r in controls if r["status"] == "ok"}
    # every control is the seed's network: identical training, identical true accuracy
    seed_row = RunStore(out, create=False).meta("seed_row")
    assert [r["status"] for r in controls] == ["ok"] * len(CLI_ATTACKS), [(r["status"], r["error"]) for r in controls]
    assert accs == {seed_row["accuracy"]}, (accs, seed_row["accuracy"])
    stored = (out / "run.sqlite").read_bytes() + log.read_bytes()
    assert SECRET.encode() not in stored, "a secret reached the run store or a prompt"
    assert all((r["metrics"] or {}).get("device_name") != "FORGED-BY-CANDIDATE" for r in iters)
    untouched(dict(w, store=world[0]["store"]), got)


@pytest.mark.parametrize("mode", CLI_MODES)
def test_mutator_generate_and_corpus_profile_contain_a_hostile_seed(tmp_path, world, mode):
    w, got = world
    attack = "\n".join(f"try:\n{textwrap.indent(textwrap.dedent(ATTACKS[n]).strip(), '    ')}\nexcept BaseException:\n"
                       f"    pass" for n in ["truncate_store", "patch_eq", "write_outside", "network", "daemon",
                                            "remount"])  # (a forging seed only sabotages its own analysis)
    seed = tmp_path / "hostile.py"
    seed.write_text(net(attack, "kitchen-sink", w))
    env = _env(mode, str(Path(w["secret"]).parent))
    env["NASFORGE_CACHE"] = str(Path(w["data"]).parents[1])
    before = worker_processes()
    res = run_module("mutator", "generate", "--seed", seed, "--num", 3, "--in-shape", "1,1,8,8", "--classes", 4,
                     "--out", tmp_path / "variants", env=env, timeout=600)
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == 0, res.stderr[-2000:]
    assert len((tmp_path / "variants" / "manifest.jsonl").read_text().splitlines()) >= 1  # width 8 -> 16
    untouched(w, got)
    if FM.is_dir():
        seed.write_text(fm_net(attack + "\n" + textwrap.dedent(ATTACKS["secrets"]).strip(), "kitchen-sink", w))
        env["NASFORGE_CACHE"] = REAL_CACHE
        res = run_module("corpus", "profile", seed, "--dataset", "fashion-mnist", "--train-limit", 256, env=env,
                         timeout=600)
        assert "Traceback" not in res.stderr, res.stderr[-2000:]
        row = json.loads(res.stdout)
        assert row["status"] != "ok" and "RuntimeError" in row["error"] and SECRET not in res.stdout
        untouched(w, got)
    assert worker_processes() <= before


# ---- memory, state and resources that the first limits did not see (issue 28) -------------------

SMALL_MB, SMALL_SCRATCH_MB = 900, 300  # RLIMIT_AS needs room for torch's ~700 MB of address space
SMALL_TASKS = 48  # processes and threads (the default is 256 and more: forking that many copies of torch is slow)


def small(body: str) -> str:
    """A tiny model whose constructor runs `body` (validated, not trained: seconds per candidate)."""
    return textwrap.dedent("""
        import os, sys, time, socket, ctypes, json, threading
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self, num_classes=4):
                super().__init__()
        {body}
                self.fc = nn.Linear(1, num_classes)

            def forward(self, x):
                return self.fc(x.mean((1, 2, 3)).unsqueeze(1))
        """).format(body=textwrap.indent(textwrap.dedent(body).strip(), " " * 8))


def check(pool, source: str, timeout_s: float = 30) -> dict:
    return pool.call("mutator.analysis:validate", {"source": source, "spec": {"in_shape": [1, 1, 8, 8], "classes": 4,
                                                                             "class_name": None}}, timeout_s)


def _pool(mode: str, **kw) -> WorkerPool:
    return WorkerPool(1, timeout_s=30, memory_mb=SMALL_MB, scratch_mb=SMALL_SCRATCH_MB, max_tasks=SMALL_TASKS,
                      isolate="namespaces" if mode == "namespaces" else "none", **kw)


@pytest.fixture(scope="module", params=MODES)
def small_pool(request):
    with mode_env(request.param):
        p = _pool(request.param)
    try:
        assert check(p, small("pass"))["status"] == "ok"
        yield p, request.param
    finally:
        p.close()


MEMFD = """
fds = []
for i in range(3):  # 3 x 290 MB (each under RLIMIT_FSIZE), written, never mapped: RLIMIT_AS and PSS see none of it
    fd = os.memfd_create(f'hoard{i}')
    block = b'x' * (1 << 20)
    for _ in range(290):
        os.write(fd, block)
    fds.append(fd)
time.sleep(3)
"""


def test_memory_files_are_denied_or_counted(small_pool):
    p, mode = small_pool
    res = check(p, small(MEMFD))
    assert res["status"] != "ok", res  # was ok: 870 MB of files and the process's own memory, under a 900 MB limit
    assert res["status"] == "oom" or "PermissionError" in res["error"], res
    assert check(p, small("pass"))["status"] == "ok"


def test_the_watchdog_counts_memory_files_without_the_filter(monkeypatch):
    """Where the seccomp filter cannot be installed memfd works: the watchdog then counts its size."""
    monkeypatch.setenv("NASFORGE_NO_SECCOMP", "1")
    with _pool("none") as p:
        assert not p.containment["seccomp"] and "shared_state" in p.containment["not_contained"]
        res = check(p, small(MEMFD))
        assert res["status"] == "oom" and "memory files" in res["error"], res
        assert check(p, small("pass"))["status"] == "ok"


SHM = """
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shm = libc.shmget({key}, 1 << 20, {flags})
if shm < 0:
    raise OSError(ctypes.get_errno(), 'shmget')
addr = libc.shmat(shm, None, 0)
{act}
"""


def _host_segments(key: int) -> list[int]:
    """Ids of the host's SysV segments with this key (/proc/sysvipc/shm: key, shmid, ...)."""
    rows = [ln.split() for ln in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
    return [int(r[1]) for r in rows if int(r[0]) == key]


def test_sysv_shared_memory_neither_outlives_nor_carries(small_pool):
    p, mode = small_pool
    key = int(TOKEN[:7], 16)
    secret = f"carried-{TOKEN}"
    try:
        writer = check(p, small(SHM.format(key=key, flags=0o1600, act=f"ctypes.memmove(addr, {secret.encode()!r}, "
                                                                        f"{len(secret)})")))
        assert writer["status"] != "ok" and "Errno 1" in writer["error"], writer  # shmget: EPERM
        reader = check(p, small(SHM.format(key=key, flags=0, act=f"raise RuntimeError(ctypes.string_at(addr, "
                                                                 f"{len(secret)}))")))
        assert secret not in json.dumps(reader), "a SysV segment carried data to the next candidate"
        assert not _host_segments(key), "a SysV segment outlived its candidate on the host"
    finally:
        import ctypes

        for shmid in _host_segments(key):  # (never let a failed run leave one behind)
            ctypes.CDLL(None).shmctl(shmid, 0, None)


FILL = """
os.mkdir('full')
try:
    for i in range(40):  # 400 MB in 10 MB files, over the 300 MB scratch limit
        with open(f'full/f{i}', 'wb') as f:
            f.write(b'x' * (10 << 20))
finally:
    for path in ('full', '.'):  # fchmod: chmod by path is refused by the filter, by descriptor it is not
        fd = os.open(path, os.O_RDONLY)
        os.fchmod(fd, 0)
        os.close(fd)
    time.sleep(1)
"""
AFTER_FILL = """
st = os.statvfs('.')
used = (st.f_blocks - st.f_bfree) * st.f_frsize >> 20
with open('next.bin', 'wb') as f:
    f.write(b'y' * (200 << 20))  # fits in an emptied scratch folder, not beside a full one
if {tmpfs} and used > 50:
    raise RuntimeError(f'{{used}} MB of an earlier candidate left in scratch')
"""


def test_a_full_locked_scratch_folder_is_emptied(small_pool):
    p, mode = small_pool
    res = check(p, small(FILL))
    assert res["status"] != "ok", res  # ENOSPC on the tmpfs, or the watchdog's scratch limit on the host disk
    if mode == "landlock":
        assert res["status"] == "oom" and "scratch" in res["error"], res
    worker = p._all[0]
    if worker.host_scratch:
        assert os.listdir(worker.host_scratch) == [], "the candidate's scratch folder stayed behind"
    res = check(p, small(AFTER_FILL.format(tmpfs=mode != "landlock")))
    assert res["status"] == "ok", res


def _udp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    return s


NET_BEYOND_TCP = """
tried = []
for name, make, where, data in [
        ('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ('127.0.0.1', W['udp']), b'udp'),
        ('unix', lambda: socket.socket(socket.AF_UNIX), W['unix'], b'unix'),
        ('mptcp', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262), ('127.0.0.1', W['tcp']), b'mptcp'),
        ('unix-dgram-pair', lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0], W['unix_dgram'], b'pair')]:
    try:
        s = make()
        if name in ('udp', 'unix-dgram-pair'):
            s.sendto(data, where)
        else:
            s.settimeout(2)
            s.connect(where)
            s.sendall(data)
        tried.append(name + ':sent')
    except Exception as e:
        tried.append(name + ':' + type(e).__name__)
raise RuntimeError(' '.join(tried))
"""


def test_no_udp_unix_or_mptcp_to_the_host(small_pool, tmp_path):
    p, mode = small_pool
    udp = _udp_listener()
    unix_path, dgram_path = str(tmp_path / "listener.sock"), str(tmp_path / "dgram.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen(5)
    unix.settimeout(0.2)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(dgram_path)
    dgram.settimeout(0.2)
    tcp, got_tcp, stop = _listener()
    os.chmod(tmp_path, 0o777)  # uid 65534 in bubblewrap could not reach them anyway: not what is tested
    try:
        w = {"udp": udp.getsockname()[1], "unix": unix_path, "unix_dgram": dgram_path, "tcp": tcp.getsockname()[1]}
        res = check(p, small(f"W = {w!r}\n" + NET_BEYOND_TCP))
        got = []
        for s, recv in ((udp, lambda s: s.recvfrom(64)), (unix, lambda s: s.accept()), (dgram, lambda s: s.recv(64))):
            try:
                got.append(recv(s))
            except OSError:
                pass
        assert not got and not got_tcp, f"a candidate reached a host listener: {res.get('error')}"
        assert ":sent" not in res["error"], res
    finally:
        stop.set()
        for s in (udp, unix, dgram, tcp):
            s.close()


@pytest.mark.parametrize("what", ["processes", "threads"])
def test_process_count_is_bounded(small_pool, what):
    """RLIMIT_NPROC does not bind in a user namespace (and is the whole user's count without one)."""
    p, mode = small_pool
    steady = worker_processes()
    start = {"processes": "if os.fork() == 0:\n" + " " * 16 + "time.sleep(20)\n" + " " * 16 + "os._exit(0)",
             "threads": "threading.Thread(target=time.sleep, args=(20,), daemon=True).start()"}[what]
    body = f"""
    threading.stack_size(256 << 10)
    started = 0
    for _ in range({3 * SMALL_TASKS}):
        try:
            {start}
            started += 1
        except (OSError, RuntimeError):
            break
    time.sleep(2)
    raise RuntimeError(f'started={{started}}')
    """
    res = check(p, small(body))
    assert res["status"] == "crash" and "processes and threads" in res["error"], res  # was: started=144
    assert check(p, small("pass"))["status"] == "ok"
    assert worker_processes() <= steady, "a candidate's process survived its request"


def test_the_containment_report_says_what_each_mode_leaves_open(small_pool):
    p, mode = small_pool
    c = p.containment
    assert c["contained"]["shared_state"] and c["contained"]["network"], c
    if mode == "landlock":  # no PID namespace: every host process's command line is readable
        assert c["not_contained"] == ["processes"], c
        assert "command lines" in c["gaps"][0]
        res = check(p, small("raise RuntimeError(str(len(os.listdir('/proc/1'))) + open('/proc/1/cmdline').read())"))
        assert res["status"] != "ok" and "PermissionError" not in res["error"]  # as the report says: readable
    else:
        assert c["not_contained"] == [] and c["gaps"] == []


def test_gpu_workers_bound_host_memory_by_the_watchdog():
    """CUDA rules out RLIMIT_AS: a GPU worker's candidates are still held to memory_mb by the watchdog."""
    with WorkerPool(1, timeout_s=30, memory_mb=SMALL_MB, isolate="none", gpu=True) as p:
        res = check(p, small("import resource\nassert resource.getrlimit(resource.RLIMIT_AS)[0] == "
                             "resource.RLIM_INFINITY\nb = bytearray(1200 << 20)\n"
                             "for i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(5)"))
        assert res["status"] == "oom" and "together" in res["error"], res
        assert check(p, small("pass"))["status"] == "ok"


def test_gpu_candidates_get_a_share_of_the_device(monkeypatch):
    import torch

    from mutator.worker import cap_device_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i)))
    assert cap_device_memory({"gpu": True, "gpu_memory_fraction": 0.45}) == 0.45
    assert calls == [(0.45, 0), (0.45, 1)]
    assert cap_device_memory({"gpu": False, "gpu_memory_fraction": 0.45}) is None and len(calls) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cap_device_memory({"gpu": True, "gpu_memory_fraction": 0.45}) is None and len(calls) == 2


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_a_gpu_candidate_over_its_device_share_is_out_of_memory():
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    with WorkerPool(1, timeout_s=60, memory_mb=8192, isolate="auto", gpu=True, gpu_memory_fraction=0.1) as p:
        res = check(p, small(f"import torch\nx = torch.empty({int(total * 0.2)}, dtype=torch.uint8, device='cuda')"),
                    timeout_s=60)
        assert res["status"] != "ok" and "out of memory" in res["error"].lower(), res
        assert check(p, small("pass"))["status"] == "ok"


def test_scratch_behind_chmod_000_still_counts(small_pool):
    """Files held open in a scratch folder the candidate made unreadable: the walk cannot see them, the
    watchdog's look at open descriptors does (Landlock only: elsewhere scratch is a tmpfs counted whole)."""
    p, mode = small_pool
    if mode != "landlock":
        pytest.skip("scratch is a size-limited tmpfs in the namespace modes")
    body = """
    files = [open(f'f{i}', 'wb') for i in range(2)]
    fd = os.open('.', os.O_RDONLY)
    os.fchmod(fd, 0)
    for f in files:  # 2 x 200 MB, over the 300 MB scratch limit, each under RLIMIT_FSIZE
        for _ in range(200):
            f.write(b'x' * (1 << 20))
        f.flush()
    time.sleep(3)
    """
    res = check(p, small(body))
    assert res["status"] == "oom" and "scratch" in res["error"], res
    assert os.listdir(p._all[0].host_scratch) == []
