"""Would numba pay for the simulated drives? Their per-SYNC motion arithmetic, three ways.

    pip install numba && python benchmarks/try_numba.py

One drive's motion step (the arithmetic of ``SimDrive._move``) in pure Python and as a numba
``@njit(cache=True)`` function called from Python; six drives as a pure-Python loop and as one
``@njit`` call on NumPy arrays, with the values read back as Python numbers (the TPDO payload and
the rest of the drive model need them). Also: numba's import and first-call (compile or cache
load) time, which every worker process pays. numba is not a dependency of whih: this only
measured whether it should become one (see docs/DESIGN.md, "As built").
"""
# ruff: noqa

import math
import time

t0 = time.perf_counter()
try:
    import numpy as np
    from numba import njit
except ImportError:
    raise SystemExit("numba is not installed: pip install numba") from None
t_imp = time.perf_counter() - t0

_sqrt = math.sqrt


def move_py(v, target_mm, pos, target_prev, a, v_max, dt):
    err = target_mm - pos
    v_ff = (target_mm - target_prev) / dt
    v_brake = a * dt * (_sqrt(0.25 + 2.0 * abs(err) / (a * dt * dt)) - 0.5)
    x = err / dt - v_ff
    x = x if x < v_brake else v_brake
    v_rel = x if x > -v_brake else -v_brake
    x = v_ff + v_rel
    x = x if x < v_max else v_max
    v_des = x if x > -v_max else -v_max
    adt = a * dt
    x = v + adt
    x = v_des if v_des < x else x
    lo_v = v - adt
    return x if x > lo_v else lo_v


t1 = time.perf_counter()
move_nb = njit(cache=True)(move_py)
move_nb(0.0, 1.0, 0.0, 0.0, 100.0, 10.0, 0.0025)
t_jit1 = time.perf_counter() - t1


@njit(cache=True)
def move_batch(v, target, pos, prev, a, vmax, dt, out):
    for i in range(v.shape[0]):
        tm = target[i]
        err = tm - pos[i]
        v_ff = (tm - prev[i]) / dt
        prev[i] = tm
        vb = a[i] * dt * (math.sqrt(0.25 + 2.0 * abs(err) / (a[i] * dt * dt)) - 0.5)
        x = err / dt - v_ff
        x = min(x, vb)
        x = max(x, -vb)
        x = v_ff + x
        x = min(x, vmax[i])
        vd = max(x, -vmax[i])
        adt = a[i] * dt
        x = min(vd, v[i] + adt)
        x = max(x, v[i] - adt)
        v[i] = x
        pos[i] += x * dt
        out[i] = round(pos[i] * 8192.0)


t2 = time.perf_counter()
n = 6
v = np.zeros(n)
tg = np.ones(n)
pos = np.zeros(n)
prev = np.zeros(n)
a = np.full(n, 100.0)
vm = np.full(n, 10.0)
out = np.zeros(n, np.int64)
move_batch(v, tg, pos, prev, a, vm, 0.0025, out)
t_jit2 = time.perf_counter() - t2

N = 200_000


def bench(f):
    t = time.perf_counter()
    for _ in range(N):
        f(0.5, 1.0, 0.2, 0.9, 100.0, 10.0, 0.0025)
    return (time.perf_counter() - t) / N * 1e6


py = min(bench(move_py) for _ in range(3))
nb = min(bench(move_nb) for _ in range(3))


def bench_batch():
    t = time.perf_counter()
    for _ in range(N // 6):
        move_batch(v, tg, pos, prev, a, vm, 0.0025, out)
        # the Python side then needs each drive's values back (statusword, TPDO payload)
        for i in range(6):
            p = int(out[i])
            w = float(v[i])
    return (time.perf_counter() - t) / (N // 6) * 1e6


def bench_pybatch():
    vs = [0.0] * 6
    ps = [0.0] * 6
    t = time.perf_counter()
    for _ in range(N // 6):
        for i in range(6):
            w = move_py(vs[i], 1.0, ps[i], 0.9, 100.0, 10.0, 0.0025)
            vs[i] = w
            ps[i] += w * 0.0025
            p = round(ps[i] * 8192.0)
    return (time.perf_counter() - t) / (N // 6) * 1e6


bb = min(bench_batch() for _ in range(3))
pb = min(bench_pybatch() for _ in range(3))
print(
    f"import numba+numpy {t_imp * 1e3:.0f} ms; first call (JIT or cache load) scalar {t_jit1 * 1e3:.0f} ms, batch {t_jit2 * 1e3:.0f} ms"
)
print(f"one drive's motion step: pure Python {py:.2f} us, @njit scalar call {nb:.2f} us")
print(f"six drives: pure Python loop {pb:.2f} us, one @njit batch call on arrays + reading back {bb:.2f} us")
