#!/usr/bin/env bash
# Builds the control-plane binaries used by the integration and end-to-end tests from their Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes), etcd, kwok and helm.
# The machine cannot download release binaries, so everything is compiled here, once, and cached outside the
# repository under a directory keyed by every pinned version. Prints the directory holding the binaries last.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}

cache=${MODELSERVE_CACHE:-$HOME/.cache/modelserve}
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin="$cache/testbin/$key"
log="$bin/build.log"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

complete() { for b in "${binaries[@]}"; do [[ -x $bin/$b ]] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

mkdir -p "$bin" "$cache/build"
# One build at a time per cache: concurrent callers (parallel test suites) wait here, then find it complete.
exec 9>"$cache/testbin/.build.lock"
flock 9
if complete; then echo "$bin"; exit 0; fi
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
say() { echo "[build-control-plane] $*" | tee -a "$log" >&2; }
say "$(date -u +%FT%TZ) building into $bin with $(go version)"

# A module whose go.mod replaces sibling modules by relative paths (k8s staging, etcd's multi-module repo) cannot
# be `go install`ed: its zip lacks those folders. Build it from a throw-away wrapper module that requires it and
# replaces each relative path with the published module at the matching version.
wrapper() { # dir module version sibling_version
  local dir=$1 mod=$2 ver=$3 sibver=$4 gomod
  mkdir -p "$dir"
  gomod=$(cd "$dir" && go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  {
    echo "module modelserve.local/build"
    echo "go 1.25"
    echo "require $mod $ver"
    grep -E '^\s*[^ ]+ => \.\.?/' "$gomod" | sed -E 's/^\s*//' | awk -v v="$sibver" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod"
}

ver_ldflags() { # k8s version stamping so /version reports the real version (helm's kubeVersion checks read it)
  local v=$1 major minor
  major=$(echo "${v#v}" | cut -d. -f1); minor=$(echo "${v#v}" | cut -d. -f2)
  local f="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    f+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

if ! [[ -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/kube-scheduler && -x $bin/kubectl ]]; then
  d="$cache/build/kubernetes-$K8S_VERSION"
  wrapper "$d" k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}"
  say "kubernetes $K8S_VERSION: $(grep -c '^replace' "$d/go.mod") staging modules replaced"
  pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  (cd "$d" && go get "${pkgs[@]/%/@$K8S_VERSION}" >>"$log" 2>&1 \
     && go build -trimpath -ldflags "$(ver_ldflags "$K8S_VERSION")" -o "$bin/" "${pkgs[@]}" 2>&1 | tee -a "$log" >&2)
fi

if ! [[ -x $bin/etcd ]]; then
  d="$cache/build/etcd-$ETCD_VERSION"
  wrapper "$d" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION"
  (cd "$d" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >>"$log" 2>&1 \
     && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3 2>&1 | tee -a "$log" >&2)
fi

[[ -x $bin/kwok ]] || GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" 2>&1 | tee -a "$log" >&2
[[ -x $bin/helm ]] || GOBIN="$bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" 2>&1 | tee -a "$log" >&2

complete || { say "build incomplete; see $log"; exit 1; }
for b in "${binaries[@]}"; do
  case $b in
    kubectl) v=$("$bin/kubectl" version --client 2>&1 | head -1) ;;
    helm) v=$("$bin/helm" version --short 2>&1) ;;
    *) v=$("$bin/$b" --version 2>&1 | head -1) ;;
  esac
  say "$b: $v"
done
echo "$bin"
