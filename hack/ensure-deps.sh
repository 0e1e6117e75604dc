#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, idempotently: Debian packages listed in hack/apt-packages.txt (only
# the missing ones; `apt-get update` first), and npm dependencies (`npm ci` only when package-lock.json changed since
# the last install). Go (for the control-plane build) and Node must already be on the machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_tools=(go node npm)
for t in "${need_tools[@]}"; do
  command -v "$t" >/dev/null || { echo "ensure-deps: '$t' is required but not on PATH" >&2; exit 1; }
done

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

missing=()
while read -r pkg; do
  [[ -z $pkg || $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < <(sed 's/#.*//; s/[[:space:]]//g' hack/apt-packages.txt)
if ((${#missing[@]})); then
  echo "ensure-deps: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a system redis on 6379; tests start their own on free ports and do not need it.

stamp=node_modules/.modelserve-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  # A clean clone gets `npm ci`; an existing tree is synced in place (npm ci would delete node_modules under
  # processes that use it).
  if [[ -d node_modules ]]; then npm install --no-audit --no-fund --loglevel=error; else npm ci --no-audit --no-fund --loglevel=error; fi
  echo "$want" > "$stamp"
fi
