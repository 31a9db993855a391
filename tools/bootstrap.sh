#!/usr/bin/env bash
# Prepare a fresh Debian machine (Python 3.11) for running and testing realtime-face:
# system libraries (as root, when missing) and a virtual environment in .venv with the project installed.
# Re-running is cheap: every step is skipped when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# libGL/glib: OpenCV; EGL + Mesa: headless rendering; portaudio: sounddevice; xvfb/xauth: window tests;
# chromium: the report test opens the HTML report in a headless browser.
apt_packages=(libgl1 libglib2.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libglu1-mesa libportaudio2 xvfb xauth
              python3-venv chromium fonts-dejavu-core)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages (install them as root): ${missing[*]}" >&2
  fi
fi

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null 2>&1 && { python_bin="$c"; break; }; done
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $python_bin" >&2
  "$python_bin" -m venv .venv
fi

stamp=.venv/.realtime-face-installed
want="$(sha1sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing realtime-face and its dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # torch==2.13.0 resolves to the local CPU build on these machines (see docs/DEVELOPING.md).
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
