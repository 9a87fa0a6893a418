#!/usr/bin/env python3
"""deploy/k8s: the kustomize base and its overlays render, validate against a current Kubernetes schema in
strict mode, and hang together.

Rendering: kustomize is no Debian or PyPI package, so the test carries a minimal renderer for the subset the
manifests use (resources, namespace, images, strategic-merge patches: maps merged, containers, initContainers,
volumes, volumeMounts, env and ports merged by name, other lists replaced). Where `kubectl kustomize` is on PATH
its output is compared with the minimal renderer's, object by object, so the two cannot drift.

  render:   base, small, large render; kubectl kustomize agrees (where present); every object, and
            secrets.example.yaml, passes `kubernetes-validate --strict` (a manifest with an unknown field is
            refused, so strict mode is on); the overlays differ from the base where they say so.
  coherent: the Service and the NetworkPolicy select the coordinator's pods; the coordinator is one replica
            with a PersistentVolumeClaim template, probes and resource requests; the agent DaemonSet uses host
            networking, asks for nvidia.com/gpu, has probes, mounts the ConfigMaps and Secrets that exist or are
            documented; the coordinator.yaml and agent.yaml inside the ConfigMaps run: a coordinator and an agent
            started with them (only paths and ports overridden) register.
"""
import copy
import os
import shutil
import subprocess
import sys

import yaml

from deploylib import ROOT, run_shipped_configs, skip
from testlib import run, run_cases

K8S = os.path.join(ROOT, "deploy/k8s")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
MERGE_BY_NAME = {"containers", "initContainers", "volumes", "volumeMounts", "env", "ports"}


def merge(base, patch, key=None):
    """Strategic merge, the subset used here: maps recursively, named lists by name, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_BY_NAME:
        out = [copy.deepcopy(b) for b in base]
        for p in patch:
            match = [i for i, b in enumerate(out) if b.get("name") == p.get("name")]
            if match:
                out[match[0]] = merge(out[match[0]], p)
            else:
                out.append(copy.deepcopy(p))
        return out
    return copy.deepcopy(patch)


def set_images(obj, images):
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = c["image"].partition(":")
        for img in images:
            if img["name"] == name:
                c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"


def render(directory):
    """The objects a kustomization directory renders to, keyed by (kind, name)."""
    k = yaml.safe_load(open(os.path.join(directory, "kustomization.yaml")))
    unknown = set(k) - {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    assert not unknown, f"{directory}: the minimal renderer does not know {sorted(unknown)}"
    objects = {}
    for res in k.get("resources", []):
        path = os.path.join(directory, res)
        if os.path.isdir(path):
            objects.update(render(path))
        else:
            for doc in yaml.safe_load_all(open(path)):
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    for p in k.get("patches", []):
        assert set(p) == {"path"}, f"{directory}: only `patches: - path:` is supported, got {p}"
        for doc in yaml.safe_load_all(open(os.path.join(directory, p["path"]))):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key in objects, f"{directory}/{p['path']} patches {key}, which the resources do not have"
            objects[key] = merge(objects[key], doc)
    for obj in objects.values():
        if k.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = k["namespace"]
        set_images(obj, k.get("images", []))
    return objects


def kubectl_render(directory):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    p = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"kubectl kustomize {directory}: {p.stderr}"
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(p.stdout) if d}


def validate(objects, tmp, name):
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump_all(list(objects), f)
    p = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", path], check=False)
    return p


def need_validator():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        skip("kubernetes-validate is not installed (scripts/requirements.txt; run scripts/setup.sh)")


def case_render(bindir, tmp):
    need_validator()
    rendered = {}
    for name, directory in [("base", "base"), ("small", "overlays/small"), ("large", "overlays/large")]:
        objects = render(os.path.join(K8S, directory))
        theirs = kubectl_render(os.path.join(K8S, directory))
        if theirs is None:
            print(f"{name}: kubectl is not on PATH; the minimal renderer's output alone is validated", flush=True)
        else:
            assert set(theirs) == set(objects), f"{name}: kubectl renders {sorted(theirs)}, we {sorted(objects)}"
            for key in objects:
                assert theirs[key] == objects[key], f"{name}: {key} differs from kubectl kustomize's:\n" \
                    f"{yaml.safe_dump(theirs[key])}\n---\n{yaml.safe_dump(objects[key])}"
        p = validate(objects.values(), tmp, name)
        assert p.returncode == 0, f"{name} does not validate: {p.stdout}{p.stderr}"
        rendered[name] = objects
        print(f"{name}: {len(objects)} objects render and validate (strict)", flush=True)
    secrets = list(yaml.safe_load_all(open(os.path.join(K8S, "secrets.example.yaml"))))
    p = validate(secrets, tmp, "secrets")
    assert p.returncode == 0, f"secrets.example.yaml does not validate: {p.stdout}{p.stderr}"
    broken = copy.deepcopy(rendered["small"][("DaemonSet", "anneal-agent")])
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    p = validate([broken], tmp, "broken")
    assert p.returncode != 0 and "imagePullPolice" in p.stdout + p.stderr, "strict validation let an unknown field by"

    def gpus(name):
        ds = rendered[name][("DaemonSet", "anneal-agent")]
        return ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]

    def storage(name):
        sts = rendered[name][("StatefulSet", "anneal-coordinator")]
        return sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]

    assert (gpus("small"), gpus("large")) == (4, 8), (gpus("small"), gpus("large"))
    assert (storage("small"), storage("large")) == ("10Gi", "200Gi"), (storage("small"), storage("large"))
    large_agent = rendered["large"][("DaemonSet", "anneal-agent")]["spec"]["template"]["spec"]
    assert large_agent["hostNetwork"] is True and len(large_agent["volumes"]) == 6, "a patch dropped base fields"


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def case_coherent(bindir, tmp):
    objects = render(os.path.join(K8S, "base"))
    sts = objects[("StatefulSet", "anneal-coordinator")]
    pod = sts["spec"]["template"]
    assert sts["spec"]["replicas"] == 1, "one coordinator per state directory"
    assert sts["spec"]["volumeClaimTemplates"], "the coordinator has no PersistentVolumeClaim"
    svc = objects[("Service", "anneal-coordinator")]
    assert labels_match(svc["spec"]["selector"], pod["metadata"]["labels"]), "the Service selects no coordinator"
    policy = objects[("NetworkPolicy", "anneal-coordinator")]
    assert labels_match(policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {7070, 7071}
    coord = pod["spec"]["containers"][0]
    assert coord["readinessProbe"] and coord["livenessProbe"] and coord["resources"]["requests"]
    ds = objects[("DaemonSet", "anneal-agent")]
    agent_pod = ds["spec"]["template"]["spec"]
    agent = agent_pod["containers"][0]
    assert agent_pod["hostNetwork"] and agent_pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert agent["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert agent["readinessProbe"] and agent["livenessProbe"] and agent["resources"]["requests"]
    documented = {d["metadata"]["name"] for d in yaml.safe_load_all(open(f"{K8S}/secrets.example.yaml"))}
    for spec in (pod["spec"], agent_pod):
        for v in spec["volumes"]:
            if "configMap" in v and v["configMap"]["name"] != "anneal-coordinator-public":
                assert ("ConfigMap", v["configMap"]["name"]) in objects, f"volume {v['name']}: no such ConfigMap"
            if "secret" in v:
                assert v["secret"]["secretName"] in documented, f"volume {v['name']}: undocumented Secret"
    # The configs inside the ConfigMaps run.
    for name, key in [("anneal-coordinator-config", "coordinator.yaml"), ("anneal-agent-config", "agent.yaml")]:
        with open(f"{tmp}/{key}", "w") as f:
            f.write(objects[("ConfigMap", name)]["data"][key])
    run_shipped_configs(bindir, f"{tmp}/coordinator.yaml", f"{tmp}/agent.yaml", tmp)
    print("base manifests are coherent; their daemon configs run", flush=True)


if __name__ == "__main__":
    run_cases({"render": case_render, "coherent": case_coherent}, binary_flag="--bindir")
