#!/usr/bin/env bash
# Regenerates the Kubernetes manifests that are derived from other files:
#   deploy/kubernetes/prometheusrule.yaml     <- prometheus/*.yml rule files
#   deploy/kubernetes/grafana-dashboards.yaml <- grafana/dashboards/*.json
# Run it after changing rules or dashboards and commit the result;
# `cargo test --test deploy` fails while they are out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_GENERATED=1 exec cargo test --test deploy -- \
  prometheusrule_is_generated_from_rule_files \
  dashboard_configmaps_are_generated_from_dashboards
