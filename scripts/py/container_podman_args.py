#!/usr/bin/env python3
"""Translate the exporter container of deploy/daemonset.yaml into podman flags.

    container_podman_args.py DAEMONSET IMAGE HOST_PORT

prints one JSON object:
    {"run": [podman run flags..., IMAGE, args...],
     "probe_path": "/healthz", "port": <port to scrape on 127.0.0.1>}

Every field of the pod spec, the container and its securityContext is either
translated or listed in IGNORED with the reason it does not change how the
process runs on a node. Any other field fails the run, so the DaemonSet and the
container test cannot drift apart silently.
"""
import json
import os
import socket
import sys

import yaml

# Fields with no effect on what the container can see or do on one node.
IGNORED_POD = {
    "serviceAccountName": "API identity; no token is mounted (see automountServiceAccountToken)",
    "priorityClassName": "scheduling",
    "tolerations": "scheduling",
    "nodeSelector": "scheduling",
    "affinity": "scheduling",
    "enableServiceLinks": "service env vars; the exporter reads none",
    "terminationGracePeriodSeconds": "the test stops the container itself",
}
IGNORED_CONTAINER = {
    "name": "label",
    "image": "replaced by the image under test",
    "imagePullPolicy": "the image under test is local",
    "ports": "translated from ports[].containerPort (publish on 127.0.0.1)",
    "readinessProbe": "polled by the test before the first scrape",
    "livenessProbe": "the test's scrapes are stricter",
}
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}


def fail(msg):
    sys.exit(f"container_podman_args: {msg}")


def find_container(doc):
    if doc.get("kind") != "DaemonSet":
        fail(f"expected a DaemonSet, got kind {doc.get('kind')!r}")
    pod = doc["spec"]["template"]["spec"]
    containers = pod.get("containers", [])
    if len(containers) != 1:
        fail(f"expected one container in the DaemonSet, found {len(containers)}")
    if pod.get("initContainers"):
        fail("initContainers are not translated: add them to scripts/py/container_podman_args.py")
    return pod, containers[0]


def main():
    path, image, host_port = sys.argv[1], sys.argv[2], sys.argv[3]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    if len(docs) != 1:
        fail(f"{path}: expected one document, found {len(docs)}")
    pod, c = find_container(docs[0])
    run = []
    handled = set()

    def take(obj, key, handled_set):
        """obj[key] (or None), recording that the field is translated."""
        handled_set.add(key)
        return obj.get(key)

    # Pod-level namespaces.
    if take(pod, "hostPID", handled):
        run.append("--pid=host")
    if take(pod, "hostIPC", handled):
        run.append("--ipc=host")
    host_network = take(pod, "hostNetwork", handled)
    if take(pod, "automountServiceAccountToken", handled):
        fail("automountServiceAccountToken: true mounts an API token; the container test has no API server")
    if take(pod, "securityContext", handled):
        fail("a pod-level securityContext is not translated: add it to scripts/py/container_podman_args.py")
    volumes = {v["name"]: v for v in take(pod, "volumes", handled) or []}
    handled.add("containers")
    for k in pod:
        if k not in handled and k not in IGNORED_POD:
            fail(f"pod spec field {k!r} of {path} is not translated into podman flags: "
                 "translate it in scripts/py/container_podman_args.py or list it in IGNORED_POD with a reason")

    chandled = set()
    ports = [p["containerPort"] for p in c.get("ports", [])]
    if host_network:
        run.append("--network=host")
    else:
        for p in ports:
            run.append(f"--publish=127.0.0.1:{host_port}:{p}")

    sc = take(c, "securityContext", chandled) or {}
    schandled = set()
    uid = take(sc, "runAsUser", schandled)
    gid = take(sc, "runAsGroup", schandled)
    if uid is not None:
        run.append(f"--user={uid}:{gid if gid is not None else uid}")
    if take(sc, "runAsNonRoot", schandled) and uid in (None, 0):
        fail("runAsNonRoot: true with uid 0 would not start")
    if take(sc, "privileged", schandled):
        run.append("--privileged")
    # Kubernetes: allowPrivilegeEscalation defaults to true unless privileged
    # is false and no CAP_SYS_ADMIN is added; false sets no_new_privs.
    ape = take(sc, "allowPrivilegeEscalation", schandled)
    if ape is False:
        run.append("--security-opt=no-new-privileges")
    elif ape is None:
        fail("securityContext.allowPrivilegeEscalation is unset: set it explicitly")
    if take(sc, "readOnlyRootFilesystem", schandled):
        # Kubernetes mounts no tmpfs on /tmp or /run; podman does by default.
        run += ["--read-only", "--read-only-tmpfs=false"]
    seccomp = take(sc, "seccompProfile", schandled) or {}
    stype = seccomp.get("type", "RuntimeDefault")
    if stype == "Unconfined":
        run.append("--security-opt=seccomp=unconfined")
    elif stype == "RuntimeDefault":
        pass  # podman's default profile
    else:
        fail(f"seccompProfile type {stype!r} is not translated (Localhost needs the profile file)")
    caps = take(sc, "capabilities", schandled) or {}
    for cap in caps.get("drop", []):
        run.append("--cap-drop=all" if cap == "ALL" else f"--cap-drop=CAP_{cap}")
    for cap in caps.get("add", []):
        run.append(f"--cap-add=CAP_{cap}")
    if set(caps) - {"add", "drop"}:
        fail(f"capabilities fields {sorted(set(caps) - {'add', 'drop'})} are not translated")
    for k in sc:
        if k not in schandled:
            fail(f"securityContext field {k!r} of {path} is not translated into podman flags: "
                 "translate it in scripts/py/container_podman_args.py")

    for m in take(c, "volumeMounts", chandled) or []:
        v = volumes.get(m["name"])
        if v is None:
            fail(f"volumeMount {m['name']!r} has no volume")
        if "hostPath" not in v:
            fail(f"volume {m['name']!r} is not a hostPath; only hostPath volumes are translated")
        hp = v["hostPath"]
        if hp.get("type") == "Directory" and not os.path.isdir(hp["path"]):
            fail(f"hostPath {hp['path']} (type Directory) does not exist on this host; the pod would not start")
        if m.get("subPath"):
            fail(f"volumeMount {m['name']!r}: subPath is not translated")
        opts = ["ro" if m.get("readOnly") else "rw", PROPAGATION[m.get("mountPropagation")]]
        run.append(f"--volume={hp['path']}:{m['mountPath']}:{','.join(opts)}")

    for e in take(c, "env", chandled) or []:
        if "value" in e:
            run.append(f"--env={e['name']}={e['value']}")
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            run.append(f"--env={e['name']}={socket.gethostname()}")
        else:
            fail(f"env {e['name']!r}: only value and fieldRef spec.nodeName are translated")

    res = take(c, "resources", chandled) or {}
    lim = res.get("limits", {})
    if "memory" in lim:
        mem = str(lim["memory"])
        for suf, mul in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
            if mem.endswith(suf):
                mem = str(int(mem[: -len(suf)]) * mul)
        run.append(f"--memory={mem}")
    if "cpu" in lim:
        cpu = str(lim["cpu"])
        cpus = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        run.append(f"--cpus={cpus}")

    command = take(c, "command", chandled)
    if command:
        run.append(f"--entrypoint={json.dumps(command)}")
    args = take(c, "args", chandled) or []
    for k in c:
        if k not in chandled and k not in IGNORED_CONTAINER:
            fail(f"container field {k!r} of {path} is not translated into podman flags: "
                 "translate it in scripts/py/container_podman_args.py or list it in IGNORED_CONTAINER with a reason")

    probe = c.get("readinessProbe", {}).get("httpGet")
    if not probe:
        fail("the container has no readinessProbe.httpGet; the test waits on it before the first scrape")
    port = probe["port"]
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        port = named[port]
    if port not in ports:
        fail(f"readinessProbe port {port} is not a containerPort")
    scrape_port = port if host_network else int(host_port)
    print(json.dumps({"run": run + [image] + args, "probe_path": probe["path"], "port": scrape_port}))


if __name__ == "__main__":
    main()
