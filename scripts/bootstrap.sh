#!/usr/bin/env bash
# Prepares a fresh Debian machine for `make test` / `make demo`: the system tools the
# sandbox and its tests drive, then a virtual environment with grantbox and its locked
# development dependencies. Safe to run again; it only adds what is missing.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Debian packages the sandbox and its tests use (curl and wget run inside sandboxes - wget as
# a second program for binary-scoped policy tests; util-linux's setpriv/unshare and
# iproute2's ip drive and inspect the namespaces; libseccomp2 builds the agent's seccomp
# filter; uidmap's newuidmap/newgidmap give rootless agents a subordinate uid; PostgreSQL
# backs the store tests; runc and containers-common's default seccomp profile run the
# sandbox Pod as a kubelet would; gcc and libc6-dev let scripts/peers.sh build SPIRE with cgo
# for SQLite, Maven and Java 17 fetch and run Keycloak; Go itself comes with the machine).
# Installed only when missing and only when we are root; otherwise we say what is missing.
packages=(curl wget iproute2 util-linux ca-certificates libseccomp2 uidmap postgresql
          runc golang-github-containers-common gcc libc6-dev maven openjdk-17-jre-headless)
command -v kubectl >/dev/null || packages+=(kubernetes-client)  # `kubectl kustomize` in tests
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages: ${missing[*]} (install them as root; tests that need them will skip)" >&2
  fi
fi

pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "${pip[@]}" install --upgrade pip
fi
# The exact, hash-checked versions of every dependency (all extras: the tests drive the
# Kubernetes driver and PostgreSQL) come from constraints.txt (`make lock` writes it); then
# grantbox itself, editable and without resolving anything, and a check that the two agree.
echo "bootstrap: installing grantbox and its locked dependencies into $VENV"
"${pip[@]}" install --require-hashes --no-deps -r constraints.txt
"${pip[@]}" install --no-deps -e .
if ! "${pip[@]}" check >/dev/null; then
  "${pip[@]}" check >&2 || true
  echo "bootstrap: constraints.txt does not satisfy pyproject.toml; run 'make lock'" >&2
  exit 1
fi
