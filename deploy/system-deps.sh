#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real: prometheus and promtool
# (the alert rules, the stack test), chromium (the report test), curl (deploy/stack.sh)
# and, unless the Docker CLI's compose plugin is there, docker-compose (v1) to validate
# deploy/docker-compose.yml.
set -euo pipefail
need=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  need+=(docker-compose)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${need[*]}: run 'sudo apt-get install -y ${need[*]}'" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
