#!/usr/bin/env python3
"""Generate deploy/prometheusrule.yaml from deploy/prometheus/rules.yml.

rules.yml is the one source of the alert rules; the PrometheusRule embeds the
same groups. Run without arguments to rewrite the file; with --check to fail
(exit 1) when the committed PrometheusRule differs from what this generates.
"""
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parents[2] / "deploy"
SOURCE = HERE / "prometheus" / "rules.yml"
TARGET = HERE / "prometheusrule.yaml"


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    # Multi-line strings (expressions) as literal blocks, like the source.
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


Dumper.add_representer(str, _str)


def generate() -> str:
    src = yaml.safe_load(SOURCE.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "bpfmap-exporter",
            "labels": {
                "app.kubernetes.io/name": "bpfmap-exporter",
                "app.kubernetes.io/component": "alerting",
                # Default ruleSelector label of kube-prometheus-stack; change
                # it to what your Prometheus resource selects.
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": src["groups"]},
    }
    header = (
        "# GENERATED from deploy/prometheus/rules.yml by scripts/py/gen_prometheusrule.py.\n"
        "# Do not edit: change rules.yml and re-run the generator\n"
        "# (scripts/check-deploy.sh fails when this file is stale).\n"
    )
    return header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000)


def main() -> int:
    text = generate()
    if sys.argv[1:] == ["--check"]:
        current = TARGET.read_text() if TARGET.exists() else ""
        same_groups = (
            current
            and yaml.safe_load(current)["spec"]["groups"]
            == yaml.safe_load(SOURCE.read_text())["groups"]
        )
        if current != text or not same_groups:
            print(
                f"{TARGET} is stale or differs from {SOURCE}: run scripts/py/gen_prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        print(f"{TARGET.name}: embeds the {len(yaml.safe_load(text)['spec']['groups'])} groups of rules.yml")
        return 0
    if sys.argv[1:]:
        print("usage: gen_prometheusrule.py [--check]", file=sys.stderr)
        return 2
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
