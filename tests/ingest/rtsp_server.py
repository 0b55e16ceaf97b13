"""A live RTSP camera for the tests: GStreamer's RTSP server, run with the system python3 (it has ``gi``; a venv does not).

usage: python3 rtsp_server.py PORT

Serves ``rtsp://127.0.0.1:PORT/cam``: a moving test pattern, 320x240 at 25 fps,
H.264 with a keyframe every second, one shared media for every client. Prints
``ready`` once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_shared(True)
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 )")
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on port {sys.argv[1]}")
print("ready", flush=True)
GLib.MainLoop().run()
