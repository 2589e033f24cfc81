"""The node simulator of the FAKE Kubernetes API server (tests only, not a kubelet).

One node, `fake-node` (host IP 127.0.0.1). For every pod created, as the scheduler and kubelet
would, in steps that each show up as a MODIFIED watch event:

1. Scheduling: requests (or limits where no request is given) are checked against the node's
   allocatable cpu and memory, less what the node's other live pods request; extended resources
   (`nvidia.com/gpu`, ...) are absent from the node. Unschedulable pods stay Pending with
   condition PodScheduled False, reason Unschedulable and the scheduler's message, and are
   re-checked every two seconds. Otherwise spec.nodeName is set and the pod gets its own
   loopback address 127.0.0.N as pod IP (the sandbox's IP, like CNI gives it before any pull).
2. Image: an invalid reference waits with InvalidImageName; an image the node does not know
   waits with ErrImagePull, then ImagePullBackOff, alternating with a growing back-off, as
   kubelet does. Known images are "present on the machine".
3. Container: the image's program runs as a local process in its own process group, with the
   container's env (plus `FAKE_POD_IP`, `FAKE_POD_DIR`), its workingDir when that exists here,
   stdout/stderr to the pod log (GET .../pods/NAME/log). Phase Running, container running.
4. Exit: container terminated (exit code, reason Completed or Error), phase Succeeded or Failed
   (restartPolicy is not simulated: every pod behaves as restartPolicy Never).
5. Deletion: with grace period 0 the process group is killed (SIGKILL) at once; otherwise it
   gets SIGTERM, then SIGKILL when the grace period ends, and the pod object goes away once the
   processes are gone.

What the programs are (set with --images):
- `launcher`: tests/fake-k8s/kernel_launcher.py, this project's in-pod kernel launcher;
- `upstream`: upstream Enterprise Gateway's own bootstrap-kernel.sh and launch_ipykernel.py
  from the unpacked source distribution, with `python` being the system python;
- `sleep`: a container that runs until it is killed.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import validation

HERE = Path(__file__).resolve().parent
NODE_NAME = "fake-node"
HOST_IP = "127.0.0.1"
BASE_RESOURCES = {"cpu", "memory", "ephemeral-storage", "pods"}
PATH_DEFAULT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ImageRule:
    def __init__(self, image: str | None, run: str, suffix: str | None = None):
        self.suffix, self.run = suffix, run
        self.ref = validation.parse_image(image) if image else None
        if image and self.ref is None:
            raise ValueError(f"--images: invalid image reference {image!r}")
        last = (image or "").rsplit("/", 1)[-1]
        self.exact = bool(image) and (":" in last or "@" in (image or ""))

    def matches(self, ref: validation.ImageRef) -> bool:
        if self.suffix is not None:
            return ref.path.endswith(self.suffix)
        if self.ref.repository != ref.repository:
            return False
        return not self.exact or (self.ref.tag, self.ref.digest) == (ref.tag, ref.digest)


def default_run(image: str) -> str:
    ref = validation.parse_image(image)
    path = ref.path if ref else image
    if path.endswith("kernel-py-upstream"):
        return "upstream"
    if path.endswith("kernel-py"):
        return "launcher"
    return "sleep"


def load_images(spec: str | None) -> list[ImageRule]:
    """--images: a JSON file holding a list of "repo[:tag]" strings and {"image" or "suffix",
    "run"} objects (a suffix matches every repository path ending in it, any registry and tag),
    or a comma-separated list of references; none: the kernel-py suffix rules."""
    if not spec:
        return [ImageRule(None, "upstream", "kernel-py-upstream"), ImageRule(None, "launcher", "kernel-py")]
    if os.path.isfile(spec):
        entries = json.loads(Path(spec).read_text())
        if isinstance(entries, dict):
            entries = entries.get("images", [])
    else:
        entries = [s.strip() for s in spec.split(",") if s.strip()]
    rules = []
    for e in entries:
        if isinstance(e, str):
            rules.append(ImageRule(e, default_run(e)))
            continue
        if not isinstance(e, dict) or bool(e.get("image")) == bool(e.get("suffix")):
            raise ValueError(f"--images: {e!r}: give either image or suffix")
        run = e.get("run") or default_run(e.get("image") or e["suffix"])
        if run not in ("launcher", "upstream", "sleep"):
            raise ValueError(f"--images: {e!r}: run must be launcher, upstream or sleep, not {run!r}")
        rules.append(ImageRule(e.get("image"), run, e.get("suffix")))
    return rules


def _pdeathsig():
    """Child side of fork: die with the thread that started us (the pod's worker)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class PodRuntime:
    def __init__(self, ns: str, name: str, uid: str):
        self.ns, self.name, self.uid = ns, name, uid
        self.ip: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.stop = threading.Event()  # deletion requested
        self.grace = 0.0
        self.started_at: str | None = None
        self.group_gone = False
        self.container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex


class Node:
    def __init__(self, api, args):
        self.api, self.args = api, args
        self.lock = threading.Lock()
        self.pods: dict[tuple, PodRuntime] = {}
        self.ips: set[str] = set()
        self.images = load_images(args.images)
        self.allocatable = {
            "cpu": validation.parse_quantity(args.node_cpu),
            "memory": validation.parse_quantity(args.node_memory),
        }
        probe = socket.socket()
        try:  # pods live on 127.0.0.2 upwards: the whole of 127/8 must be bindable here
            probe.bind(("127.0.0.2", 0))
        except OSError as e:
            raise SystemExit(f"fake node: cannot bind 127.0.0.2, so pods cannot get their own IPs: {e}")
        finally:
            probe.close()
        self.dir = args.state_dir / "pods"
        self.shim = args.state_dir / "image-bin"
        self.shim.mkdir(parents=True, exist_ok=True)
        python = self.shim / "python"
        if not python.exists():
            python.symlink_to(args.python)

    # -- called by the API server ----------------------------------------------------------

    def pod_created(self, ns, name, uid):
        pod = self.api.store.get(self.api.res("pods"), ns, name)
        if pod is None or pod["metadata"]["uid"] != uid:  # deleted already
            return
        rt = PodRuntime(ns, name, uid)
        with self.lock:
            self.pods[(ns, name)] = rt
        threading.Thread(target=self._run, args=(rt,), daemon=True, name=f"pod-{ns}/{name}").start()

    def has_process(self, ns, name) -> bool:
        with self.lock:
            rt = self.pods.get((ns, name))
        return bool(rt and rt.proc and rt.proc.poll() is None)

    def terminate(self, ns, name, grace):
        """Graceful deletion: SIGTERM now, SIGKILL after `grace` s; the worker then reports."""
        with self.lock:
            rt = self.pods.get((ns, name))
        if rt is None:
            self.api.pod_terminated(ns, name)
            return
        rt.grace = grace
        rt.stop.set()

    def kill(self, ns, name):
        """Forced deletion: the pod object is already gone; kill its processes now."""
        with self.lock:
            rt = self.pods.pop((ns, name), None)
        if rt is None:
            return
        rt.grace = 0
        rt.stop.set()
        self._killpg(rt, signal.SIGKILL)
        self._release(rt)

    def logs(self, ns, name, pod) -> str:
        with self.lock:
            rt = self.pods.get((ns, name))
        if rt and rt.log_path and rt.log_path.exists():
            return rt.log_path.read_text(errors="replace")
        return ""

    def snapshot(self) -> dict:
        with self.lock:
            return {
                f"{rt.ns}/{rt.name}": {
                    "uid": rt.uid,
                    "ip": rt.ip,
                    "pid": rt.proc.pid if rt.proc else None,
                    "running": bool(rt.proc and rt.proc.poll() is None),
                }
                for rt in self.pods.values()
            }

    def shutdown(self):
        with self.lock:
            pods = list(self.pods.values())
        for rt in pods:
            rt.stop.set()
            self._killpg(rt, signal.SIGKILL)

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _killpg(rt: PodRuntime, sig):
        if rt.proc and not rt.group_gone:
            try:
                os.killpg(rt.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _release(self, rt: PodRuntime):
        with self.lock:
            if rt.ip:
                self.ips.discard(rt.ip)
            if self.pods.get((rt.ns, rt.name)) is rt:
                del self.pods[(rt.ns, rt.name)]

    def _allocate_ip(self) -> str:
        with self.lock:
            for n in range(2, 256 * 254):
                ip = f"127.0.{n // 254}.{n % 254 + 1}" if n >= 254 else f"127.0.0.{n}"
                if ip not in self.ips and not ip.endswith(".255"):
                    self.ips.add(ip)
                    return ip
        raise RuntimeError("no free pod IP")

    def _update(self, rt: PodRuntime, fn):
        """Changes the pod if it is still this pod (same uid). Returns the new pod or None."""

        def guarded(pod):
            if pod["metadata"]["uid"] != rt.uid:
                return False
            return fn(pod)

        pod = self.api.store.replace(self.api.res("pods"), rt.ns, rt.name, guarded)
        if pod is None or pod["metadata"]["uid"] != rt.uid:
            return None
        return pod

    def _alive(self, rt) -> bool:
        pod = self.api.store.get(self.api.res("pods"), rt.ns, rt.name)
        return pod is not None and pod["metadata"]["uid"] == rt.uid

    def _event(self, rt, reason, message, type_="Normal", component="kubelet"):
        pod = self.api.store.get(self.api.res("pods"), rt.ns, rt.name)
        ns = self.api.store.get(self.api.res("namespaces"), "", rt.ns)
        if pod is None or ns is None or ns["status"].get("phase") != "Active":
            return
        ts = now()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{rt.name}.{uuid.uuid4().hex[:16]}",
                "namespace": rt.ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": ts,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": rt.name,
                "namespace": rt.ns,
                "uid": rt.uid,
                "resourceVersion": pod["metadata"]["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "source": {"component": component} | ({"host": NODE_NAME} if component == "kubelet" else {}),
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "type": type_,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME if component == "kubelet" else "",
        }
        try:
            self.api.store.insert(self.api.res("events"), rt.ns, ev)
        except Exception:  # noqa: BLE001 - events are best effort, as in a real cluster
            pass

    # -- scheduling ------------------------------------------------------------------------

    @staticmethod
    def _requests(pod) -> dict:
        total = {}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            asked = dict(res.get("limits") or {})
            asked.update(res.get("requests") or {})
            for k, v in asked.items():
                total[k] = total.get(k, Decimal(0)) + (validation.parse_quantity(v) or Decimal(0))
        return total

    def _insufficient(self, pod) -> list[str]:
        want = self._requests(pod)
        used = {"cpu": Decimal(0), "memory": Decimal(0)}
        for other in self.api.store.items(self.api.res("pods"), None):
            if other["metadata"]["uid"] == pod["metadata"]["uid"]:
                continue
            if other["spec"].get("nodeName") != NODE_NAME or other["status"].get("phase") in (
                "Succeeded",
                "Failed",
            ):
                continue
            for k, v in self._requests(other).items():
                if k in used:
                    used[k] += v
        short = []
        for k, v in sorted(want.items()):
            if v <= 0:
                continue
            if k in self.allocatable:
                if used[k] + v > self.allocatable[k]:
                    short.append(k)
            elif k not in BASE_RESOURCES:
                short.append(k)
        return short

    def _schedule(self, rt) -> bool:
        last_msg = None
        while not rt.stop.is_set():
            pod = self.api.store.get(self.api.res("pods"), rt.ns, rt.name)
            if pod is None or pod["metadata"]["uid"] != rt.uid:
                return False
            short = self._insufficient(pod)
            if not short:
                break
            reasons = ", ".join(f"1 Insufficient {k}" for k in short)
            msg = (
                f"0/1 nodes are available: {reasons}. preemption: 0/1 nodes are available: "
                "1 No preemption victims found for incoming pod."
            )
            if msg != last_msg:

                def unschedulable(p, msg=msg):
                    p["status"]["conditions"] = [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "lastProbeTime": None,
                            "lastTransitionTime": now(),
                            "reason": "Unschedulable",
                            "message": msg,
                        }
                    ]

                self._update(rt, unschedulable)
                self._event(rt, "FailedScheduling", msg, "Warning", "default-scheduler")
                last_msg = msg
            rt.stop.wait(2.0)
        if rt.stop.is_set():
            return False

        def bind(p):
            p["spec"]["nodeName"] = NODE_NAME
            p["status"]["conditions"] = [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now()}
            ]

        if self._update(rt, bind) is None:
            return False
        self._event(
            rt,
            "Scheduled",
            f"Successfully assigned {rt.ns}/{rt.name} to {NODE_NAME}",
            component="default-scheduler",
        )
        return True

    # -- the pod's life ----------------------------------------------------------------------

    def _container_status(self, pod, state, ready=False, started=False, image_id="", restart_count=0):
        c = pod["spec"]["containers"][0]
        status = {
            "name": c["name"],
            "image": c["image"],
            "imageID": image_id,
            "ready": ready,
            "restartCount": restart_count,
            "started": started,
            "state": state,
            "lastState": {},
        }
        return status

    def _conditions(self, pod, ready: bool, reason: str | None = None, containers=None):
        ts = now()
        names = ", ".join(c["name"] for c in pod["spec"]["containers"])
        not_ready = {
            "reason": reason or "ContainersNotReady",
            "message": f"containers with unready status: [{names}]",
        }
        conds = [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            },
            {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": ts},
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            },
            {
                "type": "ContainersReady",
                "status": "True" if ready else "False",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            },
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": ts},
        ]
        if not ready:
            conds[2].update(not_ready)
            conds[3].update(not_ready)
        old = {c["type"]: c for c in pod["status"].get("conditions") or []}
        for c in conds:  # a condition keeps its transition time while its status stays
            prev = old.get(c["type"])
            if prev and prev.get("status") == c["status"]:
                c["lastTransitionTime"] = prev.get("lastTransitionTime", ts)
        return conds

    def _set_waiting(self, rt, reason, message):
        def waiting(p):
            p["status"]["conditions"] = self._conditions(p, False)
            state = {"waiting": {"reason": reason, "message": message}}
            p["status"]["containerStatuses"] = [self._container_status(p, state)]

        return self._update(rt, waiting)

    def _run(self, rt: PodRuntime):
        try:
            self._run_pod(rt)
        finally:
            if rt.stop.is_set():
                self._finish_deletion(rt)

    def _run_pod(self, rt: PodRuntime):
        if not self._schedule(rt):
            return
        delay = self.api.faults.snapshot()["pod_start_delay"]
        if delay and rt.stop.wait(delay):
            return
        rt.ip = self._allocate_ip()

        def sandbox(p):
            p["status"].update(
                hostIP=HOST_IP,
                hostIPs=[{"ip": HOST_IP}],
                podIP=rt.ip,
                podIPs=[{"ip": rt.ip}],
                startTime=now(),
            )
            p["status"]["conditions"] = self._conditions(p, False)
            p["status"]["containerStatuses"] = [
                self._container_status(p, {"waiting": {"reason": "ContainerCreating"}})
            ]

        pod = self._update(rt, sandbox)
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        image = container["image"]
        ref = validation.parse_image(image)
        if ref is None:
            msg = f'Failed to apply default image tag "{image}": couldn\'t parse image name "{image}": invalid reference format'
            self._set_waiting(rt, "InvalidImageName", msg)
            self._event(rt, "InspectFailed", msg, "Warning")
            rt.stop.wait()
            return
        rule = next((r for r in self.images if r.matches(ref)), None)
        if rule is None:
            self._image_pull_loop(rt, image, ref)
            return
        self._event(rt, "Pulled", f'Container image "{image}" already present on machine')
        self._start(rt, pod, container, ref, rule)

    def _image_pull_loop(self, rt, image, ref):
        pull_err = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
            f'failed to resolve reference "{ref}": {ref}: not found'
        )
        backoff = self.args.image_backoff
        while not rt.stop.is_set():
            self._event(rt, "Pulling", f'Pulling image "{image}"')
            if self._set_waiting(rt, "ErrImagePull", pull_err) is None:
                return
            self._event(rt, "Failed", f'Failed to pull image "{image}": {pull_err}', "Warning")
            self._event(rt, "Failed", "Error: ErrImagePull", "Warning")
            if rt.stop.wait(backoff):
                return
            msg = f'Back-off pulling image "{image}": ErrImagePull: {pull_err}'
            if self._set_waiting(rt, "ImagePullBackOff", msg) is None:
                return
            self._event(rt, "BackOff", f'Back-off pulling image "{image}"')
            if rt.stop.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)

    def _command(self, rule, container) -> tuple[list[str], dict]:
        """The image's entrypoint and the env the image itself sets."""
        if rule.run == "launcher":
            return [self.args.python, str(HERE / "kernel_launcher.py")], {"KERNEL_LANGUAGE": "python"}
        if rule.run == "upstream":
            launchers = self.args.eg_src / "etc" / "kernel-launchers"
            return ["/bin/bash", str(launchers / "bootstrap" / "bootstrap-kernel.sh")], {
                "KERNEL_LANGUAGE": "python",
                "KERNEL_LAUNCHERS_DIR": str(launchers),
            }
        return ["/bin/sleep", "infinity"], {}

    def _env(self, pod, container, rt, image_env) -> dict:
        env = {"PATH": PATH_DEFAULT, "HOME": "/root", "HOSTNAME": rt.name}
        env.update(image_env)
        fields = {
            "metadata.name": rt.name,
            "metadata.namespace": rt.ns,
            "metadata.uid": rt.uid,
            "spec.nodeName": NODE_NAME,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": HOST_IP,
            "status.podIP": rt.ip,
        }
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif (e.get("valueFrom") or {}).get("fieldRef"):
                path = e["valueFrom"]["fieldRef"].get("fieldPath", "")
                if path in fields:
                    env[e["name"]] = fields[path]
            elif "valueFrom" not in e:
                env[e["name"]] = ""
        return env

    def _start(self, rt, pod, container, ref, rule):
        pod_dir = self.dir / rt.ns / rt.name / rt.uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        rt.log_path = pod_dir / "container.log"
        argv, image_env = self._command(rule, container)
        env = self._env(pod, container, rt, image_env)
        if rule.run == "upstream":
            env["PATH"] = f"{self.shim}:{env.get('PATH', PATH_DEFAULT)}"
        env["FAKE_POD_IP"] = rt.ip
        env["FAKE_POD_DIR"] = str(pod_dir)
        workdir = container.get("workingDir")
        cwd = workdir if workdir and os.path.isdir(workdir) else str(pod_dir)
        image_id = f"{ref.repository}@sha256:{hashlib.sha256(str(ref).encode()).hexdigest()}"
        with open(rt.log_path, "ab") as log:
            try:
                rt.proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_pdeathsig,
                )
            except OSError as e:
                msg = f"failed to create containerd task: failed to start: {e}"
                self._set_waiting(rt, "CreateContainerError", msg)
                self._event(rt, "Failed", f"Error: {msg}", "Warning")
                rt.stop.wait()
                return
        rt.started_at = now()

        def running(p):
            p["status"]["phase"] = "Running"
            p["status"]["conditions"] = self._conditions(p, True)
            cs = self._container_status(p, {"running": {"startedAt": rt.started_at}}, True, True, image_id)
            cs["containerID"] = rt.container_id
            p["status"]["containerStatuses"] = [cs]

        self._event(rt, "Created", f"Created container: {container['name']}")
        if self._update(rt, running) is None:
            self._killpg(rt, signal.SIGKILL)
        else:
            self._event(rt, "Started", f"Started container {container['name']}")
        self._wait_process(rt, image_id)

    def _wait_process(self, rt, image_id):
        proc = rt.proc
        while proc.poll() is None:
            if rt.stop.wait(0.1):
                self._killpg(rt, signal.SIGTERM if rt.grace > 0 else signal.SIGKILL)
                try:
                    proc.wait(timeout=rt.grace if rt.grace > 0 else 5)
                except subprocess.TimeoutExpired:
                    self._killpg(rt, signal.SIGKILL)
                    proc.wait()
        # The group may outlive its leader (a kernel whose launcher exited): kill the rest.
        self._killpg_rest(rt)
        code = proc.returncode
        exit_code = 128 - code if code < 0 else code
        finished = now()

        def terminated(p):
            p["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            p["status"]["conditions"] = self._conditions(p, False, "PodCompleted" if exit_code == 0 else None)
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": rt.started_at,
                    "finishedAt": finished,
                    "containerID": rt.container_id,
                }
            }
            cs = self._container_status(p, state, False, False, image_id)
            cs["containerID"] = rt.container_id
            p["status"]["containerStatuses"] = [cs]

        self._update(rt, terminated)

    @staticmethod
    def _killpg_rest(rt):
        try:
            os.killpg(rt.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rt.group_gone = True  # its pgid may be reused from now on

    def _finish_deletion(self, rt):
        """Graceful deletion done (or nothing ran): the pod object goes away."""
        self._release(rt)
        if self._alive(rt):
            self.api.pod_terminated(rt.ns, rt.name)
