"""Sharded maps: 8 simulated CPU devices (and 2 processes) give one device's maps.

JAX fixes its device count when it starts, so each case runs in a fresh
Python process with ``--xla_force_host_platform_device_count``.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from saliency_jax import config as config_lib
from saliency_jax import devices

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    if len(sys.argv) > 1:  # process i of 2
      jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2,
                                 process_id=int(sys.argv[1]))
    from flax import nnx
    from saliency_jax import devices, models, saliency
    model = models.create("small_cnn", num_classes=2, in_channels=1, width=0.25,
                          rngs=nnx.Rngs(0))
    e = saliency.from_model(model)
    # Three states (a cascade's stages), five images: neither divides 8.
    states = jax.tree.map(lambda l: jnp.stack([l, 1.1 * l, 0.9 * l]), e.state)
    images = jax.random.uniform(jax.random.key(1), (5, 32, 32, 1))
    key = jax.random.key(3)
    out = {"devices": jax.device_count(), "diff": {}}
    # SmoothGrad: random, a sum over samples (a scan carry under 'dispatch');
    # GradCAM: gradients of inner activations (one evaluation: 'samples' is
    # the whole map on every device). Each over images, states and samples.
    for method, hp in [("smoothgrad", dict(num_samples=3)), ("gradcam", {})]:
      one = saliency.explain_states(e, states, images, None, method=method, key=key,
                                    strategy="vectorized", **hp)
      for over, strategy in (("images", "dispatch"), ("states", "vectorized"),
                             ("samples", "dispatch")):
        many = saliency.explain_states(e, states, images, None, method=method,
                                       key=key, strategy=strategy,
                                       mesh=devices.mesh(), shard_over=over, **hp)
        assert many.shape == one.shape, (many.shape, one.shape)
        out["diff"][f"{method}/{over}/{strategy}"] = float(
            jnp.abs(many - one).max() / jnp.abs(one).max())
    print("RESULT " + json.dumps(out), flush=True)
""")


def python_env(num_devices: int) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def result_of(stdout: str) -> dict:
  lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
  assert lines, stdout[-3000:]
  return json.loads(lines[-1][len("RESULT "):])


def check(result: dict, num_devices: int) -> None:
  assert result["devices"] == num_devices
  assert len(result["diff"]) == 6
  # Each device runs one device's program on its shard: equal up to the
  # float32 rounding of a differently batched convolution.
  worst = max(result["diff"].values())
  assert worst < 1e-5, result["diff"]


def test_eight_devices_give_one_devices_maps():
  done = subprocess.run([sys.executable, "-c", SCRIPT], env=python_env(8),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  check(result_of(done.stdout), 8)


def test_two_processes_give_one_devices_maps():
  address = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(i), address],
                            env=python_env(2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
    # Every process gets the whole result.
    check(result_of(stdout), 4)


def test_mesh_spans_every_device_with_auto_axes():
  mesh = devices.mesh()
  assert mesh.axis_names == (devices.AXIS,)
  assert mesh.size == len(__import__("jax").devices())
  assert devices.pad_to(5, 4).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
  assert devices.pad_to(8, 4).tolist() == list(range(8))


@pytest.mark.parametrize("keys, message", [
    (dict(batch_size="big"), "config.batch_size='big': expected a positive integer, 'auto'"),
    (dict(batch_size=0), "config.batch_size=0"),
    (dict(memory_fraction=1.5), r"config.memory_fraction=1.5: expected a number in \(0, 1\]"),
    (dict(shard_over="seeds"), "config.shard_over"),
    ({"distributed.process_id": 1}, "config.distributed.process_id is set but "
                                    "config.distributed.enabled is False"),
    ({"distributed.enabled": True, "distributed.num_processes": 2,
      "distributed.process_id": 2}, "config.distributed.process_id=2"),
])
def test_bad_scale_keys_fail_at_validation(keys, message):
  from saliency_jax import errors
  config = config_lib.load_file(os.path.join(config_lib.CONFIGS_DIR, "cascade.py"))
  for key, value in keys.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.validate(config)
