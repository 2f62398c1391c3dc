"""Policies for policy smoothing: batched callables, torch modules, stable-baselines3 models.

A *policy* here is a callable mapping a batch of (noisy, possibly frame-stacked) observations,
a float32 array (K, *agent_observation_shape), to K actions. Frame stacks have the layout of
gymnasium's ``FrameStackObservation``: (k, *observation_shape), oldest frame first.

Policy specifications (``load_policy``; CLI ``--policy``):

* ``builtin:NAME`` / ``NAME`` of a hand-written controller (:data:`BUILTIN_CONTROLLERS`);
* ``bundled:NAME`` / ``NAME`` of a policy shipped in ``robustcert/rl/weights/NAME.pt``
  (``cartpole-0.2``, ``mountaincar-0.2``, ``pong-0.05``, ...: :func:`bundled_policy_names`);
* a ``.pt`` file: our checkpoint ``{'arch': NAME, 'state_dict', ...}`` with an architecture of
  :data:`POLICY_ARCHITECTURES` (``policy_mlp``: :class:`PolicyMLP`, ``atari_cnn``:
  :class:`AtariCNN`), or a plain :class:`PolicyMLP` state_dict (read with
  ``torch.load(weights_only=True)``), or TorchScript;
* a stable-baselines3 ``.zip`` (optional dependency ``stable-baselines3``). SB3 archives hold
  cloudpickled objects, so loading one runs code from the file: it needs ``trust_checkpoint``.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ModelOutputError, ShapeError
from ..files import atomic_write

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class PolicyMLP(nn.Module):
    """A small MLP policy: flatten the (stacked) observation, hidden tanh layers, action logits.

    With continuous actions the outputs are the actions themselves (``TorchPolicy(discrete=False)``).
    """

    arch = "policy_mlp"

    def __init__(self, input_dim: int, num_actions: int, hidden: tuple[int, ...] = (32,)):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.Tanh()]
            width = size
        layers.append(nn.Linear(width, num_actions))
        self.net = nn.Sequential(*layers)
        self.input_dim, self.num_actions, self.hidden = input_dim, num_actions, tuple(hidden)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.flatten(1))

    def config(self) -> dict:
        return {"input_dim": self.input_dim, "num_actions": self.num_actions, "hidden": list(self.hidden)}

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "PolicyMLP":
        """Rebuild the architecture from the Linear weight shapes (keys ``net.<i>.weight``)."""
        weights = [state_dict[k] for k in sorted(
            (k for k in state_dict if k.startswith("net.") and k.endswith(".weight")),
            key=lambda k: int(k.split(".")[1]))]
        if not weights or any(w.ndim != 2 for w in weights):
            raise CheckpointError("state_dict is not a PolicyMLP (expected keys net.<i>.weight of Linear layers)")
        model = cls(int(weights[0].shape[1]), int(weights[-1].shape[0]), tuple(int(w.shape[0]) for w in weights[:-1]))
        return _load_strict(model, state_dict)

    @classmethod
    def from_checkpoint(cls, payload: dict) -> "PolicyMLP":
        return cls.from_state_dict(payload["state_dict"])


class AtariCNN(nn.Module):
    """A small convolutional policy on stacks of 84x84 frames (Atari after AtariPreprocessing).

    The DQN torso of Mnih et al. (2015), narrowed so that a bundled policy stays ~0.3 MB:
    conv 8x8/4 -> conv 4x4/2 -> conv 3x3/1 (ReLU), a hidden ReLU layer, one logit per action.
    Input (N, k, 84, 84): a stack of k noisy frames in [0, 1] (plus noise), oldest first (a single
    frame (N, 84, 84) is read as k = 1); it is standardised as (x - input_mean) / input_std
    first: with PyTorch's default initialisation, raw [0, 1] frames whose objects differ from the
    background by ~0.1 left the network predicting the majority action for many epochs.
    """

    arch = "atari_cnn"

    def __init__(self, in_channels: int = 4, num_actions: int = 6, channels: tuple[int, int, int] = (16, 32, 16),
                 hidden: int = 64, frame_size: int = 84, input_mean: float = 0.5, input_std: float = 0.125):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 8, stride=4), nn.ReLU(), nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU(), nn.Flatten())
        side = ((frame_size - 8) // 4 + 1 - 4) // 2 + 1 - 2
        self.head = nn.Sequential(nn.Linear(c3 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))
        self.in_channels, self.num_actions, self.channels = in_channels, num_actions, tuple(channels)
        self.hidden, self.frame_size = hidden, frame_size
        self.input_mean, self.input_std = float(input_mean), float(input_std)

    def embed(self, observations: torch.Tensor) -> torch.Tensor:
        """The hidden layer's activations (what the action logits are a linear function of)."""
        if observations.ndim == 3:
            observations = observations.unsqueeze(1)
        return self.head[:-1](self.features((observations - self.input_mean) / self.input_std))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head[-1](self.embed(observations))

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "num_actions": self.num_actions, "channels": list(self.channels),
                "hidden": self.hidden, "frame_size": self.frame_size, "input_mean": self.input_mean,
                "input_std": self.input_std}

    @classmethod
    def from_checkpoint(cls, payload: dict) -> "AtariCNN":
        try:
            model = cls(int(payload["in_channels"]), int(payload["num_actions"]), tuple(payload["channels"]),
                        int(payload["hidden"]), int(payload["frame_size"]), float(payload["input_mean"]),
                        float(payload["input_std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"atari_cnn checkpoint without a valid architecture ({exc!r})") from None
        return _load_strict(model, payload["state_dict"])


POLICY_ARCHITECTURES: dict[str, type[nn.Module]] = {cls.arch: cls for cls in (PolicyMLP, AtariCNN)}


def _load_strict(model: nn.Module, state_dict: dict) -> nn.Module:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"state_dict does not fit {type(model).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return model


class TorchPolicy:
    """A torch module as a batched policy: discrete actions = argmax of its outputs (logits).

    ``discrete=False``: the module's outputs are the (continuous) actions themselves.
    The module stays available as ``.module`` for gradient attacks.
    """

    def __init__(self, module: nn.Module, discrete: bool = True, device: torch.device | str | None = None):
        from ..engine import as_device, model_device

        self.module = module.eval()
        self.discrete = discrete
        self.device = as_device(device, model_device(module))

    @torch.inference_mode()
    def __call__(self, observations: np.ndarray) -> np.ndarray:
        from ..engine import first_line, is_out_of_memory

        observations = torch.as_tensor(observations, dtype=torch.float32, device=self.device)
        try:
            outputs = self.module(observations)
        except RuntimeError as exc:  # typically another environment's observations or another frame stack
            if is_out_of_memory(exc):
                raise
            raise ShapeError(f"the policy failed on observations of shape {tuple(observations.shape)} "
                             f"(wrong environment or frame stack?): {first_line(exc)}") from exc
        if not bool(torch.isfinite(outputs).all()):
            raise ModelOutputError("the policy returned NaN or infinite outputs")
        if self.discrete:
            return outputs.argmax(dim=1).cpu().numpy()
        return outputs.cpu().numpy()


class SB3Policy:
    """A stable-baselines3 model as a batched policy (``model.predict(obs, deterministic=True)``)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(observations, deterministic=True)
        return np.asarray(actions)


# --------------------------------------------------------------------------- built-in controllers
def cartpole_pd(observations: np.ndarray) -> np.ndarray:
    """A hand-written CartPole controller: push right iff theta + 0.5 theta_dot + 0.05 x_dot > 0.

    Observations (K, 4) = (x, x_dot, theta, theta_dot), or frame stacks (K, k, 4), whose frames
    are averaged first (which also averages out some of the smoothing noise).
    """
    obs = np.asarray(observations, dtype=np.float64)
    if obs.ndim == 3:
        obs = obs.mean(axis=1)
    if obs.ndim != 2 or obs.shape[1] != 4:
        raise ModelOutputError(f"cartpole-pd expects CartPole observations (K, 4) or (K, k, 4), got {obs.shape}")
    return (obs[:, 2] + 0.5 * obs[:, 3] + 0.05 * obs[:, 1] > 0).astype(np.int64)


def constant_action(action: int = 0) -> Callable:
    """A policy that always plays ``action`` (e.g. NOOP in Atari games; a smoke-test baseline)."""

    def policy(observations: np.ndarray) -> np.ndarray:
        return np.full(len(observations), action, dtype=np.int64)

    return policy


class NoopPolicy:
    """The agent that does nothing, the floor a learned agent must beat: one fixed action, every step.

    Unbound it plays discrete action 0 (NOOP in Atari games); :meth:`for_env` binds it to an
    environment's action space: a discrete action or, for continuous actions, a constant vector
    (zeros by default: no force in Mountain Car).
    """

    def __init__(self, action=0):
        self.action = np.asarray(action)

    def for_env(self, action_space, action=None) -> "NoopPolicy":
        import gymnasium as gym

        if isinstance(action_space, gym.spaces.Discrete):
            return NoopPolicy(np.int64(int(action_space.start) if action is None else int(action)))
        shape = action_space.shape or ()
        return NoopPolicy(np.full(shape, 0.0 if action is None else action, dtype=action_space.dtype))

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.action, (len(observations), *self.action.shape)).copy()


BUILTIN_CONTROLLERS: dict[str, Callable] = {"cartpole-pd": cartpole_pd, "noop": NoopPolicy()}


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedPolicy:
    """A policy and what is known about it (``frame_stack``, environment, training sigma ...)."""

    policy: Callable
    source: str
    module: nn.Module | None = None
    sha256: str | None = None
    frame_stack: int | None = None
    metadata: dict = field(default_factory=dict)


def bundled_policy_names() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def as_policy(policy, discrete: bool = True) -> Callable:
    """Any supported policy object as a batched callable (torch modules -> :class:`TorchPolicy`)."""
    if isinstance(policy, nn.Module):
        return TorchPolicy(policy, discrete)
    if hasattr(policy, "predict") and hasattr(policy, "policy"):  # a stable-baselines3 model
        return SB3Policy(policy)
    if callable(policy):
        return policy
    raise CheckpointError(f"a policy must be callable, a torch module or an SB3 model, got {type(policy).__name__}")


def _load_sb3(path: Path, trust_checkpoint: bool, device):
    if not trust_checkpoint:
        raise CheckpointError(
            f"{path} is a stable-baselines3 archive; loading it unpickles objects (runs code from the file): "
            "pass --trust-checkpoint (trust_checkpoint=True) only if you trust its source"
        )
    try:
        import stable_baselines3 as sb3
    except ImportError:
        raise CheckpointError("loading a .zip policy needs stable-baselines3: pip install stable-baselines3") from None
    errors = []
    for name in ("PPO", "A2C", "DQN", "SAC", "TD3", "DDPG"):
        try:
            return getattr(sb3, name).load(str(path), device=str(device))
        except Exception as exc:  # the wrong algorithm class: try the next one
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise CheckpointError(f"cannot load stable-baselines3 model {path}: {'; '.join(errors)[:300]}")


def _is_sb3_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "data" in names and "policy.pth" in names


def load_policy(spec: str | Path, device: torch.device | str = "cpu", trust_checkpoint: bool = False) -> LoadedPolicy:
    """Load a policy from a specification (see the module docstring). Raises CheckpointError."""
    from ..files import file_sha256
    from ..models.checkpoint import is_torchscript, torch_load_safely

    spec = str(spec)
    name = spec.split(":", 1)[1] if spec.startswith(("builtin:", "bundled:")) else spec
    if not spec.startswith("bundled:") and name in BUILTIN_CONTROLLERS:
        return LoadedPolicy(BUILTIN_CONTROLLERS[name], f"builtin:{name}")
    if spec.startswith("builtin:"):
        raise CheckpointError(f"no built-in controller {name!r}; available: {', '.join(sorted(BUILTIN_CONTROLLERS))}")
    path = Path(spec).expanduser()
    if spec.startswith("bundled:") or (not path.exists() and name in bundled_policy_names()):
        path = WEIGHTS_DIR / f"{name}.pt"
        if not path.is_file():
            raise CheckpointError(f"no bundled policy {name!r}; available: {', '.join(bundled_policy_names()) or 'none'}")
        spec = f"bundled:{name}"
    if not path.is_file():
        raise CheckpointError(
            f"policy not found: {spec} (not a file, a bundled policy ({', '.join(bundled_policy_names())}) "
            f"or a built-in controller ({', '.join(sorted(BUILTIN_CONTROLLERS))}))"
        )
    digest = file_sha256(path)
    if _is_sb3_zip(path):
        model = _load_sb3(path, trust_checkpoint, device)
        return LoadedPolicy(SB3Policy(model), spec, getattr(model, "policy", None), digest)
    if is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch's deprecation notice is for library authors, not users
                warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu").to(device).eval()
        except Exception as exc:
            raise CheckpointError(f"cannot read TorchScript file {path}: {str(exc).splitlines()[0]}") from None
        return LoadedPolicy(TorchPolicy(module), spec, module, digest)
    payload = torch_load_safely(path, trust_checkpoint)
    metadata: dict = {}
    if isinstance(payload, nn.Module):
        module = payload
    elif isinstance(payload, dict) and "state_dict" in payload:
        architecture = POLICY_ARCHITECTURES.get(payload.get("arch", "policy_mlp"))
        if architecture is None:
            raise CheckpointError(f"policy checkpoint {path} has unknown arch {payload.get('arch')!r} "
                                  f"(expected one of {', '.join(POLICY_ARCHITECTURES)})")
        module = architecture.from_checkpoint(payload)
        metadata = {k: v for k, v in payload.items()
                    if k not in ("state_dict", "optimizer") and isinstance(v, (str, int, float, bool, list, dict))}
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        module = PolicyMLP.from_state_dict(payload)
    else:
        raise CheckpointError(f"{path} is not a policy checkpoint (no state_dict, not a PolicyMLP state_dict)")
    module = module.to(device).eval()
    frame_stack = metadata.get("frame_stack")
    return LoadedPolicy(TorchPolicy(module), spec, module, digest, int(frame_stack) if frame_stack else None, metadata)


def save_policy(module: nn.Module, path: str | Path, **metadata) -> None:
    """Save a policy of :data:`POLICY_ARCHITECTURES` as ``{'arch', 'state_dict', **config, **metadata}``
    (weights_only-safe: tensors, numbers, strings, lists and dicts only)."""
    if getattr(module, "arch", None) not in POLICY_ARCHITECTURES:
        raise CheckpointError(f"save_policy saves {', '.join(c.__name__ for c in POLICY_ARCHITECTURES.values())}, "
                              f"got {type(module).__name__}")
    payload = {"arch": module.arch, "state_dict": module.state_dict(), **module.config(), **metadata}
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def check_policy_input(loaded: LoadedPolicy, env_name: str, observation_shape: tuple, action_space,
                       frame_stack: int) -> None:
    """Refuse, in one line, a policy made for another environment (observations, actions, frame stack).

    A policy that records the per-step ``observation_shape`` it was trained on is checked against
    the environment's; a torch module's number of outputs against the number of actions; and a
    torch policy is run once on a zero input of the agent's shape, so that a mismatch fails here
    and not in the middle of a run. Raises ShapeError.
    """
    import gymnasium as gym

    expected = loaded.metadata.get("observation_shape")
    trained_on = loaded.metadata.get("env", "another environment")
    if expected is not None and tuple(expected) != tuple(observation_shape):
        raise ShapeError(f"policy {loaded.source} was trained on {trained_on} observations of shape {tuple(expected)}; "
                         f"{env_name} gives observations of shape {tuple(observation_shape)}")
    outputs = getattr(loaded.module, "num_actions", None)
    actions = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else int(np.prod(action_space.shape))
    if outputs is not None and int(outputs) != actions:
        raise ShapeError(f"policy {loaded.source} has {outputs} action outputs ({trained_on}); "
                         f"{env_name} has {actions} {'actions' if isinstance(action_space, gym.spaces.Discrete) else 'action dimensions'}")
    if isinstance(loaded.policy, TorchPolicy):
        shape = (1, frame_stack, *observation_shape) if frame_stack > 1 else (1, *observation_shape)
        loaded.policy(np.zeros(shape, np.float32))
