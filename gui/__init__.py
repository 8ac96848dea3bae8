"""The live dashboard: a PyQt6 + pyqtgraph window on the loop's bus (``rig gui``).

It reads the bus and sends control; it never imports another part's internals. All bus
input runs on one thread (``gui.bus_thread``) into ring buffers (``gui.store``); the
window (``gui.app``) redraws on a screen-rate timer from the newest data. Every button goes
through the supervisor's control channel, so the loop behaves the same without a window.

What the panels read from the bus (arrays by name, ``meta`` keys in quotes):

* ``traces``: ``dff`` (N,) float32 -> activity raster, anatomy colours;
* ``tail`` and ``decoded``: ``angles`` / ``pred`` (S,) per imaging frame, same ``frame``
  index -> behaviour panel (sum over segments = tail-tip angle, rad);
* ``behaviour``: camera-rate ``angles``, "cum_angle", "vigour", "bout";
* ``stimulus``: "name" (and "protocol") of the visual stimulus;
* ``stim.plan`` / ``stim.fired``: ``targets`` (K,) int32 -> highlighted ensemble, counts;
* ``posterior``: planner summary (see ``gui.panels.connectivity``);
* ``sim.truth`` or ``anatomy``: ``positions`` (N, 3) float32 um (x rostro-caudal, y
  left-right, z dorsal), ``regions`` (N,) int, "region_names"; any other arrays there are
  kept as ground truth; ``salience`` (N,) float32 in ``salience``/``decoded``/``traces``;
* ``heartbeat``: status, counters, drops and latency histograms of every node.

Publish ``sim.truth``/``anatomy`` now and then (every few seconds), not only once: a
dashboard that attaches later must still receive it.
"""
