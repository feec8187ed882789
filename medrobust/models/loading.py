"""Load a classifier from a MONAI bundle, TorchScript, a state dict + network config, ONNX or a Python entry point.

Five sources, one result (:class:`LoadedModel`: the network in eval mode, its input shape and
a probability function):

(a) a MONAI bundle directory: ``configs/inference.json`` (or ``.yaml``) is parsed with
    ``monai.bundle.ConfigParser`` and its ``network_def`` instantiated; weights come from
    ``models/model.pt`` (``torch.load(..., weights_only=True)``); the input
    ``num_channels`` / ``spatial_shape`` from ``configs/metadata.json``
    (``network_data_format.inputs.image``).
(b) a TorchScript file (``torch.jit.load``); the input size must be given.
(c) a state dict file plus a network config (JSON/YAML) whose root has a ``_target_`` (the
    network itself) or a ``network_def`` entry (optionally with ``spatial_shape`` and
    ``num_channels`` beside it).
(d) an ONNX file (``.onnx``) run by ONNX Runtime (:mod:`medrobust.models.formats`; the
    ``deploy`` extra), without gradients.
(e) a Python entry point ``package.module:factory`` returning the ``nn.Module``.

Networks with several outputs take ``output`` (an index or a key). The image -> ``[0, 1]`` mapping
and any input standardisation are the model's :class:`~medrobust.models.preprocessing.InputPreprocessing`,
declared in a bundle's metadata (``medrobust.preprocessing``) or passed in.

Example:
    >>> m = load_model("bundles/mammogram_perturbation_sensitivity")  # doctest: +SKIP
    >>> p = m.probability(torch.rand(2, m.in_channels, *m.spatial_shape))  # (2,) p(positive)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medrobust.models.preprocessing import InputPreprocessing
from medrobust.models.probability import ACTIVATIONS, check_logits, predicted_class, probability_from_logits

__all__ = [
    "LoadedModel",
    "load_model",
    "load_bundle",
    "load_torchscript",
    "load_state_dict_model",
    "from_module",
    "extract_state_dict",
    "load_weights",
    "file_sha256",
]

logger = logging.getLogger(__name__)

_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass
class LoadedModel:
    """A classifier ready for inference.

    Attributes:
        network: the ``nn.Module`` (or TorchScript module), in eval mode, parameters frozen.
        spatial_shape: input spatial shape ``(H, W[, D])`` the network expects.
        in_channels: input channels.
        source: ``"bundle"``, ``"torchscript"``, ``"state_dict"`` or ``"module"``.
        sha256: hash of the weights (and network config) files, for run manifests.
        activation: how outputs become probabilities (see :mod:`medrobust.models.probability`).
        positive_class: class index of the positive class for K >= 2 outputs.
        name: a short human-readable name (bundle folder or file name).
        metadata: the bundle's ``metadata.json`` (or ``{}``): its ``medrobust`` entry may declare a
            ``notice`` (shown at the top of reports), ``training_input_statistics`` (for the
            domain-shift check) and ``preprocessing``.
        preprocessing: image -> ``[0, 1]`` mapping and model-input standardisation
            (:class:`~medrobust.models.preprocessing.InputPreprocessing`).
    """

    network: torch.nn.Module
    spatial_shape: tuple[int, ...]
    in_channels: int
    source: str
    sha256: str
    activation: str = "auto"
    positive_class: int = 1
    name: str = ""
    metadata: dict = field(default_factory=dict)
    preprocessing: InputPreprocessing = field(default_factory=InputPreprocessing)

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_shape)

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for b in self.network.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> LoadedModel:
        self.network.to(device)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(B, K)`` for ``x: (B, in_channels, *spatial_shape)`` (differentiable)."""
        expected = (self.in_channels, *self.spatial_shape)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"model input should be (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}.")
        return check_logits(self.network(self.preprocessing.standardise(x)))

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """p(positive) ``(B,)`` for ``x: (B, C, *spatial_shape)``."""
        return self.probability_from_logits(self.logits(x))

    def probability_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return probability_from_logits(logits, activation=self.activation, positive_class=self.positive_class)

    def predicted_class(self, logits: torch.Tensor) -> torch.Tensor:
        return predicted_class(logits, activation=self.activation)

    def decision_margin(self, logits: torch.Tensor) -> torch.Tensor:
        """Signed log-odds of the positive class against its strongest competitor, ``(B,)``.

        Unlike p(positive) it does not saturate: a move from +32 to +19 shows even when p stays
        1.0 in float32. One output: the logit (``activation="none"``: ``logit(p)``); K >= 2 with
        softmax: ``z_pos - max_{j != pos} z_j``; ``sigmoid`` (multi-label): ``z_pos``; ``none``
        (outputs are probabilities): ``log p_pos - log max_{j != pos} p_j``. Positive exactly when
        the predicted class is the positive one (K >= 2) or p >= 0.5 (K = 1).
        """
        z = check_logits(logits).double()
        eps = 1e-12
        if z.shape[1] == 1:
            if self.activation == "none":
                p = z[:, 0].clamp(eps, 1 - eps)
                return (p.log() - (1 - p).log()).float()
            return z[:, 0].float()
        pos = self.positive_class
        if self.activation == "sigmoid":
            return z[:, pos].float()
        others = torch.cat([z[:, :pos], z[:, pos + 1 :]], dim=1).amax(dim=1)
        if self.activation == "none":
            return (z[:, pos].clamp_min(eps).log() - others.clamp_min(eps).log()).float()
        return (z[:, pos] - others).float()


def file_sha256(*paths: Path) -> str:
    """SHA-256 over the bytes of ``paths`` (in order), read in chunks."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """Temporarily import from ``folder`` (bundle ``scripts.`` packages, user network modules)."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` mapping inside a loaded checkpoint.

    Accepts a plain state dict or a checkpoint dict holding one under ``state_dict``, ``model``,
    ``network``, ``net`` or ``model_state_dict`` (ignite / Lightning style); strips a
    ``module.`` prefix left by ``DataParallel``.
    """
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = dict(obj)
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model", "network", "net", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                return extract_state_dict(obj[key], path)
        keys = list(obj)[:8]
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor) or a checkpoint holding one; found keys {keys}.")
    else:
        raise ValueError(f"{path}: expected a state dict (a mapping), got {type(obj).__name__}.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_weights(network: torch.nn.Module, weights: str | Path, *, submodule: str | None = None) -> None:
    """Load a state dict file (or a checkpoint holding one) into ``network``, strictly.

    ``torch.load(..., weights_only=True)``; a ``module.`` prefix is stripped.

    Args:
        network: the module to load into.
        weights: path of the state dict or checkpoint.
        submodule: when the file holds a wrapping module (e.g. the registration bundle's
            ``SegmentThenRegister``, whose registration network is ``registration``), load only the
            keys under ``<submodule>.`` with that prefix removed. A file with no key under it is
            loaded as it is, so one setting serves both kinds of checkpoint.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable with ``weights_only=True``, or keys/shapes not matching the network.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} not found.")
    try:
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # a TorchScript archive or a pickled module ends up here
        raise ValueError(f"{weights}: cannot be read as a state dict with weights_only=True ({e}).") from e
    sd = extract_state_dict(obj, weights)
    if submodule:
        head = submodule.rstrip(".") + "."
        if any(k.startswith(head) for k in sd):
            sd = {k[len(head):]: v for k, v in sd.items() if k.startswith(head)}
    try:
        result = network.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        raise ValueError(f"{weights}: weights do not match the network: {str(e).splitlines()[-1].strip()}") from e
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights}: weights do not match the network: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )


def _infer_in_channels(network: torch.nn.Module) -> int | None:
    """Input channels from the first convolution-like weight ``(out, in, *k)``, if any."""
    for p in network.parameters():
        if p.ndim >= 3:
            return int(p.shape[1])
    return None


def _finish(
    network: torch.nn.Module,
    spatial_shape: Sequence[int],
    in_channels: int | None,
    source: str,
    sha256: str,
    name: str,
    *,
    device: torch.device | str,
    activation: str,
    positive_class: int,
    metadata: Mapping | None = None,
) -> LoadedModel:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation should be one of {ACTIVATIONS}, got {activation!r}.")
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"input spatial shape should be 2 or 3 positive sizes, got {tuple(spatial_shape)}.")
    if in_channels is None:
        in_channels = _infer_in_channels(network)
        if in_channels is None:
            logger.warning("could not infer the input channels of %s; assuming 1", name)
            in_channels = 1
    network = network.to(device).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return LoadedModel(network, shape, int(in_channels), source, sha256, activation, int(positive_class), name, dict(metadata or {}))


def _parse_input_size(input_size: Sequence[int] | None) -> tuple[int, ...] | None:
    if input_size is None:
        return None
    try:
        return tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size should be 2 or 3 integers, got {input_size!r}.") from None


def load_bundle(
    bundle_dir: str | Path,
    *,
    input_size: Sequence[int] | None = None,
    in_channels: int | None = None,
    device: torch.device | str = "cpu",
    activation: str = "auto",
    positive_class: int = 1,
) -> LoadedModel:
    """Load ``network_def`` + ``models/model.pt`` from a MONAI bundle directory.

    Args:
        bundle_dir: the bundle root (holding ``configs/`` and ``models/``).
        input_size: override of ``metadata.json``'s ``spatial_shape``.
        in_channels: override of ``metadata.json``'s ``num_channels``.
        device, activation, positive_class: see :class:`LoadedModel`.

    Raises:
        FileNotFoundError: no inference config, metadata or weights.
        ValueError: no ``network_def``, unusable input shape, weights not matching.
    """
    from medrobust.models.bundle import bundle_config_files, load_bundle_network

    root = Path(bundle_dir)
    configs = root / "configs"
    try:
        cfg = bundle_config_files(root, "inference")[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"bundle {root}: no configs/inference.json (or .yaml) found.") from None
    network = load_bundle_network(root, config_files=[cfg.resolve()], weights=None)  # absolute: a relative bundle path is not re-rooted

    shape = _parse_input_size(input_size)
    meta_file = configs / "metadata.json"
    meta_channels = None
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if shape is None or in_channels is None:
        if not meta_file.is_file():
            raise FileNotFoundError(f"bundle {root}: {meta_file} not found (needed for the input shape; or give input_size).")
        try:
            image = meta["network_data_format"]["inputs"]["image"]
        except (KeyError, TypeError):
            raise ValueError(f"{meta_file}: missing network_data_format.inputs.image.") from None
        if shape is None:
            raw = image.get("spatial_shape")
            try:
                shape = tuple(int(s) for s in raw)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{meta_file}: network_data_format.inputs.image.spatial_shape should be integers, got {raw!r}; "
                    "give input_size (--input-size) instead."
                ) from None
        meta_channels = image.get("num_channels")
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"bundle {root}: weights {weights} not found.")
    load_weights(network, weights)
    channels = in_channels if in_channels is not None else meta_channels
    return _finish(
        network, shape, channels, "bundle", file_sha256(cfg, weights), root.name,
        device=device, activation=activation, positive_class=positive_class, metadata=meta,
    )


def load_torchscript(
    path: str | Path,
    *,
    input_size: Sequence[int] | None,
    in_channels: int | None = None,
    device: torch.device | str = "cpu",
    activation: str = "auto",
    positive_class: int = 1,
) -> LoadedModel:
    """Load a TorchScript file (``torch.jit.load``); ``input_size`` is required."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file {path} not found.")
    shape = _parse_input_size(input_size)
    if shape is None:
        raise ValueError(f"{path}: a TorchScript model needs its input size (input_size / --input-size H W [D]).")
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ValueError(
            f"{path} is not a TorchScript file ({type(e).__name__}); for a state dict give a network config "
            "(--network-config)."
        ) from e
    return _finish(
        network, shape, in_channels, "torchscript", file_sha256(path), path.name,
        device=device, activation=activation, positive_class=positive_class,
    )


def load_state_dict_model(
    weights: str | Path,
    network_config: str | Path,
    *,
    input_size: Sequence[int] | None = None,
    in_channels: int | None = None,
    device: torch.device | str = "cpu",
    activation: str = "auto",
    positive_class: int = 1,
) -> LoadedModel:
    """Instantiate the network described by ``network_config`` and load ``weights`` into it.

    The config (JSON/YAML, MONAI bundle syntax) is either the network itself
    (``{"_target_": "monai.networks.nets.DenseNet121", ...}``) or has a ``network_def`` entry,
    optionally with ``spatial_shape`` and ``num_channels``. Its folder is importable while
    the network is built, so ``_target_`` may name a module saved next to it.
    """
    weights, cfg = Path(weights), Path(network_config)
    if not cfg.is_file():
        raise FileNotFoundError(f"network config {cfg} not found.")
    if cfg.suffix.lower() not in _CONFIG_SUFFIXES:
        raise ValueError(f"network config {cfg} should be .json, .yaml or .yml.")
    from monai.bundle import ConfigParser

    content = ConfigParser.load_config_file(str(cfg))
    if not isinstance(content, Mapping):
        raise ValueError(f"{cfg}: expected a mapping with '_target_' or 'network_def', got {type(content).__name__}.")
    parser = ConfigParser(dict(content))
    if "_target_" in content:
        net_id = ""
    elif "network_def" in content:
        net_id = "network_def"
    else:
        raise ValueError(f"{cfg}: expected a '_target_' (the network) or a 'network_def' entry; found {sorted(content)[:10]}.")
    with _on_sys_path(cfg.resolve().parent):
        network = parser.get_parsed_content(net_id, instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"{cfg}: the network config should instantiate a torch.nn.Module, got {type(network).__name__}.")
    shape = _parse_input_size(input_size)
    if shape is None and net_id:
        shape = _parse_input_size(content.get("spatial_shape"))
    if shape is None:
        raise ValueError(f"{cfg}: no input size; give input_size (--input-size H W [D]) or 'spatial_shape' in the config.")
    if in_channels is None and net_id:
        in_channels = content.get("num_channels")
    load_weights(network, weights)
    return _finish(
        network, shape, in_channels, "state_dict", file_sha256(cfg, weights), weights.name,
        device=device, activation=activation, positive_class=positive_class,
    )


def from_module(
    network: torch.nn.Module,
    *,
    input_size: Sequence[int],
    in_channels: int | None = None,
    device: torch.device | str = "cpu",
    activation: str = "auto",
    positive_class: int = 1,
    name: str = "module",
) -> LoadedModel:
    """Wrap an in-memory network (Python API); its hash covers the parameter values."""
    h = hashlib.sha256()
    for k, v in network.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return _finish(
        network, _parse_input_size(input_size) or (), in_channels, "module", h.hexdigest(), name,
        device=device, activation=activation, positive_class=positive_class,
    )


def load_model(
    source: str | Path | torch.nn.Module | LoadedModel,
    *,
    network_config: str | Path | None = None,
    input_size: Sequence[int] | None = None,
    in_channels: int | None = None,
    device: torch.device | str = "cpu",
    activation: str = "auto",
    positive_class: int = 1,
    output: int | str | None = None,
    preprocessing: InputPreprocessing | Mapping | None = None,
) -> LoadedModel:
    """Load a classifier from any supported source (see the module docstring).

    Args:
        source: bundle directory, TorchScript file, state dict file (with ``network_config``),
            ONNX file (``.onnx``, needs onnxruntime), Python entry point ``package.module:factory``,
            an ``nn.Module`` (with ``input_size``) or an already loaded model (moved to ``device``).
        network_config: JSON/YAML network config for a state dict file.
        input_size: input spatial size; required for TorchScript / entry points / dynamic ONNX,
            overrides the bundle's.
        in_channels: input channels; inferred from the first convolution when not given.
        device: where the network runs.
        activation: one of :data:`~medrobust.models.probability.ACTIVATIONS`.
        positive_class: positive class index for K >= 2 outputs.
        output: for networks with several outputs (tuple / list / dict, or ONNX outputs), the index
            or key of the classifier's logits.
        preprocessing: :class:`~medrobust.models.preprocessing.InputPreprocessing` or a mapping of
            its fields; overrides what a bundle's ``metadata.json`` declares
            (``medrobust.preprocessing``); default per-image min-max.

    Raises:
        FileNotFoundError: ``source`` (or a file it needs) does not exist.
        ValueError: the source cannot be used, with the reason.
    """
    model = _load_any(source, network_config=network_config, input_size=input_size, in_channels=in_channels,
                      device=device, activation=activation, positive_class=positive_class, output=output)
    declared = model.metadata.get("medrobust", {}).get("preprocessing") if isinstance(model.metadata, Mapping) else None
    override = preprocessing.as_dict() if isinstance(preprocessing, InputPreprocessing) else preprocessing
    model.preprocessing = InputPreprocessing.from_sources(declared, override)
    return model


def _load_any(source, *, network_config, input_size, in_channels, device, activation, positive_class, output) -> LoadedModel:
    kwargs = dict(in_channels=in_channels, device=device, activation=activation, positive_class=positive_class)
    if isinstance(source, LoadedModel):
        return source.to(device)
    if isinstance(source, torch.nn.Module):
        if input_size is None:
            raise ValueError("an in-memory network needs input_size.")
        return from_module(_select(source, output), input_size=input_size, **kwargs)
    from medrobust.models.formats import is_entry_point, load_entry_point, load_onnx

    if isinstance(source, str) and is_entry_point(source):
        if input_size is None:
            raise ValueError(f"model entry point {source!r} needs its input size (input_size / --input-size H W [D]).")
        loaded = from_module(_select(load_entry_point(source), output), input_size=input_size, name=source, **kwargs)
        loaded.source = "entry_point"
        return loaded
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"model {path} not found (expected a bundle directory, a TorchScript / state dict / ONNX file, "
            "or a Python entry point package.module:factory)."
        )
    if path.is_dir():
        if network_config is not None:
            raise ValueError(f"model {path} is a bundle directory; network_config is only for state dict files.")
        loaded = load_bundle(path, input_size=input_size, **kwargs)
    elif path.suffix.lower() == ".onnx":
        net = load_onnx(path, output=output)
        channels, spatial = net.static_input()
        shape = _parse_input_size(input_size) or spatial
        if shape is None:
            raise ValueError(f"{path}: the ONNX input has dynamic spatial size; give input_size (--input-size H W [D]).")
        return _finish(net, shape, in_channels or channels, "onnx", file_sha256(path), path.name,
                       device=device, activation=activation, positive_class=positive_class)
    elif network_config is not None:
        loaded = load_state_dict_model(path, network_config, input_size=input_size, **kwargs)
    else:
        loaded = load_torchscript(path, input_size=input_size, **kwargs)
    if output is not None:
        loaded.network = _select(loaded.network, output)
    return loaded


def _select(network: torch.nn.Module, output: int | str | None) -> torch.nn.Module:
    from medrobust.models.formats import OutputSelector

    return network if output is None else OutputSelector(network, output).eval()
