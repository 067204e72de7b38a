#!/usr/bin/env bash
# Builds or fetches the real peers the interop tests run against, from the package registries
# only, at pinned versions, into a git-ignored cache (default .cache/peers):
#
#   SPIRE       spire-server, spire-agent, oidc-discovery-provider   Go module proxy (peers/go/spire)
#   Helm        helm                                                 Go module proxy (peers/go/helm)
#   CRDs        spire-controller-manager's CRD schemas               Go module proxy (peers/go/crds)
#   spiffe-check  go-spiffe v2 test client                           Go module proxy (tests/interop/spiffe_check)
#   Keycloak    keycloak-quarkus-dist, pre-built for SPIFFE          Maven Central   (peers/keycloak/pom.xml)
#
# Each step is skipped when its stamp (a hash of the pinned inputs and the toolchain) matches,
# so a second run rebuilds and downloads nothing. Go's module and build caches and Maven's
# repository stay in their default places (~/go, ~/.cache/go-build, ~/.m2). The result is
# described in $CACHE/manifest.json, which tests/support/peers.py reads.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${GRANTBOX_PEERS_DIR:-$ROOT/.cache/peers}

SPIRE_VERSION=v1.13.3
HELM_VERSION=v3.21.4
GO_SPIFFE_VERSION=v2.9.0
CONTROLLER_MANAGER_VERSION=v0.6.3
KEYCLOAK_VERSION=$(sed -n 's|.*<keycloak.version>\(.*\)</keycloak.version>.*|\1|p' "$ROOT/peers/keycloak/pom.xml")
# Keycloak 26.6+ supports federated client authentication by default; SPIFFE is still preview.
# --cache=local: one node, no JGroups cluster listening beyond loopback.
KEYCLOAK_BUILD_OPTIONS=(--features=spiffe --db=dev-file --cache=local --health-enabled=true)

export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=1

say() { echo "peers: $*"; }
die() { echo "peers: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null || die "$1 is missing ($2); run scripts/bootstrap.sh as root or install it"
}
need go "Go 1.26 or newer"
need gcc "Debian package gcc, for SPIRE's cgo SQLite"
need java "Java 17, Debian package openjdk-17-jre-headless"
need mvn "Debian package maven"

mkdir -p "$CACHE/bin" "$CACHE/stamps"
exec 9>"$CACHE/.lock"
flock 9

hash_of() {  # hash_of FILE... -- WORD...: one hash over file contents and extra words
  local files=() words=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do files+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  words=("$@")
  { cat "${files[@]}"; printf '%s\n' "${words[@]}" "$(go version)"; } | sha256sum | cut -d' ' -f1
}

fresh() {  # fresh NAME HASH: the stamp matches and the outputs are there
  local name=$1 want=$2
  shift 2
  [ -f "$CACHE/stamps/$name" ] && [ "$(cat "$CACHE/stamps/$name")" = "$want" ] || return 1
  for out in "$@"; do [ -e "$out" ] || return 1; done
}

stamp() { echo "$2" >"$CACHE/stamps/$1"; }

# Runs one step: skipped when fresh, else timed, with one progress line either way.
step() {
  local name=$1 label=$2 hash=$3 fn=$4
  shift 4
  if fresh "$name" "$hash" "$@"; then
    say "$label: up to date"
    return
  fi
  say "$label: building (the first time takes a while) ..."
  local started=$SECONDS
  "$fn"
  stamp "$name" "$hash"
  say "$label: done in $((SECONDS - started)) s"
}

check_pin() {  # check_pin GO_MOD MODULE VERSION: go.mod really pins what this script claims
  grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2 $3( |$)" "$1" || die "$1 does not pin $2 $3"
}

SPIRE_MOD=$ROOT/peers/go/spire
SPIRE_LDFLAGS="-X github.com/spiffe/spire/pkg/common/version.gittag=${SPIRE_VERSION#v}"  # no "v": SPIRE parses it as semver
build_spire() {
  (cd "$SPIRE_MOD" && GOBIN="$CACHE/bin" go install -ldflags "$SPIRE_LDFLAGS" \
    github.com/spiffe/spire/cmd/spire-server \
    github.com/spiffe/spire/cmd/spire-agent \
    github.com/spiffe/spire/support/oidc-discovery-provider)
}
check_pin "$SPIRE_MOD/go.mod" github.com/spiffe/spire "$SPIRE_VERSION"
step spire "SPIRE $SPIRE_VERSION (spire-server, spire-agent, oidc-discovery-provider)" \
  "$(hash_of "$SPIRE_MOD/go.mod" "$SPIRE_MOD/go.sum" -- "$SPIRE_LDFLAGS")" build_spire \
  "$CACHE/bin/spire-server" "$CACHE/bin/spire-agent" "$CACHE/bin/oidc-discovery-provider"

HELM_MOD=$ROOT/peers/go/helm
# As Helm's release builds do: its version, and the Kubernetes version it assumes without a
# cluster (1.<client-go minor>; without it `helm template` assumes v1.20 and refuses charts
# that ask for more).
K8S_MINOR=$(sed -n 's|^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$HELM_MOD/go.mod")
[ -n "$K8S_MINOR" ] || die "$HELM_MOD/go.mod names no k8s.io/client-go version"
HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$K8S_MINOR"
done
build_helm() {
  (cd "$HELM_MOD" && CGO_ENABLED=0 GOBIN="$CACHE/bin" go install -ldflags "$HELM_LDFLAGS" helm.sh/helm/v3/cmd/helm)
}
check_pin "$HELM_MOD/go.mod" helm.sh/helm/v3 "$HELM_VERSION"
step helm "Helm $HELM_VERSION" \
  "$(hash_of "$HELM_MOD/go.mod" "$HELM_MOD/go.sum" -- "$HELM_LDFLAGS")" build_helm "$CACHE/bin/helm"

CLIENT_MOD=$ROOT/tests/interop/spiffe_check
build_client() {
  (cd "$CLIENT_MOD" && go build -o "$CACHE/bin/spiffe-check" .)
}
check_pin "$CLIENT_MOD/go.mod" github.com/spiffe/go-spiffe/v2 "$GO_SPIFFE_VERSION"
step spiffe-check "go-spiffe $GO_SPIFFE_VERSION test client (spiffe-check)" \
  "$(hash_of "$CLIENT_MOD/go.mod" "$CLIENT_MOD/go.sum" "$CLIENT_MOD/main.go" --)" build_client \
  "$CACHE/bin/spiffe-check"

CRDS_MOD=$ROOT/peers/go/crds
fetch_crds() {
  local dir
  dir=$(cd "$CRDS_MOD" && go mod download -json github.com/spiffe/spire-controller-manager |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/config/crd/bases" ] || die "spire-controller-manager module has no config/crd/bases"
  rm -rf "$CACHE/crds"
  mkdir -p "$CACHE/crds"
  cp "$dir"/config/crd/bases/*.yaml "$CACHE/crds/"
}
check_pin "$CRDS_MOD/go.mod" github.com/spiffe/spire-controller-manager "$CONTROLLER_MANAGER_VERSION"
step crds "spire-controller-manager $CONTROLLER_MANAGER_VERSION CRD schemas" \
  "$(hash_of "$CRDS_MOD/go.mod" "$CRDS_MOD/go.sum" --)" fetch_crds \
  "$CACHE/crds/spire.spiffe.io_clusterspiffeids.yaml"

KEYCLOAK_HOME=$CACHE/keycloak-$KEYCLOAK_VERSION
fetch_keycloak() {
  # The unpack goal keeps markers in its build directory and skips what it unpacked once.
  rm -rf "$KEYCLOAK_HOME" "$CACHE/maven-build"
  mvn -B -q -f "$ROOT/peers/keycloak/pom.xml" package -Dpeers.dir="$CACHE" >"$CACHE/keycloak-fetch.log" 2>&1 ||
    die "fetching Keycloak failed; see $CACHE/keycloak-fetch.log"
  [ -x "$KEYCLOAK_HOME/bin/kc.sh" ] || die "the Keycloak distribution did not unpack to $KEYCLOAK_HOME"
  # Build once for SPIFFE client authentication, so every test start is `start --optimized`.
  "$KEYCLOAK_HOME/bin/kc.sh" build "${KEYCLOAK_BUILD_OPTIONS[@]}" >"$CACHE/keycloak-build.log" 2>&1 ||
    die "kc.sh build failed; see $CACHE/keycloak-build.log"
}
step keycloak "Keycloak $KEYCLOAK_VERSION" \
  "$(hash_of "$ROOT/peers/keycloak/pom.xml" -- "${KEYCLOAK_BUILD_OPTIONS[@]}" "$(java -version 2>&1 | head -1)")" \
  fetch_keycloak "$KEYCLOAK_HOME/bin/kc.sh"

cat >"$CACHE/manifest.json.tmp" <<EOF
{
  "spire": {"version": "$SPIRE_VERSION", "server": "$CACHE/bin/spire-server", "agent": "$CACHE/bin/spire-agent",
            "oidc_discovery_provider": "$CACHE/bin/oidc-discovery-provider"},
  "helm": {"version": "$HELM_VERSION", "bin": "$CACHE/bin/helm"},
  "spiffe_check": {"go_spiffe_version": "$GO_SPIFFE_VERSION", "bin": "$CACHE/bin/spiffe-check"},
  "crds": {"spire_controller_manager_version": "$CONTROLLER_MANAGER_VERSION", "dir": "$CACHE/crds"},
  "keycloak": {"version": "$KEYCLOAK_VERSION", "home": "$KEYCLOAK_HOME"}
}
EOF
mv "$CACHE/manifest.json.tmp" "$CACHE/manifest.json"
say "all peers ready in $CACHE"
