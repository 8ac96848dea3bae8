"""The live dashboard: a PyQt6 + pyqtgraph window on the loop's bus (``rig gui``).

It reads the bus and sends control; it never imports another part's internals. All bus
input runs on one thread (``gui.bus_thread``) into ring buffers (``gui.store``); the
window (``gui.app``) redraws on a screen-rate timer from the newest data, each panel at
most at its own rate. Every button goes through the supervisor's control channel, so the
loop behaves the same without a window.

What the panels read from the bus (arrays by name, ``meta`` keys in quotes):

* ``traces``: ``dff`` (N,) float32 -> activity raster, anatomy colours;
* ``tail`` and ``decoded``: ``angles`` / ``pred`` (S,) per imaging frame, matched by
  ``frame`` -> behaviour panel (tail tip = last segment angle, rad); ``sim.tail``
  (``angles`` (n_cam, S)) stands in for ``tail`` when no camera publishes it;
* ``behaviour``: camera-rate ``angles``, "cum_angle", "vigour", "bout"; ``camera.frame``
  (``image``, ``points``) and ``camera.stats`` -> camera panel;
* ``stimulus``: "name" (and "protocol") of the visual stimulus;
* ``stim.plan`` / ``stim.fired``: ``targets`` (K,) int32 -> highlighted ensemble, counts;
* ``posterior``: the planner's summary (fields in ``gui.panels.connectivity``);
* ``anatomy`` (``positions`` (N, 3) float32 um, ``regions`` (N,), "region_names") and
  ``sim.truth`` (``presyn`` (N, k) for scoring the posterior); ``salience`` (N,) float32 on
  ``salience``, ``decoded`` or ``traces``;
* ``heartbeat``: status, counters, drops, handler time and latency histograms of every node;
  from ``stats``: a decoder's "phase" (loading / fitting / ready) and "ready_in_s", a replay
  node's "position_s", the recorder's figures;
* ``frame``: ``image`` (H, W) of the microscope (meta "plane", and "pixel_um"/"origin_um" to
  lay it under the cells) -> imaging-plane panel; ``stim.fired`` with ``traces`` -> each
  stimulation's response (``gui.responses``); ``stimulus`` and bouts -> time-axis marks;
* ``log``: "level", "text" -> events, and a node's refusal of a request;

Control requests it sends (``rig.supervisor.send_control``): START, PAUSE, STOP, ARM,
DISARM, STATUS (every 2 s); RECORD {"on": bool}; PAUSE/RESUME to the planner (the node that
publishes ``stim.plan``/``posterior``) for "pause mapping"; SET {"key": "protocol"} to the
node that publishes ``stimulus``; SET {"key": "tail"} to the camera node; SET {"key":
"seek", "value": s} to a replay node. ``gui.panels.controls`` sends all of them; the loop's
state they are judged against is ``gui.state``.
"""
