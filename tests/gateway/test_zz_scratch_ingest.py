"""SCRATCH (not committed): gateway CPU per shipped event over real HTTP."""
import os, time, subprocess, sys, json, threading
import orjson, httpx, pytest
from grantbox.proxy import event_json
from tests.support.gateway_server import grant_profile

def test_ingest(server, gw, driver, tmp_path):
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha", path="/a/**")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    gw.ok("sandbox", "create", "--name", "box-a", "--provider", "pa")
    [a] = driver.created
    ev = json.loads(open("/tmp/sample_event.json").read())
    line = event_json(ev)
    body = b'{"events":[' + b",".join([line] * 1000) + b"]}"
    url = f"{server.url}/api/v1/supervisor/sandboxes/{a.sandbox_id}/events"
    headers = {"Authorization": f"Bearer {a.supervisor_token}", "Content-Type": "application/json"}
    from grantbox.heap import settle; settle()
    gw_thread = [t for t in threading.enumerate() if t.name == "grantbox-gateway"][0]
    def thread_cpu(tid):
        f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    tids = [int(x) for x in os.listdir("/proc/self/task")]
    with httpx.Client() as c:
        for _ in range(5): c.post(url, content=body, headers=headers).raise_for_status()
        n = int(os.environ.get("N", "100"))
        before = {t: thread_cpu(t) for t in os.listdir("/proc/self/task")}
        me = threading.get_native_id()
        for _ in range(n): c.post(url, content=body, headers=headers).raise_for_status()
        after = {t: thread_cpu(t) for t in os.listdir("/proc/self/task")}
    per = {t: 1e6 * (after[t] - before.get(t, 0)) / (n * 1000) for t in after}
    loop = gw_thread.native_id
    total = sum(v for t, v in per.items() if int(t) != me)
    print(f"\nINGEST server {total:.2f} µs/event (loop thread {per[str(loop)]:.2f}, others {total - per[str(loop)]:.2f}); client {per[str(me)]:.2f}")
