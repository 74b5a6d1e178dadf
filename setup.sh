#!/usr/bin/env bash
# Dynamics set-up on a fresh Debian machine, then the main job or the tests.
#
#   bash setup.sh demo   # install everything, then render the demo photo + hero clip to out/demo.mp4
#   bash setup.sh test   # install everything, then run the whole test suite (what CI runs)
#   bash setup.sh install
#
# Installs: Debian packages (ffmpeg, prometheus, postgresql), a virtual environment at .venv with
# the project and its extras, the two wheels that must come without their dependencies, and
# seeded random LivePortrait weights at .dynamics/weights when no real weights are there.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
MODE=${1:-demo}
shift || true
PY=${PYTHON:-python3}
VENV=$ROOT/.venv

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=()
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  command -v promtool >/dev/null || missing+=(prometheus)
  # the try-it page's browser test drives Debian's chromium with Playwright (never `playwright install`)
  command -v chromium >/dev/null || missing+=(chromium fonts-liberation)
  [ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python() {
  local stamp="$VENV/.dynamics-installed-$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then
    log "virtual environment is up to date ($VENV)"
    return 0
  fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
  local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  # torch first and pinned: 2.13.0 is a CPU wheel on disk; an unpinned torch pulls a CUDA build.
  log "installing torch==2.13.0"
  $pip install torch==2.13.0
  log "installing dynamics with all extras"
  $pip install -e ".[face-detect,animator,encoder,gateway,dev]"
  # Both pin ancient or GUI dependencies; what they need is already installed above.
  log "installing insightface and facenet-pytorch without their dependencies"
  $pip install --no-deps insightface==2.1 facenet-pytorch==2.6.0
  rm -f "$VENV"/.dynamics-installed-*
  touch "$stamp"
}

ensure_weights() {
  local dir=${DYNAMICS_WEIGHTS_DIR:-$ROOT/.dynamics/weights}
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    return 0
  fi
  log "no weights at $dir: writing seeded random weights (reduced config; output will be noise)."
  log "real weights: .venv/bin/dynamics weights fetch $dir (needs internet)"
  "$VENV/bin/dynamics" weights random --config reduced --seed 0 "$dir"
}

install_debian_packages
install_python

case "$MODE" in
  install)
    ensure_weights
    log "installed. Try: .venv/bin/dynamics --help"
    ;;
  demo)
    ensure_weights
    mkdir -p out
    log "building demo media (packaged portrait + generated hero clip with audio)"
    "$VENV/bin/python" -m services.cli.demo_media out/demo-media
    log "rendering out/demo.mp4"
    "$VENV/bin/dynamics" render out/demo-media/source.png out/demo-media/hero.mp4 \
      -o out/demo.mp4 --weights "${DYNAMICS_WEIGHTS_DIR:-$ROOT/.dynamics/weights}" "$@"
    log "done: out/demo.mp4"
    ;;
  test)
    log "ruff: lint and format check"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    log "running the test suite"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash setup.sh [demo|test|install] [extra args]" >&2
    exit 2
    ;;
esac
