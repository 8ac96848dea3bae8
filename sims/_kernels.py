"""Numerical kernels of the simulated fish: arrays in, arrays updated in place.

The public class (``sims.fish.Fish``) validates everything and owns the state; these
functions only compute. Randomness arrives as pre-drawn buffers (uniform / standard
normal) filled by the caller's explicit ``numpy.random.Generator``, so a run repeats bit
for bit and the kernels allocate nothing.

Each neuron kernel exists twice: a numba one (``@njit(cache=True)``, the default) and a
vectorised numpy one with the same arithmetic (``backend="numpy"``, which also runs
``behaviour_step`` as plain Python through ``.py_func``): the benchmark's baseline and the
tests' cross-check.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Behaviour state vector layout (float64, see ``behaviour_step``).
(B_M_L, B_M_R, B_AROUSAL, B_IN_BOUT, B_BOUT_T, B_BOUT_DUR, B_VIGOUR, B_TURN, B_FREQ,
 B_REFRACT) = range(10)
N_BSTATE = 10

# Behaviour parameter vector layout (float64).
(P_TAU_M, P_SIGMA_M, P_H_SPONT, P_H_GAIN, P_H_THRESH, P_TAU_AROUSAL, P_DUR_MIN, P_DUR_SPAN,
 P_FREQ_MIN, P_FREQ_SPAN, P_VIGOUR, P_TURN_GAIN, P_REFR_MIN, P_REFR_SPAN, P_TAU_TURN,
 P_WAVELENGTH) = range(16)
N_BPARAM = 16

# Per-volume behaviour latents written by ``behaviour_step`` (means over the volume).
LAT_M_L, LAT_M_R, LAT_BOUT_L, LAT_BOUT_R = range(4)
N_BLAT = 4

# Random draws per camera frame consumed by ``behaviour_step``.
BEH_NORMALS = 3
BEH_UNIFORMS = 4


@njit(cache=True)
def behaviour_step(state, params, drive_l, drive_r, dt_c, n_cam, z, u, tail, bout, lat):
    """Advance the motor integrators, bout generator and tail over ``n_cam`` camera frames.

    Parameters
    ----------
    state : (10,) float64, updated in place (layout ``B_*``).
    params : (16,) float64 (layout ``P_*``), rates in Hz, times in s, angles in rad.
    drive_l, drive_r : float, visual drive of the left/right motor integrators this volume.
    dt_c : float, camera frame interval, s.
    n_cam : int, camera frames in this volume.
    z : (>= n_cam*3,) float standard normals; u : (>= n_cam*4,) float uniforms in [0, 1).
    tail : (>= n_cam, S) float32 out, segment angles (rad, + = left, head to tip).
    bout : (>= n_cam,) bool out, camera frame inside a bout.
    lat : (4,) float64 out, volume means of m_L, m_R and vigour-weighted bout activity L/R.
    """
    n_seg = tail.shape[1]
    a_m = math.exp(-dt_c / params[P_TAU_M])
    s_m = params[P_SIGMA_M] * math.sqrt(1.0 - a_m * a_m)  # OU, stationary sd = sigma_m
    a_ar = math.exp(-dt_c / params[P_TAU_AROUSAL])
    for k in range(N_BLAT):
        lat[k] = 0.0
    for j in range(n_cam):
        m_l = a_m * state[B_M_L] + (1.0 - a_m) * drive_l + s_m * z[3 * j]
        m_r = a_m * state[B_M_R] + (1.0 - a_m) * drive_r + s_m * z[3 * j + 1]
        state[B_M_L] = m_l
        state[B_M_R] = m_r
        state[B_AROUSAL] *= a_ar
        if state[B_IN_BOUT] == 0.0:
            state[B_REFRACT] -= dt_c
            x = m_l + m_r - params[P_H_THRESH]
            hazard = params[P_H_SPONT] + state[B_AROUSAL]
            if x > 0.0:
                hazard += params[P_H_GAIN] * x * x
            if state[B_REFRACT] <= 0.0 and u[4 * j] < hazard * dt_c:
                # Bout onset: vigour grows with total drive, turn follows the L-R imbalance.
                state[B_IN_BOUT] = 1.0
                state[B_BOUT_T] = 0.0
                state[B_BOUT_DUR] = params[P_DUR_MIN] + params[P_DUR_SPAN] * u[4 * j + 1]
                state[B_FREQ] = params[P_FREQ_MIN] + params[P_FREQ_SPAN] * u[4 * j + 2]
                drive = max(m_l + m_r, 0.0)
                vig = params[P_VIGOUR] * (0.6 + 0.4 * drive) * (0.8 + 0.4 * u[4 * j + 3])
                state[B_VIGOUR] = min(max(vig, 0.2), 1.6)
                state[B_TURN] = math.tanh(params[P_TURN_GAIN] * (m_l - m_r) + 0.5 * z[3 * j + 2])
        if state[B_IN_BOUT] != 0.0:
            t = state[B_BOUT_T]
            vig = state[B_VIGOUR]
            env = math.sin(math.pi * t / state[B_BOUT_DUR])
            bias = state[B_TURN] * vig * math.exp(-t / params[P_TAU_TURN])
            ph = 2.0 * math.pi * state[B_FREQ] * t
            k_wave = 2.0 * math.pi * params[P_WAVELENGTH]
            for s in range(n_seg):
                pos = (s + 1.0) / n_seg
                # Travelling wave, amplitude growing towards the tip, plus the turn bend.
                wave = vig * env * pos * math.sqrt(pos) * math.sin(ph - k_wave * pos)
                tail[j, s] = wave + bias * pos
            bout[j] = True
            lat[LAT_BOUT_L] += vig * 0.5 * (1.0 + state[B_TURN])
            lat[LAT_BOUT_R] += vig * 0.5 * (1.0 - state[B_TURN])
            state[B_BOUT_T] = t + dt_c
            if state[B_BOUT_T] >= state[B_BOUT_DUR]:
                state[B_IN_BOUT] = 0.0
                state[B_REFRACT] = params[P_REFR_MIN] + params[P_REFR_SPAN] * u[4 * j + 1]
        else:
            for s in range(n_seg):
                tail[j, s] = 0.0
            bout[j] = False
        lat[LAT_M_L] += m_l
        lat[LAT_M_R] += m_r
    if n_cam > 0:
        for k in range(N_BLAT):
            lat[k] /= n_cam


@njit(cache=True)
def neuron_step(lat, src, gain, thresh, base, forced, log_gain, c_rise, c_decay, inv_bright,
                u, z_noise, z_drift, dt, a_rise, a_decay, amp, k_sat, drift_a, drift_s,
                global_gain, out):
    """One imaging volume for every neuron: rate -> spikes -> GCaMP -> drifting, noisy dF/F.

    Parameters
    ----------
    lat : (L,) float64 latent drives this volume (stimulus one-hots, motor, bouts).
    src : (N,) int16 latent index each neuron follows, -1 for none.
    gain : (N,) float32 Hz; thresh : (N,) float32; base : (N,) float32 spontaneous rate, Hz.
    forced : (N,) float32 extra spikes this volume (photostimulation).
    log_gain, c_rise, c_decay : (N,) float32 state, updated in place.
    inv_bright : (N,) float32 1 / baseline photons per volume (shot-noise variance scale).
    u : (N,) uniforms (Poisson draws); z_noise, z_drift : (N,) standard normals.
    dt : volume interval, s; a_rise, a_decay : indicator rise/decay factors per volume.
    amp : dF/F per spike at the kernel peak; k_sat : saturation constant (dF/F).
    drift_a, drift_s : AR(1) coefficient and innovation sd of each neuron's log gain.
    global_gain : shared slow gain (bleaching) this volume.
    out : (N,) float32 dF/F written here.
    """
    for i in range(src.shape[0]):
        rate = base[i]
        s = src[i]
        if s >= 0:
            x = lat[s] - thresh[i]
            if x > 0.0:
                rate += gain[i] * x * (1.0 + x)  # soft-quadratic: weak drive barely shows
        lam = rate * dt
        p = math.exp(-lam)
        c = p
        n = 0
        ui = u[i]
        while ui > c and n < 64:  # inverse-CDF Poisson; lam is small
            n += 1
            p *= lam / n
            c += p
        spk = n + forced[i]
        cd = a_decay * c_decay[i] + spk
        cr = a_rise * (c_rise[i] + spk)
        c_decay[i] = cd
        c_rise[i] = cr
        ca = amp * (cd - cr)
        ca = ca / (1.0 + ca / k_sat)  # indicator saturation
        lg = drift_a * log_gain[i] + drift_s * z_drift[i]
        log_gain[i] = lg
        f = global_gain * math.exp(lg) * (1.0 + ca)
        out[i] = f - 1.0 + math.sqrt(f * inv_bright[i]) * z_noise[i]


def neuron_step_numpy(lat, src, gain, thresh, base, forced, log_gain, c_rise, c_decay, inv_bright,
                      u, z_noise, z_drift, dt, a_rise, a_decay, amp, k_sat, drift_a, drift_s,
                      global_gain, out):
    """Vectorised numpy twin of :func:`neuron_step` (same arguments, same arithmetic)."""
    has = src >= 0
    x = np.where(has, lat[np.where(has, src, 0)] - thresh, 0.0)
    x = np.maximum(x, 0.0)
    rate = base + gain * x * (1.0 + x)
    lam = rate * dt
    p = np.exp(-lam)
    c = p.copy()
    n = np.zeros(lam.shape, dtype=np.float64)
    for k in range(1, 65):
        more = u > c
        if not more.any():
            break
        n += more
        p = p * (lam / k)
        c = c + p
    spk = n + forced
    cd = a_decay * c_decay.astype(np.float64) + spk
    cr = a_rise * (c_rise.astype(np.float64) + spk)
    c_decay[:] = cd
    c_rise[:] = cr
    ca = amp * (cd - cr)
    ca = ca / (1.0 + ca / k_sat)
    lg = drift_a * log_gain.astype(np.float64) + drift_s * z_drift
    log_gain[:] = lg
    f = global_gain * np.exp(lg) * (1.0 + ca)
    out[:] = f - 1.0 + np.sqrt(f * inv_bright) * z_noise


@njit(cache=True)
def postsynaptic_hits(presyn, is_target, hit):
    """hit[j] = some presynaptic partner of j is a target (the OR channel), j not a target.

    presyn : (N, k) int32; is_target : (N,) bool; hit : (N,) bool out.
    """
    n, k = presyn.shape
    for j in range(n):
        h = False
        if not is_target[j]:
            for m in range(k):
                if is_target[presyn[j, m]]:
                    h = True
                    break
        hit[j] = h


def postsynaptic_hits_numpy(presyn, is_target, hit):
    """Vectorised numpy twin of :func:`postsynaptic_hits`."""
    hit[:] = is_target[presyn].any(axis=1) & ~is_target
