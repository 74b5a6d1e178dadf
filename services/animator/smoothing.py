"""Kalman RTS smoothing of per-frame motion for video sources (SPEC §9), in plain numpy.

The upstream filter has identity transition and observation matrices, transition covariance
q·I, observation covariance r·I, initial state = first observation and initial covariance I.
Every covariance therefore stays a scaled identity, so the filter is one scalar random-walk
smoother per coordinate sharing one gain sequence: we run the scalar recursion for the gains
and apply it to all coordinates at once. It is non-causal (a backward pass over all frames).
"""

from __future__ import annotations

import numpy as np

DEFAULT_OBSERVATION_VARIANCE = 3e-7
DEFAULT_PROCESS_VARIANCE = 1e-5


def rts_smooth(
    observations: np.ndarray,
    observation_variance: float = DEFAULT_OBSERVATION_VARIANCE,
    process_variance: float = DEFAULT_PROCESS_VARIANCE,
) -> np.ndarray:
    """Forward Kalman filter + Rauch-Tung-Striebel backward pass.

    Args:
        observations: N×... array (N frames, any per-frame shape), e.g. N×21×3 or N×3×3.
        observation_variance: r of the observation covariance r·I.
        process_variance: q of the transition covariance q·I.

    Returns:
        float64 array of the same shape with the smoothed state means.
    """
    obs = np.asarray(observations, dtype=np.float64)
    if obs.ndim < 1 or obs.shape[0] == 0:
        raise ValueError("rts_smooth needs at least one frame")
    n = obs.shape[0]
    flat = obs.reshape(n, -1)  # N×D
    pred_mean, pred_var, filt_mean, filt_var = _forward(
        flat, observation_variance, process_variance
    )
    smooth = filt_mean.copy()  # N×D; the smoothed variance is not needed for the means
    for i in range(n - 2, -1, -1):
        gain = filt_var[i] / pred_var[i + 1]
        smooth[i] = filt_mean[i] + gain * (smooth[i + 1] - pred_mean[i + 1])
    return smooth.reshape(obs.shape)


def _forward(flat: np.ndarray, r: float, q: float):
    """Scalar-covariance Kalman filter over N×D observations (frame 0 predicts itself)."""
    n = flat.shape[0]
    pred_mean = np.empty_like(flat)
    filt_mean = np.empty_like(flat)
    pred_var = np.empty(n)
    filt_var = np.empty(n)
    mean, var = flat[0], 1.0
    for i in range(n):
        if i > 0:
            mean, var = filt_mean[i - 1], filt_var[i - 1] + q
        pred_mean[i], pred_var[i] = mean, var
        gain = var / (var + r)
        filt_mean[i] = mean + gain * (flat[i] - mean)
        filt_var[i] = (1.0 - gain) * var
    return pred_mean, pred_var, filt_mean, filt_var
