#!/usr/bin/env bash
# Builds (once) the control-plane binaries the local cluster runs, cached outside the
# repository by version: kube-apiserver, kube-controller-manager, kube-scheduler from the
# k8s.io/kubernetes Go module, helm from helm.sh/helm, and etcd 3.5 from Debian trixie's
# etcd-server package (bookworm's is too old). Go builds nothing of the product.
#
# Usage: build-binaries.sh [all|k8s|helm|etcd|prometheus]    (default: all)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ETCD_DEB_VERSION="${ETCD_DEB_VERSION:-3.5.16}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# v0.29+ embeds its web UI (ui/app/dist), which the module zip does not carry, so
# `go install` fails there ("pattern app/dist: no matching files found"); v0.28.1 serves
# its UI from the filesystem and builds from the module as it is.
ALERTMANAGER_VERSION="${ALERTMANAGER_VERSION:-v0.28.1}"
CACHE="${MODELCYCLE_CACHE:-$HOME/.cache/modelcycle}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() { [ -x "$BIN/$1-$2" ]; }

build_k8s() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="0.${K8S_VERSION#v1.}"
  if have kube-apiserver "$K8S_VERSION" && have kube-controller-manager "$K8S_VERSION" && have kube-scheduler "$K8S_VERSION"; then
    log "kubernetes $K8S_VERSION: cached"; return
  fi
  local work="$CACHE/build/k8s-$K8S_VERSION"
  mkdir -p "$work"; cd "$work"
  [ -f go.mod ] || go mod init modelcycle.local/k8sbuild >/dev/null 2>&1
  log "kubernetes $K8S_VERSION: reading its go.mod"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  # Every staging module k8s.io/kubernetes requires at v0.0.0 is replaced by its published tag.
  local args=()
  while read -r mod; do
    args+=("-replace=$mod=$mod@v$staging")
  done < <(awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print $1}' "$gomod" | sort -u)
  go mod edit "${args[@]}"
  log "kubernetes $K8S_VERSION: downloading modules (cold: several minutes)"
  go get -x "k8s.io/kubernetes@$K8S_VERSION" 2>&1 | grep -E '^# get .*\.zip$' | sed 's/^# get /  fetched /' >&2 || true
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    have "$cmd" "$K8S_VERSION" && continue
    log "kubernetes $K8S_VERSION: compiling $cmd (cold: 5-15 minutes each on 2 cores)"
    local start=$SECONDS
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN/$cmd-$K8S_VERSION.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN/$cmd-$K8S_VERSION.tmp" "$BIN/$cmd-$K8S_VERSION"
    log "kubernetes $K8S_VERSION: $cmd built in $((SECONDS - start)) s"
  done
}

build_go_tool() {  # name version package-path
  local name="$1" version="$2" pkg="$3"
  if have "$name" "$version"; then log "$name $version: cached"; return; fi
  log "$name $version: go install $pkg@$version"
  local start=$SECONDS tmp="$CACHE/build/gobin-$name-$version"
  mkdir -p "$tmp"
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  mv "$tmp/$(basename "$pkg")" "$BIN/$name-$version"
  log "$name $version: built in $((SECONDS - start)) s"
}

build_helm() { build_go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm; }

build_prometheus() {
  build_go_tool prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus
  build_go_tool alertmanager "$ALERTMANAGER_VERSION" github.com/prometheus/alertmanager/cmd/alertmanager
}

build_etcd() {
  if have etcd "$ETCD_DEB_VERSION"; then log "etcd $ETCD_DEB_VERSION: cached"; return; fi
  log "etcd $ETCD_DEB_VERSION: fetching Debian trixie's etcd-server"
  local apt="$CACHE/build/apt-trixie"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc" "$apt/debs"
  local mirror
  mirror="$(grep -rhE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 | awk '{print $2}')"
  [ -n "$mirror" ] || mirror="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | awk '{print $2}')"
  [ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
  mirror="${mirror%/}"
  echo "deb [trusted=yes] $mirror trixie main" > "$apt/etc/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/etc/sources.list" -o "Dir::Etc::SourceParts=-"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::Archives=$apt/archives"
              -o "Dir::State::status=/dev/null" -o "Acquire::Check-Valid-Until=false")
  apt-get "${opts[@]}" update -qq >&2
  (cd "$apt/debs" && apt-get "${opts[@]}" download "etcd-server=$ETCD_DEB_VERSION*" >&2)
  local x="$apt/unpacked"; rm -rf "$x"
  dpkg-deb -x "$apt"/debs/etcd-server_*.deb "$x"
  install -m 0755 "$x/usr/bin/etcd" "$BIN/etcd-$ETCD_DEB_VERSION"
  log "etcd: $("$BIN/etcd-$ETCD_DEB_VERSION" --version | head -1)"
}

what="${1:-all}"
case "$what" in
  all) build_etcd; build_helm; build_k8s; build_prometheus ;;
  k8s) build_k8s ;;
  helm) build_helm ;;
  etcd) build_etcd ;;
  prometheus) build_prometheus ;;
  *) echo "unknown target: $what" >&2; exit 2 ;;
esac
