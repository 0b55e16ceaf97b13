#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: venv, pinned dependencies,
# the embedder weights (converted and hash-checked), and the sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vigil-lock-$(sha256sum requirements-runtime.lock requirements-dev.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-runtime.lock -r requirements-dev.lock  # the image has the first only
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.vigil-lock-* && touch "$stamp"
fi
.venv/bin/python -m embed.weights  # into models.weights_dir's default, ${XDG_CACHE_HOME:-~/.cache}/vigil/models

# A second interpreter with the OpenCV that runs the original FaceNet graph, so a test can check
# the converted weights against it (OpenCV 4.6 needs NumPy 1, the project NumPy 2).
if [ ! -x .venv-opencv/bin/python ] || ! .venv-opencv/bin/python -c "import cv2" >/dev/null 2>&1; then
  "$PYTHON" -m venv .venv-opencv
  .venv-opencv/bin/python -m pip install -q opencv-python==4.6.0.66 numpy==1.26.4
fi

# System packages some tests need, installed when missing and possible (root with apt-get); otherwise the
# function says what is missing and what it costs.
apt_install() {  # apt_install WHAT CONSEQUENCE PACKAGE...
  local what=$1 consequence=$2
  shift 2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $what (apt-get) ..."
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
      || echo "warning: could not install $what; $consequence" >&2
  else
    echo "note: $what is missing and apt-get cannot run here; $consequence" >&2
  fi
}

# The RTSP tests run GStreamer's RTSP server with the system python3 (tests/ingest/rtsp_server.py).
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1; then
  apt_install "GStreamer's RTSP server" "the RTSP tests will skip" python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad
fi

# The local stack's lockdown test lists listeners with `ss -ltnp` and looks into the servers' network
# namespaces with nsenter and ip (tests/localstack/test_stack.py): iproute2 and util-linux.
if ! command -v ss >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
  apt_install "iproute2 and util-linux" "the local stack's lockdown test will fail" iproute2 util-linux
fi

# The console's browser test drives Debian's headless Chromium through its chromedriver (tests/console/test_browser.py).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install "Chromium and its driver" "the console's browser test will skip" chromium chromium-driver
fi
.venv/bin/python -m synthetic.samples --out media/samples
